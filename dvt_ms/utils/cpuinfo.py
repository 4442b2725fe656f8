"""What ``/proc/cpuinfo`` says about this CPU (its flags, its model name), read in one place."""
from typing import FrozenSet, Optional

CPUINFO = "/proc/cpuinfo"

__all__ = ["CPUINFO", "cpuinfo_field", "cpuinfo_flags"]


def cpuinfo_field(name: str, path: str = CPUINFO) -> Optional[str]:
    """The value of the first ``name : value`` line of ``path``; ``None`` if the file or the line is missing."""
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                key, sep, value = line.partition(":")
                if sep and key.strip() == name:
                    return value.strip()
    except OSError:
        return None
    return None


def cpuinfo_flags(path: str = CPUINFO) -> Optional[FrozenSet[str]]:
    """The CPU's feature flags; ``None`` where ``path`` cannot be read or has no ``flags`` line."""
    value = cpuinfo_field("flags", path)
    return None if value is None else frozenset(value.split())
