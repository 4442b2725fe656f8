"""One configuration system for every script: a declared schema, YAML files and command-line flags.

A script declares the keys it reads as a :class:`Schema` (sections add up: ``COMMON + EVAL``), then calls
:func:`resolve_config`::

    config = resolve_config(COMMON + EVAL, argv)
    config.batch_size, config["model"], config.to_dict()

Every key of the schema is a flag (``--batch_size 32``); ``--config FILE.yaml`` reads a flat YAML mapping
of the same keys. Precedence: schema default < YAML file < command line. Everything is checked before any
work starts, and each error names the key and where its value came from (the file or the command line):

- a key in the file that no section declares is an error (with a close match suggested);
- a value of the wrong type, outside ``choices`` or refused by the option's validator is an error;
- cross-key checks of the schema run last (e.g. ``model_overrides`` against the model's accepted keys).

Config files may be shared by several scripts. A file key declared by a section in ``FILE_SECTIONS``
that the running script does not use (a training key read by the evaluation script) is accepted and
ignored; it is listed in ``config.ignored``. New sections (training) are added to ``FILE_SECTIONS``
in ``sections.py``, so every script knows every key a config file may hold.

Value types are ``int``, ``float`` (an int is accepted), ``str``, ``bool``, ``dict`` and ``list``. On
the command line, ``bool`` flags take ``true/false/yes/no/1/0`` or nothing (meaning true); ``list`` flags
take one YAML list (``--crop_scale '[0.8, 1.0]'``) or several values (``--batch_sizes 1 8``); options
declared ``nullable`` accept ``null``; a few options are positional (the images of ``infer.py``).

Mappings (``model_overrides``) are never replaced whole by a later source: one key is set with
``--model_overrides.num_classes 10`` (or ``model_overrides.num_classes: 10`` in a file), and a mapping
given as ``--model_overrides '{num_classes: 10}'`` is merged into the file's key by key.

``num_classes`` is also ``model_overrides.num_classes``: the one from the higher-precedence source wins
(a command-line ``--num_classes`` beats the file's ``model_overrides.num_classes``), both hold the result,
and two different values from the same source are an error.

A flag that no section declares is refused with a close match suggested, as is a file key.
"""
from ..precision import PRECISIONS
from .resolve import all_file_sections, build_parser, load_config_file, resolve_config, save_config
from .schema import Config, ConfigError, Option, Schema, validate_config
from .sections import (CHECKPOINT, COMMON, EVAL, FILE_SECTIONS, OUTPUT, TRAIN, WEIGHTS, model_num_exits, non_empty,
                       non_negative, plot_suffix, positive, require_model)

__all__ = [
    "ConfigError", "Option", "Schema", "Config", "COMMON", "EVAL", "TRAIN", "FILE_SECTIONS", "CHECKPOINT", "WEIGHTS",
    "OUTPUT", "PRECISIONS", "build_parser", "load_config_file", "validate_config", "resolve_config", "save_config",
    "all_file_sections", "require_model", "model_num_exits", "positive", "non_negative", "non_empty", "plot_suffix",
]
