"""Strict YAML reading for config files: duplicate keys are errors, and ``5e-4`` is a number.

PyYAML's ``safe_load`` follows YAML 1.1, which has two traps for config files:

- a key given twice in one mapping is accepted and the last value silently wins;
- a float needs a dot, so ``lr: 5e-4`` or ``lr: 1E-3`` is the *string* ``"5e-4"`` (YAML 1.2 and every
  programming language read them as numbers).

:class:`StrictLoader` is a ``yaml.SafeLoader`` (nothing but plain data is ever built) that raises
:class:`DuplicateKeyError` naming the key and both lines, and resolves exponent-only numbers as
floats. Its errors are ``yaml.YAMLError`` subclasses with a ``problem_mark``, so callers that report the
line of YAML syntax errors report these the same way.
"""
import re
from typing import Any, IO, Union

import yaml
from yaml.constructor import ConstructorError

__all__ = ["DuplicateKeyError", "StrictLoader", "load_yaml"]

#: Numbers with an exponent but no dot (``5e-4``, ``1E3``, ``-2e+5``): floats, as in YAML 1.2.
_EXPONENT_FLOAT = re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$")


class DuplicateKeyError(ConstructorError):
    """A mapping gives the same key twice; ``problem_mark`` is the second occurrence."""


class StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses duplicate keys and reads ``5e-4`` as a float."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        if isinstance(node, yaml.MappingNode):
            seen = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.get(key)
                except TypeError:  # an unhashable key: the base class reports it
                    continue
                if first is not None:
                    raise DuplicateKeyError(
                        "while constructing a mapping", node.start_mark,
                        f"duplicate key {key!r} (first given on line {first.line + 1}, again on line "
                        f"{key_node.start_mark.line + 1})", key_node.start_mark)
                seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)


StrictLoader.add_implicit_resolver("tag:yaml.org,2002:float", _EXPONENT_FLOAT, list("-+0123456789"))


def load_yaml(stream: Union[str, bytes, IO]) -> Any:
    """Parse one YAML document with :class:`StrictLoader` (raises ``yaml.YAMLError`` on any problem)."""
    return yaml.load(stream, Loader=StrictLoader)  # noqa: S506 - StrictLoader is a SafeLoader
