"""One training run per output folder: ``output_dir/.lock``, held with ``flock`` while the run lives.

:class:`RunLock` opens (creating if needed) ``.lock`` and takes an exclusive, non-blocking ``flock`` on
it, then writes its owner (pid, host, start time, command line) into it. The kernel drops the lock
when the process ends however it ends (``kill -9`` included), so:

- a second run into a folder whose lock is held is refused at once (:class:`OutputDirInUse`, naming
  the folder and the owner's pid and host);
- a lock file whose owner is gone (the file still names a process, but nobody holds the lock) is taken
  over, with a warning naming the dead owner.

:meth:`RunLock.release` removes the file (and the folder, if this lock created it and it is still
empty), so a run that is refused or has nothing to do leaves the folder as it found it. Removing a
lock file while another process waits to lock it would let two processes lock two different files;
:meth:`acquire` therefore checks, once it holds the lock, that the path still names the file it locked.
On file systems without ``flock`` (some network mounts) the owner's pid is checked instead (same host
only), with a warning.
"""
import errno
import json
import logging
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any, Dict, Optional, Union

logger = logging.getLogger(__name__)

__all__ = ["LOCK_NAME", "OutputDirInUse", "RunLock"]

LOCK_NAME = ".lock"
_ATTEMPTS = 5


class OutputDirInUse(ValueError):
    """Another live process holds the output folder; the message names the folder and that process."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _describe(owner: Dict[str, Any]) -> str:
    if not owner:
        return "an unknown process"
    started = owner.get("started")
    when = f", started {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(started))}" if started else ""
    return f"pid {owner.get('pid')} on {owner.get('host')}{when}"


class RunLock:
    """Exclusive lock of ``output_dir`` for one training run (see the module docstring)."""

    def __init__(self, output_dir: Union[str, os.PathLike]):
        self.output_dir = Path(output_dir)
        self.path = self.output_dir / LOCK_NAME
        self._fd: Optional[int] = None
        self._created_dir = False

    @property
    def held(self) -> bool:
        return self._fd is not None

    def _read_owner(self, fd: int) -> Dict[str, Any]:
        try:
            os.lseek(fd, 0, os.SEEK_SET)
            text = os.read(fd, 65536).decode("utf-8", "replace").strip()
            return json.loads(text) if text else {}
        except (OSError, ValueError):
            return {}

    def acquire(self) -> "RunLock":
        """Take the lock or raise :class:`OutputDirInUse`; a stale lock is taken over with a warning."""
        import fcntl

        if self.held:
            return self
        if not self.output_dir.exists():
            self.output_dir.mkdir(parents=True)
            self._created_dir = True
        for _ in range(_ATTEMPTS):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                owner = self._read_owner(fd)
                os.close(fd)
                self._cleanup_dir()
                raise OutputDirInUse(
                    f"{self.output_dir} is in use by another training run ({_describe(owner)}; lock file "
                    f"{self.path}); wait for it to end, stop it, or choose another --output_dir") from None
            except OSError as exc:
                if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL):
                    os.close(fd)
                    raise
                self._check_pid_fallback(fd, exc)
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # the previous owner removed the file between our open and our lock: retry
                os.close(fd)
                continue
            owner = self._read_owner(fd)
            if owner and owner.get("pid") != os.getpid():
                logger.warning("%s: taking over the lock left by %s, which is no longer running", self.output_dir,
                               _describe(owner))
            record = dict(pid=os.getpid(), host=socket.gethostname(), started=time.time(), argv=sys.argv)
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, (json.dumps(record) + "\n").encode("utf-8"))
            os.fsync(fd)
            self._fd = fd
            return self
        raise OutputDirInUse(f"{self.output_dir}: could not take {self.path} (it keeps being replaced)")

    def _check_pid_fallback(self, fd: int, exc: OSError) -> None:
        owner = self._read_owner(fd)
        logger.warning("%s: the file system does not support flock (%s); checking the owner's pid instead",
                       self.path, exc)
        if owner and owner.get("host") == socket.gethostname() and owner.get("pid") != os.getpid() \
                and _pid_alive(int(owner.get("pid", 0))):
            os.close(fd)
            self._cleanup_dir()
            raise OutputDirInUse(f"{self.output_dir} is in use by another training run ({_describe(owner)}; lock "
                                 f"file {self.path}); wait for it to end, stop it, or choose another --output_dir")

    def release(self) -> None:
        """Remove the lock file and drop the lock (and the folder, if this lock created it and it is empty)."""
        if self._fd is None:
            return
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        os.close(self._fd)
        self._fd = None
        self._cleanup_dir()

    def _cleanup_dir(self) -> None:
        if self._created_dir:
            try:
                self.output_dir.rmdir()
            except OSError:  # not empty: the run wrote something
                pass
            self._created_dir = False

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc_info) -> None:
        self.release()

    def __del__(self) -> None:  # a Trainer dropped without close(): the lock must not outlive it
        try:
            self.release()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass
