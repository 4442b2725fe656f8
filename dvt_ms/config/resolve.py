"""Config files and command-line flags merged into one checked :class:`~dvt_ms.config.schema.Config`."""
import argparse
import logging
import sys
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import yaml

from ..utils.atomic import atomic_path
from ..utils.yaml_io import load_yaml
from .schema import FALSE_WORDS, NULL_WORDS, TRUE_WORDS, Config, ConfigError, Option, PathLike, Schema, validate_config
from .scripts import SCRIPT_SECTIONS
from .sections import FILE_SECTIONS
from .sources import COMMAND_LINE, DEFAULT, rank, suggest, where

logger = logging.getLogger(__name__)

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
    if option.nullable and lowered in NULL_WORDS:
        return None
    if option.type is str:
        return text
    if option.type is bool:
        if lowered in TRUE_WORDS:
            return True
        if lowered in FALSE_WORDS:
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
        if option.nullable and texts[0].strip().lower() in NULL_WORDS:
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


def all_file_sections() -> Tuple[Schema, ...]:
    """Every section a config file may use: the core ones here plus the scripts' (dvt_ms.config.scripts)."""
    return FILE_SECTIONS + SCRIPT_SECTIONS


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
                raise ConfigError(f"--{name}: {head!r} is not a mapping key{suggest(head, mappings)}; "
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
    hints = "; ".join(f"{f.split('=')[0]}{suggest(f.lstrip('-').split('=')[0], known)}" for f in flags)
    raise ConfigError(f"unknown flag(s) {hints} (see --help)")


def _set_nested(values: Dict[str, Any], sources: Dict[str, str], head: str, key: str, value: Any,
                source: str) -> None:
    current = values.get(head)
    if not isinstance(current, Mapping):
        current = {}
    values[head] = {**current, key: value}
    sources[f"{head}.{key}"] = source
    if rank(source) >= rank(sources.get(head, DEFAULT)):
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
            logger.debug("%s: merged into %s's mapping (kept %s)", where(key, {key: source}),
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
            hints = "; ".join(f"{k!r}{suggest(k, sorted(allowed))}" for k in unknown_keys)
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

