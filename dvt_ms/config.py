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
here, so every script knows every key a config file may hold.

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
import argparse
import difflib
import logging
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import yaml

from .utils.atomic import atomic_path
from .utils.yaml_io import load_yaml

logger = logging.getLogger(__name__)

__all__ = [
    "ConfigError", "Option", "Schema", "Config", "COMMON", "EVAL", "TRAIN", "FILE_SECTIONS", "CHECKPOINT", "OUTPUT",
    "build_parser", "load_config_file", "validate_config", "resolve_config", "save_config", "all_file_sections",
    "require_model",
]

PathLike = Union[str, os.PathLike]
#: the precisions a model can run in (``precision``; dvt_ms.kernels.choice), the default first
PRECISIONS = ("fp32", "bf16", "fp16")
COMMAND_LINE = "command line"
DEFAULT = "default"
CODE = "code"
_TYPES = {int: "an integer", float: "a number", str: "a string", bool: "true or false",
          dict: "a mapping", list: "a list"}
_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}
_NULL = {"null", "none", "~"}


class ConfigError(ValueError):
    """A bad config file, flag or value; the message names the key and the file or flag at fault."""


@dataclass(frozen=True)
class Option:
    """One config key.

    ``validator(value)`` may raise ``ValueError``/``TypeError`` with the reason a value is impossible.
    ``required`` keys have no usable default; ``nullable`` keys also accept ``None`` (YAML ``null``).
    ``positional`` keys are given without a flag on the command line (a ``list`` takes all the rest).
    """

    name: str
    type: type
    default: Any = None
    help: str = ""
    choices: Optional[Tuple[Any, ...]] = None
    validator: Optional[Callable[[Any], None]] = None
    required: bool = False
    nullable: bool = False
    positional: bool = False

    def __post_init__(self) -> None:
        if self.type not in _TYPES:
            raise TypeError(f"option {self.name!r}: unsupported type {self.type!r}")
        if not self.name.isidentifier():
            raise ValueError(f"option name {self.name!r} must be a Python identifier")


Check = Callable[[Dict[str, Any], Dict[str, str]], None]


class Schema:
    """An ordered set of :class:`Option` in titled sections, plus cross-key checks.

    ``a + b`` joins two schemas (a key declared twice is an error). A check is called as
    ``check(values, sources)`` after every key was validated and raises :class:`ConfigError`.
    """

    def __init__(self, title: str, options: Iterable[Option] = (), checks: Iterable[Check] = ()):
        self._sections: List[Tuple[str, Tuple[Option, ...]]] = [(title, tuple(options))]
        self._checks: Tuple[Check, ...] = tuple(checks)
        self._options: Dict[str, Option] = {}
        self._index()

    def _index(self) -> None:
        self._options = {}
        for _, options in self._sections:
            for option in options:
                if self._options.get(option.name) is option:
                    continue  # one shared option used by two sections
                if option.name in self._options or option.name == "config":
                    raise ValueError(f"config key {option.name!r} is declared twice")
                self._options[option.name] = option

    def __add__(self, other: "Schema") -> "Schema":
        joined = Schema.__new__(Schema)
        joined._sections = self._sections + other._sections
        joined._checks = self._checks + other._checks
        joined._index()
        return joined

    def __contains__(self, name: object) -> bool:
        return name in self._options

    def __getitem__(self, name: str) -> Option:
        return self._options[name]

    def __iter__(self) -> Iterator[Option]:
        return iter(self._options.values())

    def __len__(self) -> int:
        return len(self._options)

    @property
    def names(self) -> Tuple[str, ...]:
        return tuple(self._options)

    @property
    def sections(self) -> Tuple[Tuple[str, Tuple[Option, ...]], ...]:
        return tuple(self._sections)

    @property
    def checks(self) -> Tuple[Check, ...]:
        return self._checks


class Config(Mapping):
    """Resolved, validated config values: a read-only mapping with attribute access.

    ``sources[key]`` says where each value came from (``default``, the file path or ``command line``);
    ``ignored`` holds file keys that belong to another script's section.
    """

    def __init__(self, values: Dict[str, Any], sources: Dict[str, str], schema: Schema,
                 config_file: Optional[str] = None, ignored: Optional[Dict[str, Any]] = None):
        object.__setattr__(self, "_values", dict(values))
        object.__setattr__(self, "sources", dict(sources))
        object.__setattr__(self, "schema", schema)
        object.__setattr__(self, "config_file", config_file)
        object.__setattr__(self, "ignored", dict(ignored or {}))

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __getattr__(self, key: str) -> Any:
        if key.startswith("_"):
            raise AttributeError(key)
        try:
            return self._values[key]
        except KeyError:
            raise AttributeError(f"config has no key {key!r}") from None

    def __setattr__(self, key: str, value: Any) -> None:
        raise AttributeError("Config is read-only; use replace(...) for a changed copy")

    def replace(self, **changes: Any) -> "Config":
        """A copy with ``changes`` applied and validated again (source: ``code``)."""
        values = {**self._values, **changes}
        sources = {**self.sources, **{k: CODE for k in changes}}
        return Config(validate_config(self.schema, values, sources), sources, self.schema,
                      self.config_file, self.ignored)

    def to_dict(self) -> Dict[str, Any]:
        """Plain dict of every key of the schema, in declaration order (deep copies of containers)."""
        return {name: _copy(self._values[name]) for name in self.schema.names}

    def __repr__(self) -> str:
        return f"Config({self._values!r})"


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


# --------------------------------------------------------------------------------------------------
# value checks
# --------------------------------------------------------------------------------------------------
def _where(name: str, sources: Mapping[str, str]) -> str:
    source = sources.get(name, DEFAULT)
    if source == COMMAND_LINE:
        return f"--{name}"
    if source in (DEFAULT, CODE):
        return f"{name} ({source})"
    return f"{source}: {name}"


def _coerce(option: Option, value: Any) -> Any:
    """Check ``value`` against the option's type; return it (floats from ints, containers copied)."""
    kind = option.type
    if value is None:
        if option.nullable:
            return None
        raise ValueError(f"expected {_TYPES[kind]}, got null")
    if kind is bool:
        ok = isinstance(value, bool)
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok:
            value = float(value)
            if not math.isfinite(value):
                raise ValueError(f"expected a finite number, got {value!r}")
    elif kind is str:
        ok = isinstance(value, str)
    elif kind is dict:
        ok = isinstance(value, Mapping) and all(isinstance(k, str) for k in value)
        if ok:
            value = _copy(dict(value))
    else:
        ok = isinstance(value, (list, tuple))
        if ok:
            value = _copy(list(value))
    if not ok:
        raise ValueError(f"expected {_TYPES[kind]}, got {type(value).__name__} {value!r}")
    if option.choices is not None and value not in option.choices:
        raise ValueError(f"{value!r} is not one of {', '.join(map(str, option.choices))}")
    if option.validator is not None:
        option.validator(value)
    return value


def validate_config(schema: Schema, values: Mapping[str, Any],
                    sources: Optional[Mapping[str, str]] = None) -> Dict[str, Any]:
    """Validate ``values`` (every key of ``schema``, missing ones take their defaults).

    Raises :class:`ConfigError` naming the key and its source for an unknown key, a missing required
    key, a wrong type or an impossible value. Returns the validated values.
    """
    sources = sources if isinstance(sources, dict) else dict(sources or {})  # checks may record sources
    unknown = [k for k in values if k not in schema]
    if unknown:
        raise ConfigError(f"unknown config key(s) {', '.join(map(repr, unknown))}")
    resolved: Dict[str, Any] = {}
    for option in schema:
        if option.name not in values:
            if option.required:
                raise ConfigError(f"missing required key {option.name!r}: set it in the config file "
                                  f"or pass --{option.name}")
            resolved[option.name] = _copy(option.default)
            continue
        try:
            resolved[option.name] = _coerce(option, values[option.name])
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{_where(option.name, sources)}: {exc}") from None
    for check in schema.checks:
        check(resolved, sources)
    return resolved


# --------------------------------------------------------------------------------------------------
# files and the command line
# --------------------------------------------------------------------------------------------------
def load_config_file(path: PathLike) -> Dict[str, Any]:
    """Read a flat YAML mapping; errors name the file (and the line for YAML syntax errors)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    try:
        with open(path, "r", encoding="utf-8") as handle:
            data = load_yaml(handle)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        raise ConfigError(f"{path}: not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the config file ({exc})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of key: value at the top level, "
                          f"found {type(data).__name__}")
    bad = [k for k in data if not isinstance(k, str)]
    if bad:
        raise ConfigError(f"{path}: keys must be strings, found {', '.join(map(repr, bad))}")
    return data


def _parse_text(option: Option, text: str) -> Any:
    """Turn one command-line text into a value of the option's type (checked later)."""
    lowered = text.strip().lower()
    if option.nullable and lowered in _NULL:
        return None
    if option.type is str:
        return text
    if option.type is bool:
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise ValueError(f"expected true or false, got {text!r}")
    if option.type is int:
        try:
            return int(text)
        except ValueError:
            raise ValueError(f"expected an integer, got {text!r}") from None
    if option.type is float:
        try:
            return float(text)
        except ValueError:
            raise ValueError(f"expected a number, got {text!r}") from None
    return _yaml_value(text)


def _yaml_value(text: str) -> Any:
    try:
        return load_yaml(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"cannot parse {text!r} as YAML ({getattr(exc, 'problem', exc)})") from None


def _parse_flag(option: Option, text: Union[str, List[str]]) -> Any:
    """The value of ``--name text`` (or of several texts, for a list option)."""
    if option.type is not list:
        return _parse_text(option, text)
    texts = [text] if isinstance(text, str) else list(text)
    if option.positional:
        return texts  # file paths, taken as given
    if len(texts) == 1:
        if option.nullable and texts[0].strip().lower() in _NULL:
            return None
        value = _yaml_value(texts[0])
        return value if isinstance(value, list) else [value]
    return [_yaml_value(t) for t in texts]


def _help(option: Option) -> str:
    parts = [option.help] if option.help else []
    if option.choices is not None:
        parts.append(f"one of {', '.join(map(str, option.choices))}")
    if option.type is dict:
        parts.append(f"set one key with --{option.name}.KEY VALUE; a mapping given here is merged into the "
                     "config file's, key by key")
    parts.append("required" if option.required else f"default: {option.default!r}")
    return "; ".join(parts).replace("%", "%%")


def build_parser(schema: Schema, description: Optional[str] = None,
                 parser: Optional[argparse.ArgumentParser] = None) -> argparse.ArgumentParser:
    """An argparse parser with ``--config`` and one ``--key`` flag per option, grouped by section.

    Flags default to ``argparse.SUPPRESS`` so that only the flags actually given override the file.
    Abbreviated flags are not accepted (``--crop`` is refused, not read as ``--crop_pct``).
    """
    if parser is None:
        parser = argparse.ArgumentParser(description=description, allow_abbrev=False,
                                         formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", metavar="FILE.yaml",
                        help="YAML file of key: value pairs (any key below); flags override it")
    for title, options in schema.sections:
        if not options:
            continue
        group = parser.add_argument_group(title)
        for option in options:
            if any(a.dest == option.name for a in parser._actions):
                continue  # a shared option already added by an earlier section
            kwargs = dict(default=argparse.SUPPRESS, help=_help(option))
            if option.positional:
                group.add_argument(option.name, nargs="*" if option.type is list else "?",
                                   metavar=option.name.upper(), **kwargs)
                continue
            kwargs["dest"] = option.name
            if option.type is bool:
                kwargs.update(nargs="?", const="true", metavar="BOOL")
            else:
                kwargs["metavar"] = option.name.upper()
                if option.type is list:
                    kwargs["nargs"] = "+"
            group.add_argument(f"--{option.name}", **kwargs)
    return parser


def _suggest(name: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def all_file_sections() -> Tuple[Schema, ...]:
    """Every section a config file may use: the core ones here plus the scripts' (dvt_ms.script_config)."""
    from .script_config import SCRIPT_SECTIONS

    return FILE_SECTIONS + SCRIPT_SECTIONS


_RANK = {DEFAULT: 0, COMMAND_LINE: 2, CODE: 3}


def _rank(source: str) -> int:
    """Precedence of a source: default < config file < command line < code (``Config.replace``)."""
    return _RANK.get(source, 1)


def _split_nested(schema: Schema, argv: Sequence[str]) -> Tuple[List[str], List[Tuple[str, str, str]]]:
    """Take the ``--mapping.key value`` / ``--mapping.key=value`` flags out of ``argv``."""
    rest: List[str] = []
    nested: List[Tuple[str, str, str]] = []
    mappings = sorted(o.name for o in schema if o.type is dict)
    tokens = list(argv)
    i = 0
    while i < len(tokens):
        token = tokens[i]
        name, eq, text = token[2:].partition("=")
        if token.startswith("--") and "." in name:
            head, _, key = name.partition(".")
            if head not in mappings:
                raise ConfigError(f"--{name}: {head!r} is not a mapping key{_suggest(head, mappings)}; "
                                  f"mapping keys: {', '.join(mappings) or 'none'}")
            if not key.isidentifier():
                raise ConfigError(f"--{name}: {key!r} is not a valid key of {head}")
            if not eq:
                if i + 1 >= len(tokens):
                    raise ConfigError(f"--{name}: expected a value")
                text = tokens[i + 1]
                i += 1
            nested.append((head, key, text))
        else:
            rest.append(token)
        i += 1
    return rest, nested


def _refuse_unknown(unknown: Sequence[str], schema: Schema) -> None:
    flags = [t for t in unknown if t.startswith("-")]
    if not flags:
        raise ConfigError(f"unexpected argument(s) {' '.join(unknown)}")
    known = ["config"] + [o.name for o in schema if not o.positional]
    hints = "; ".join(f"{f.split('=')[0]}{_suggest(f.lstrip('-').split('=')[0], known)}" for f in flags)
    raise ConfigError(f"unknown flag(s) {hints} (see --help)")


def _set_nested(values: Dict[str, Any], sources: Dict[str, str], head: str, key: str, value: Any,
                source: str) -> None:
    current = values.get(head)
    if not isinstance(current, Mapping):
        current = {}
    values[head] = {**current, key: value}
    sources[f"{head}.{key}"] = source
    if _rank(source) >= _rank(sources.get(head, DEFAULT)):
        sources[head] = source


def _merge(values: Dict[str, Any], sources: Dict[str, str], key: str, value: Any, source: str,
           schema: Schema) -> None:
    """Put one file or command-line value in: a mapping onto a mapping key by key, else replacing."""
    if "." in key and key.partition(".")[0] in schema and schema[key.partition(".")[0]].type is dict:
        head, _, sub = key.partition(".")
        _set_nested(values, sources, head, sub, value, source)
        return
    option = schema[key]
    if option.type is dict and isinstance(value, Mapping) and isinstance(values.get(key), Mapping):
        kept = sorted(set(values[key]) - set(value))
        if kept:
            logger.debug("%s: merged into %s's mapping (kept %s)", _where(key, {key: source}),
                         sources.get(key, DEFAULT), ", ".join(kept))
        for sub, sub_value in value.items():
            _set_nested(values, sources, key, str(sub), sub_value, source)
        return
    values[key] = value
    sources[key] = source
    if option.type is dict and isinstance(value, Mapping):
        for sub in value:
            sources[f"{key}.{sub}"] = source


def resolve_config(schema: Schema, argv: Optional[Sequence[str]] = None, description: Optional[str] = None,
                   file_sections: Optional[Sequence[Schema]] = None) -> Config:
    """Parse ``argv`` (``--config FILE``, ``--key value`` and ``--mapping.key value`` flags), merge, validate.

    ``file_sections`` (default :func:`all_file_sections`) are the sections a config file may use; keys of
    those that ``schema`` lacks are ignored. Raises :class:`ConfigError`; argparse exits on ``--help``.
    """
    parser = build_parser(schema, description)
    argv, nested = _split_nested(schema, list(sys.argv[1:] if argv is None else argv))
    namespace, unknown = parser.parse_known_args(argv)
    if unknown:
        _refuse_unknown(unknown, schema)
    args = vars(namespace)
    config_file = args.pop("config", None)
    values: Dict[str, Any] = {}
    sources: Dict[str, str] = {}
    ignored: Dict[str, Any] = {}
    if config_file is not None:
        data = load_config_file(config_file)
        allowed = set(schema.names)
        for section in (all_file_sections() if file_sections is None else file_sections):
            allowed.update(section.names)
        mappings = {o.name for o in schema if o.type is dict}
        unknown_keys = [k for k in data if k not in allowed and k.partition(".")[0] not in mappings]
        if unknown_keys:
            hints = "; ".join(f"{k!r}{_suggest(k, sorted(allowed))}" for k in unknown_keys)
            raise ConfigError(f"{config_file}: unknown key(s) {hints}")
        for key, value in data.items():
            if key in schema or key.partition(".")[0] in mappings:
                _merge(values, sources, key, value, str(config_file), schema)
            else:
                ignored[key] = value
        if ignored:
            logger.debug("%s: keys not used by this script: %s", config_file, ", ".join(ignored))
    for key, text in args.items():
        try:
            value = _parse_flag(schema[key], text)
        except ValueError as exc:
            raise ConfigError(f"--{key}: {exc}") from None
        _merge(values, sources, key, value, COMMAND_LINE, schema)
    for head, key, text in nested:
        try:
            value = _yaml_value(text)
        except ValueError as exc:
            raise ConfigError(f"--{head}.{key}: {exc}") from None
        _set_nested(values, sources, head, key, value, COMMAND_LINE)
    resolved = validate_config(schema, values, sources)
    return Config(resolved, sources, schema, None if config_file is None else str(config_file), ignored)


def save_config(config: Union[Config, Mapping[str, Any]], path: PathLike,
                header: Optional[str] = None) -> Path:
    """Write the resolved config as YAML (written to a temporary file, then renamed into place).

    The file can be read back with ``--config``. ``header`` becomes a comment at the top.
    """
    path = Path(path)
    data = config.to_dict() if isinstance(config, Config) else dict(config)
    text = yaml.safe_dump(data, sort_keys=False, default_flow_style=None, allow_unicode=True)
    if header:
        text = "".join(f"# {line}\n" for line in header.splitlines()) + text
    with atomic_path(path) as tmp_name:
        Path(tmp_name).write_text(text, encoding="utf-8")
    return path


# --------------------------------------------------------------------------------------------------
# validators
# --------------------------------------------------------------------------------------------------
def positive(value: Any) -> None:
    """Validator: strictly positive."""
    if value <= 0:
        raise ValueError(f"must be > 0, got {value!r}")


def non_negative(value: Any) -> None:
    """Validator: zero or more."""
    if value < 0:
        raise ValueError(f"must be >= 0, got {value!r}")


def non_empty(value: Any) -> None:
    """Validator: a non-empty string."""
    if value is not None and not str(value).strip():
        raise ValueError("must not be empty")


def _crop_pct(value: float) -> None:
    if not 0 < value <= 1:
        raise ValueError(f"must be in (0, 1], got {value!r}")


def _registered_model(name: str) -> None:
    from .models import list_models

    if name not in list_models():
        raise ValueError(f"unknown model {name!r}{_suggest(name, list_models())}; "
                         f"available: {', '.join(list_models())}")


def _plot_suffix(path: Optional[str]) -> None:
    if path is not None and Path(path).suffix.lower() not in (".png", ".pdf", ".svg"):
        raise ValueError(f"{path!r}: the plot must end in .png, .pdf or .svg")


def _npz_suffix(path: Optional[str]) -> None:
    if path is not None and Path(path).suffix.lower() != ".npz":
        raise ValueError(f"{path!r}: the predictions file must end in .npz")


def _check_model_overrides(values: Dict[str, Any], sources: Dict[str, str]) -> None:
    """``model_overrides`` keys must be accepted by ``model`` (checked against a checkpoint's model later
    when no model is named)."""
    from .models import model_overrides

    if values["model"] is None:
        return
    accepted = model_overrides(values["model"])
    unknown = sorted(set(values["model_overrides"]) - accepted)
    if unknown:
        hints = ", ".join(f"{k!r}{_suggest(k, sorted(accepted))}" for k in unknown)
        raise ConfigError(f"{_where('model_overrides', sources)}: unknown key(s) {hints} for model "
                          f"{values['model']!r}; accepted: {', '.join(sorted(accepted))}")
    from .models import model_spec

    try:  # the whole architecture (a user-defined cascade included) is checked before any work starts
        model_spec(values["model"], **values["model_overrides"])
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{_where('model_overrides', sources)}: {exc}") from None


def _reconcile_num_classes(values: Dict[str, Any], sources: Dict[str, str]) -> None:
    """``num_classes`` and ``model_overrides.num_classes`` are one value: the higher-precedence source
    wins and both keys get the result (``values`` is updated in place)."""
    top, overrides = values["num_classes"], values["model_overrides"]
    nested = overrides.get("num_classes")
    if top is None and nested is None:
        return
    if nested is not None and (isinstance(nested, bool) or not isinstance(nested, int) or nested < 1):
        raise ConfigError(f"{_where('model_overrides.num_classes', sources)}: must be a positive integer, "
                          f"got {nested!r}")
    if top is not None and nested is not None and top != nested:
        top_rank = _rank(sources.get("num_classes", DEFAULT))
        nested_rank = _rank(sources.get("model_overrides.num_classes", sources.get("model_overrides", DEFAULT)))
        if top_rank == nested_rank:
            raise ConfigError(f"{_where('num_classes', sources)} is {top} but "
                              f"{_where('model_overrides.num_classes', sources)} is {nested}; give the number of "
                              "classes once")
        loser, winner = ("model_overrides.num_classes", "num_classes") if top_rank > nested_rank else \
            ("num_classes", "model_overrides.num_classes")
        logger.info("%s replaces %s", _where(winner, sources), _where(loser, sources))
        if top_rank < nested_rank:
            top = nested
    value = nested if top is None else top
    if value != nested:
        sources["model_overrides.num_classes"] = sources.get("num_classes", DEFAULT)
    elif value != values["num_classes"]:
        sources["num_classes"] = sources.get("model_overrides.num_classes", sources.get("model_overrides", DEFAULT))
    values["num_classes"] = value
    values["model_overrides"] = {**overrides, "num_classes": value}


def _rgb(value: Optional[list]) -> None:
    if value is None:
        return
    numbers = _numbers(value, "mean/std values")
    if len(numbers) != 3:
        raise ValueError(f"must be three numbers (R, G, B) in [0, 1] units, got {value!r}")


def require_model(values: Dict[str, Any], sources: Dict[str, str]) -> None:
    """Cross-key check of the scripts that build a model from scratch: ``model`` must be given."""
    if values["model"] is None:
        raise ConfigError("missing required key 'model': set it in the config file or pass --model NAME "
                          "(dvt_ms.list_models())")


#: The checkpoint a script reads (eval, infer, export, visualize); one option shared by their sections.
CHECKPOINT = Option("checkpoint", str, nullable=True, validator=non_empty,
                    help="official .pth/.pth.tar or a .ckpt written by this project (which names its model, "
                         "architecture and data config)")
#: The results file of eval (.json), infer (.csv/.json) and visualize (.png).
OUTPUT = Option("output", str, nullable=True, validator=non_empty,
                help="results file: eval.py .json, infer.py .csv or .json, visualize.py .png")


# --------------------------------------------------------------------------------------------------
# the sections
# --------------------------------------------------------------------------------------------------
#: Model, data and runtime keys, shared by every script.
COMMON = Schema("model, data and runtime", [
    Option("model", str, nullable=True, validator=_registered_model,
           help="registered model name (dvt_ms.list_models()); default: the one a .ckpt names"),
    Option("model_overrides", dict, default={},
           help="architecture overrides passed to create_model, e.g. {num_classes: 100, image_size: 224}"),
    Option("num_classes", int, nullable=True, validator=positive,
           help="number of classes: the same value as model_overrides.num_classes (the higher-precedence one "
                "wins); default: the checkpoint's, else the model's 1000; must match the class folders"),
    Option("data_dir", str, nullable=True, validator=non_empty,
           help="ImageFolder root holding the split folders (DATA_DIR/val/<class>/<image>)"),
    Option("train_split", str, default="train", validator=non_empty, help="training split folder name"),
    Option("val_split", str, default="val", validator=non_empty, help="validation split folder name"),
    Option("batch_size", int, default=64, validator=positive, help="images per batch"),
    Option("num_parallel_workers", int, default=2, validator=positive, help="data pipeline workers"),
    Option("crop_pct", float, nullable=True, validator=_crop_pct,
           help="evaluation: resize the shorter side to int(image_size / crop_pct), then center-crop image_size; "
                "null: the checkpoint's data config, else the model's (0.875)"),
    Option("interpolation", str, nullable=True, choices=("bicubic", "bilinear"),
           help="resize interpolation; null: the checkpoint's data config, else the model's (bicubic)"),
    Option("mean", list, nullable=True, validator=_rgb,
           help="normalization mean (R, G, B, in [0, 1] units); null: the checkpoint's, else the model's (ImageNet)"),
    Option("std", list, nullable=True, validator=_rgb,
           help="normalization std (R, G, B); null: the checkpoint's, else the model's (ImageNet)"),
    Option("device_target", str, default="CPU", choices=("CPU", "GPU", "Ascend"),
           help="device; falls back to CPU with a warning if absent"),
    Option("ms_mode", str, default="graph", choices=("graph", "pynative"), help="MindSpore execution mode"),
    Option("cpu_kernels", str, default="auto", choices=("auto", "on", "off"),
           help="fused C++ kernels on CPU (dvt_ms.kernels): auto uses them if a C++ compiler is found"),
    Option("precision", str, default="fp32", choices=PRECISIONS,
           help="precision of eval/infer/export/benchmark: bf16 on CPU runs the matrix products in bfloat16 with "
                "float32 accumulation (AVX512-BF16 or AMX; cpu_kernels auto falls back to fp32 without them); "
                "on GPU/Ascend bf16/fp16 use MindSpore amp O1; fp16 is refused on CPU; in training, the precision "
                "of the amp levels (see amp_level)"),
    Option("seed", int, default=0, validator=non_negative, help="random seed (e.g. the fit subset)"),
    Option("verbose", bool, default=False, help="debug logging"),
], checks=[_check_model_overrides, _reconcile_num_classes])

#: Evaluation keys (scripts/eval.py).
EVAL = Schema("evaluation", [
    CHECKPOINT,
    Option("mode", str, default="anytime", choices=("anytime", "saved", "saved-thresholds", "fit"),
           help="anytime: per-exit accuracy; saved: print the results stored in the checkpoint; "
                "saved-thresholds: the stored dynamic_threshold on val; fit: thresholds fitted on a "
                "train subset"),
    Option("fit_samples", int, default=50000, validator=positive,
           help="train images used to fit the thresholds (mode fit), drawn with --seed"),
    Option("budget_steps", int, default=59, validator=positive,
           help="budget steps p = 1..N of mode fit: 59 as the official PyTorch DVT, 39 as the official MindSpore DVT"),
    OUTPUT,
    Option("plot", str, nullable=True, validator=_plot_suffix,
           help="draw accuracy vs GMACs to this .png/.pdf/.svg (needs matplotlib)"),
    Option("predictions", str, nullable=True, validator=_npz_suffix,
           help="write the val images' softmax outputs of every exit (probs [exits, images, classes]) and "
                "their targets to this .npz, in ImageFolder order without skipped files"),
])

# --------------------------------------------------------------------------------------------------
# training: validators and cross-key checks
# --------------------------------------------------------------------------------------------------
def _unit_interval(value: float) -> None:
    if not 0 <= value <= 1:
        raise ValueError(f"must be in [0, 1], got {value!r}")


def _below_one(value: float) -> None:
    if not 0 <= value < 1:
        raise ValueError(f"must be in [0, 1), got {value!r}")


def _numbers(value: Any, what: str) -> List[float]:
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value):
        raise ValueError(f"{what} must be finite numbers, got {value!r}")
    return [float(v) for v in value]


def _crop_scale(value: list) -> None:
    bounds = _numbers(value, "the crop scale bounds")
    if len(bounds) != 2 or not 0 < bounds[0] <= bounds[1] <= 1:
        raise ValueError(f"must be [min, max] with 0 < min <= max <= 1 (fractions of the image area), "
                         f"got {value!r}")


def _betas(value: list) -> None:
    if len(value) != 2 or not all(0 <= b < 1 for b in _numbers(value, "betas")):
        raise ValueError(f"must be [beta1, beta2], each in [0, 1), got {value!r}")


def _exit_weights(value: Optional[list]) -> None:
    if value is None:
        return
    weights = _numbers(value, "exit weights")
    if not weights or any(w < 0 for w in weights) or not any(weights):
        raise ValueError(f"must be a non-empty list of non-negative numbers, not all 0, got {value!r}")


def _auto_augment(value: Optional[str]) -> None:
    if value is None or value == "":
        return
    from .data.train_transforms import parse_rand_augment

    parse_rand_augment(value)


def _resume(value: Optional[str]) -> None:
    if value is None or value == "auto":
        return
    non_empty(value)
    if not Path(value).is_file():
        raise ValueError(f"{value}: no such checkpoint file (pass a file written by the training script, or "
                         "'auto' for the newest complete one in output_dir)")


def _existing_file(value: Optional[str]) -> None:
    if value is None:
        return
    non_empty(value)
    if not Path(value).is_file():
        raise ValueError(f"{value}: no such file")


def model_num_exits(model: str, overrides: Optional[Mapping[str, Any]] = None) -> int:
    """Exits of a registered model with ``overrides``, read off its cascade spec without building it."""
    from .models import model_spec

    return model_spec(model, **dict(overrides or {})).num_exits


def _check_training(values: Dict[str, Any], sources: Dict[str, str]) -> None:
    """Cross-key checks of the training section."""
    overrides = values["model_overrides"]
    from .train.precision import resolve_training_precision

    try:  # again at setup, on the device the run really gets
        resolve_training_precision(values["precision"], values["amp_level"], values["device_target"])
    except ValueError as exc:
        raise ConfigError(f"{_where('amp_level', sources)}, {_where('precision', sources)}: {exc}") from None
    if "drop_path_rate" in overrides:
        raise ConfigError(f"{_where('model_overrides', sources)}: set the training drop path rate with the "
                          "drop_path key, not model_overrides.drop_path_rate")
    if values["warmup_epochs"] > values["epochs"]:
        raise ConfigError(f"{_where('warmup_epochs', sources)} ({values['warmup_epochs']}) must not exceed "
                          f"{_where('epochs', sources)} ({values['epochs']})")
    if values["min_lr"] > values["lr"]:
        raise ConfigError(f"{_where('min_lr', sources)} ({values['min_lr']}) must not exceed "
                          f"{_where('lr', sources)} ({values['lr']})")
    weights = values["exit_weights"]
    if weights is not None:
        exits = model_num_exits(values["model"], overrides)
        if len(weights) != exits:
            raise ConfigError(f"{_where('exit_weights', sources)}: {len(weights)} weight(s) given but "
                              f"{values['model']} has {exits} exit(s)")
    if values["loss_scale"] == "static" and values["loss_scale_value"] < 1:
        raise ConfigError(f"{_where('loss_scale_value', sources)} must be >= 1 for a static loss scale, got "
                          f"{values['loss_scale_value']}")


#: Training keys. Declared here (not in the training script) so that every script accepts a config
#: file holding them; the training script resolves ``COMMON + TRAIN`` (plus ``EVAL`` if it evaluates).
#: Defaults are the official DeiT/DVT recipe (300 epochs, AdamW 5e-4 at a global batch of 512).
TRAIN = Schema("training", [
    # run
    Option("output_dir", str, default="outputs/train", validator=non_empty,
           help="checkpoints, metrics.jsonl and the resolved config go here"),
    Option("resume", str, nullable=True, validator=_resume,
           help="'auto' (newest complete checkpoint in output_dir, or a fresh start) or a checkpoint file"),
    Option("pretrained", str, nullable=True, validator=_existing_file,
           help="initial weights: official .pth/.pth.tar or a .ckpt; classifier heads whose number of "
                "classes differs are re-initialized (with a warning)"),
    Option("epochs", int, default=300, validator=positive, help="epochs of the cosine schedule"),
    Option("cooldown_epochs", int, default=10, validator=non_negative,
           help="extra epochs at min_lr after the cosine (total run: epochs + cooldown_epochs)"),
    Option("steps_per_epoch", int, nullable=True, validator=positive,
           help="cap on the optimizer steps per epoch (quick runs, benchmarks); default: the whole shard"),
    Option("keep_checkpoints", int, default=3, validator=positive,
           help="epoch checkpoints kept (the newest ones); best.ckpt is kept as well"),
    Option("save_interval_steps", int, default=0, validator=non_negative,
           help="also write a step checkpoint every N steps inside an epoch (0: only at epoch ends and "
                "when stopped by SIGTERM/SIGINT); resume continues from the newest"),
    Option("log_interval", int, default=50, validator=positive, help="progress line every N steps"),
    Option("distributed", bool, nullable=True,
           help="data parallel over msrun / rank-table workers; null: on when launched by msrun or with "
                "RANK_TABLE_FILE"),
    # optimizer and schedule
    Option("opt", str, default="adamw", choices=("adamw", "adamweightdecay", "sgd"),
           help="adamw: PyTorch AdamW semantics (bias-corrected); adamweightdecay: MindSpore's; sgd: momentum"),
    Option("lr", float, default=5e-4, validator=positive, help="peak learning rate at lr_batch_size"),
    Option("lr_batch_size", int, default=512, validator=positive,
           help="global batch size that lr is given for"),
    Option("lr_scaling", str, default="linear", choices=("linear", "none"),
           help="linear: lr * global_batch / lr_batch_size (global_batch = batch_size x workers); none: lr"),
    Option("weight_decay", float, default=0.05, validator=non_negative, help="decoupled weight decay"),
    Option("no_decay_norm_bias", bool, default=True,
           help="no weight decay for norms, biases, pos_embed and cls_token"),
    Option("opt_betas", list, default=[0.9, 0.999], validator=_betas, help="Adam betas"),
    Option("opt_eps", float, default=1e-8, validator=positive, help="Adam epsilon"),
    Option("momentum", float, default=0.9, validator=_unit_interval, help="sgd momentum"),
    Option("warmup_epochs", int, default=20, validator=non_negative, help="linear warmup epochs"),
    Option("warmup_lr", float, default=1e-6, validator=non_negative, help="learning rate at step 0"),
    Option("min_lr", float, default=1e-5, validator=non_negative, help="end of the cosine and cooldown rate"),
    Option("lr_per_step", bool, default=True,
           help="update the rate every iteration (false: once per epoch, like the official scripts)"),
    Option("clip_grad", float, nullable=True, validator=positive, help="max global gradient norm (null: off)"),
    # model, loss, EMA
    Option("weight_init", str, default="official", choices=("official", "fan_in"),
           help="official: the model's own init (dense weights truncated normal, std 0.02, as DeiT); fan_in: "
                "std 1/sqrt(fan_in), much faster to train for narrow models such as the quickstart's"),
    Option("drop_path", float, default=0.1, validator=_below_one, help="stochastic depth rate"),
    Option("exit_weights", list, nullable=True, validator=_exit_weights,
           help="DVT loss weight of each exit (null: 1 each, the official sum)"),
    Option("model_ema", bool, default=True, help="keep an exponential moving average of the weights"),
    Option("model_ema_decay", float, default=0.99996, validator=_below_one, help="EMA decay per step"),
    Option("model_ema_eval", bool, default=True, help="also validate the EMA weights each epoch"),
    Option("keep_rate_schedule", bool, default=True,
           help="EViT: keep rate 1 until shrink_start_epoch, then cosine down to the model's keep_rate"),
    Option("shrink_start_epoch", int, default=10, validator=non_negative, help="EViT: epochs at keep rate 1"),
    Option("shrink_epochs", int, default=100, validator=non_negative,
           help="EViT: epochs of the cosine from 1 down to the target keep rate"),
    Option("keep_rate_token_step", int, default=1, validator=positive,
           help="EViT: kept-token counts are rounded up to steps of this size (fewer graphs to compile)"),
    # data augmentation
    Option("crop_scale", list, default=[0.08, 1.0], validator=_crop_scale,
           help="RandomResizedCrop area range ([1, 1]: the whole image)"),
    Option("hflip", float, default=0.5, validator=_unit_interval, help="horizontal flip probability"),
    Option("auto_augment", str, nullable=True, default="rand-m9-mstd0.5-inc1", validator=_auto_augment,
           help="timm-style RandAugment policy (null: off)"),
    Option("reprob", float, default=0.25, validator=_unit_interval, help="random erasing probability"),
    Option("mixup", float, default=0.8, validator=non_negative, help="mixup alpha (0: off)"),
    Option("cutmix", float, default=1.0, validator=non_negative, help="cutmix alpha (0: off)"),
    Option("mixup_prob", float, default=1.0, validator=_unit_interval,
           help="probability of mixing a batch at all"),
    Option("mixup_switch_prob", float, default=0.5, validator=_unit_interval,
           help="probability of cutmix instead of mixup when both are on"),
    Option("label_smoothing", float, default=0.1, validator=_below_one, help="label smoothing"),
    # precision
    Option("amp_level", str, default="auto", choices=("auto", "O0", "O1", "O2", "O3"),
           help="mixed-precision training (dvt_ms.train.precision): on CPU, O1/O2 (or auto) with precision bf16 run "
                "the products in bfloat16 and auto with fp32 is O0; on GPU/Ascend auto is O2, in float16 or with "
                "precision bf16 in bfloat16; master weights stay float32"),
    Option("loss_scale", str, default="auto", choices=("auto", "dynamic", "static", "none"),
           help="auto: dynamic for float16, none for float32 and bfloat16; static uses loss_scale_value"),
    Option("loss_scale_value", float, default=65536.0, validator=positive, help="static loss scale"),
], checks=[require_model, _check_training])

#: Sections whose keys a config file may hold.
FILE_SECTIONS: Tuple[Schema, ...] = (COMMON, EVAL, TRAIN)
