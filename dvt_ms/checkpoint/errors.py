"""Checkpoint errors, and the one report of a checkpoint that does not match a network.

All errors are ``ValueError`` subclasses whose message names the file at fault.
"""
from typing import Dict, List, Mapping, Sequence, Tuple

__all__ = ["CheckpointError", "CheckpointMismatchError", "group_by_prefix", "mismatch_lines"]

#: Dotted components that name a group of keys (``optimizer.adam_m.*``, ``stages.0.*``).
GROUP_DEPTH = 2
#: Keys quoted per group, and groups listed per kind of problem.
GROUP_EXAMPLES = 3
MAX_GROUPS = 12


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded."""


class CheckpointMismatchError(CheckpointError):
    """The checkpoint's parameters do not match the network's (missing, unexpected, wrong shape)."""


def group_by_prefix(names: Sequence[str], depth: int = GROUP_DEPTH) -> List[Tuple[str, List[str]]]:
    """``(prefix, names)`` groups of ``names`` by their first ``depth`` dotted components (``a.b.*``; a name
    of ``depth`` components or fewer is its own group), the largest group first."""
    groups: Dict[str, List[str]] = {}
    for name in names:
        parts = name.split(".")
        prefix = ".".join(parts[:depth]) + (".*" if len(parts) > depth else "")
        groups.setdefault(prefix, []).append(name)
    return sorted(groups.items(), key=lambda item: (-len(item[1]), item[0]))


def _group_lines(title: str, items: Mapping[str, str]) -> List[str]:
    """``title`` and one line per prefix group of ``items`` (name -> what to print for it)."""
    groups = group_by_prefix(sorted(items))
    lines = [f"  {len(items)} {title}" + (f", in {len(groups)} group(s):" if len(groups) > 1 else ":")]
    for prefix, names in groups[:MAX_GROUPS]:
        shown = "; ".join(items[n] for n in names[:GROUP_EXAMPLES])
        shown += "; ..." if len(names) > GROUP_EXAMPLES else ""
        lines.append(f"    {shown}" if names == [prefix] else f"    {prefix} ({len(names)}): {shown}")
    rest = groups[MAX_GROUPS:]
    if rest:
        lines.append(f"    ... and {len(rest)} more group(s) of {sum(len(n) for _, n in rest)} key(s)")
    return lines


def mismatch_lines(expected: Mapping[str, Tuple[int, ...]], found: Mapping[str, Tuple[int, ...]]) -> List[str]:
    """The missing, unexpected and misshapen keys of ``found`` against ``expected`` (name -> shape), grouped
    by prefix with counts and a few examples each; ``[]`` when they match."""
    missing = {n: n for n in set(expected) - set(found)}
    unexpected = {n: n for n in set(found) - set(expected)}
    misshapen = {n: f"{n}: checkpoint {tuple(found[n])} vs model {tuple(expected[n])}"
                 for n in set(expected) & set(found) if tuple(found[n]) != tuple(expected[n])}
    lines: List[str] = []
    for title, items in (("missing key(s)", missing), ("unexpected key(s)", unexpected),
                         ("shape mismatch(es)", misshapen)):
        if items:
            lines += _group_lines(title, items)
    return lines
