"""Write a file under a temporary name and rename it into place, so that no reader ever sees a partial file."""
import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator, Union


@contextlib.contextmanager
def atomic_path(path: Union[str, os.PathLike], suffix: str = ".tmp") -> Iterator[str]:
    """``with atomic_path(path) as tmp:`` write ``tmp``; it replaces ``path`` only if the block succeeds.

    The temporary file is hidden (``.NAME.XXXX<suffix>``), sits beside ``path`` (so the rename is atomic)
    and is removed if the block raises. Missing parent folders are created.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(handle)
    try:
        yield tmp_name
        os.replace(tmp_name, path)
    finally:
        if os.path.exists(tmp_name):
            os.remove(tmp_name)
