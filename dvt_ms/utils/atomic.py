"""Write a file under a temporary name and rename it into place, so that no reader ever sees a partial file."""
import contextlib
import os
import stat
import tempfile
import threading
from pathlib import Path
from typing import Iterator, Union

_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process's umask (read from ``/proc`` where possible; else set and restored under a lock)."""
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def new_file_mode(path: Union[str, os.PathLike]) -> int:
    """Permission bits a rewrite of ``path`` gets: the existing file's, else ``0o666`` less the umask."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return 0o666 & ~current_umask()


@contextlib.contextmanager
def atomic_path(path: Union[str, os.PathLike], suffix: str = ".tmp") -> Iterator[str]:
    """``with atomic_path(path) as tmp:`` write ``tmp``; it replaces ``path`` only if the block succeeds.

    The temporary file is hidden (``.NAME.XXXX<suffix>``), sits beside ``path`` (so the rename is atomic)
    and is removed if the block raises. Missing parent folders are created. The file ends up with the
    mode of the file it replaces, or, for a new file, ``0o666`` less the umask, like any file the user
    creates (``mkstemp`` makes it ``0600``, and MindSpore's checkpoint writer ``0400``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(handle)
    try:
        yield tmp_name
        os.chmod(tmp_name, new_file_mode(path))
        os.replace(tmp_name, path)
    finally:
        if os.path.exists(tmp_name):
            os.remove(tmp_name)
