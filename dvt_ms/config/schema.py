"""The schema of a configuration: options, sections, the resolved config and its value checks."""
import logging
import math
import os
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Tuple, Union

from .sources import CODE, where

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

_TYPES = {int: "an integer", float: "a number", str: "a string", bool: "true or false",
          dict: "a mapping", list: "a list"}
TRUE_WORDS = {"true", "yes", "on", "1"}
FALSE_WORDS = {"false", "no", "off", "0"}
NULL_WORDS = {"null", "none", "~"}


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
            raise ConfigError(f"{where(option.name, sources)}: {exc}") from None
    for check in schema.checks:
        check(resolved, sources)
    return resolved

