"""Where a config value came from, and how an error message names it: the sources' precedence, the key as the
user wrote it (``--key``, ``file: key``), and a close known name for a misspelt one."""
import difflib
from typing import Mapping, Optional, Sequence

__all__ = ["CODE", "COMMAND_LINE", "DEFAULT", "rank", "suggest", "where"]

COMMAND_LINE = "command line"
DEFAULT = "default"
CODE = "code"
_RANK = {DEFAULT: 0, COMMAND_LINE: 2, CODE: 3}


def rank(source: str) -> int:
    """Precedence of a source: default < config file < command line < code (``Config.replace``)."""
    return _RANK.get(source, 1)


def suggest(name: str, known: Sequence[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``known`` to ``name``, else an empty string."""
    close = difflib.get_close_matches(name, known, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def where(name: str, sources: Optional[Mapping[str, str]]) -> str:
    """``name`` as its source spells it: ``--name`` (command line), ``FILE: name``, or ``name (default)``; a
    nested ``mapping.key`` without a source of its own has its mapping's."""
    sources = sources or {}
    source = sources.get(name) or sources.get(name.partition(".")[0]) or DEFAULT
    if source == COMMAND_LINE:
        return f"--{name}"
    if source in (DEFAULT, CODE):
        return f"{name} ({source})"
    return f"{source}: {name}"
