"""Compile and cache the fused CPU kernel library (``cpu_ops.cc``), linked against MindSpore's oneDNN."""
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import List, Optional, Tuple

import mindspore as ms

from ..utils.cpuinfo import cpuinfo_flags

logger = logging.getLogger(__name__)

__all__ = ["CPU_KERNEL_MODES", "KernelBuildError", "library_key", "library_path"]

CPU_KERNEL_MODES = ("auto", "on", "off")
SOURCE = Path(__file__).with_name("cpu_ops.cc")
#: files that SOURCE includes: part of the cache key
INCLUDES = tuple(Path(__file__).with_name(name)
                 for name in ("cpu_ops_bf16.inc", "cpu_ops_activations.inc", "cpu_ops_bf16_grads.inc",
                              "cpu_ops_optim.inc", "cpu_ops_resample.inc"))
#: -fno-math-errno: a loop with std::sqrt only vectorizes when sqrt need not set errno (the kernels never read it)
FLAGS = ("-O3", "-march=native", "-fno-math-errno", "-shared", "-fPIC", "-std=c++14", "-pthread")
#: x86 compilers tune -march=native to 256-bit vectors even where AVX-512 exists; the element-wise kernels
#: (exp, GELU, conversions) run 2-3x faster with 512-bit ones, and a CPU without AVX-512 ignores the preference
X86_FLAGS = ("-mprefer-vector-width=512",)
ONEDNN = "libdnnl.so.3"

_library: Optional[str] = None
_failed: Optional[str] = None


class KernelBuildError(RuntimeError):
    """The CPU kernel library could not be compiled (``cpu_kernels: on``)."""


def _cpu_signature() -> str:
    flags = " ".join(sorted(cpuinfo_flags() or ()))
    return f"{platform.machine()}|{platform.processor()}|{flags}"


def _compile_flags() -> Tuple[str, ...]:
    return FLAGS + (X86_FLAGS if platform.machine().lower() in ("x86_64", "amd64") else ())


def _link_flags() -> List[str]:
    """Link against the oneDNN library inside the installed MindSpore package."""
    lib = Path(ms.__file__).resolve().parent / "lib"
    if not (lib / ONEDNN).is_file():
        raise KernelBuildError(f"{lib / ONEDNN} not found (this MindSpore build ships no oneDNN)")
    return [f"-L{lib}", f"-l:{ONEDNN}", f"-Wl,-rpath,{lib}"]


def _compile(compiler: str, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=target.name, suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        command = [compiler, *_compile_flags(), str(SOURCE), "-o", tmp, *_link_flags()]
        result = subprocess.run(command, capture_output=True, text=True, timeout=300)
        if result.returncode != 0:
            raise KernelBuildError(f"{compiler} failed on {SOURCE}: {result.stderr.strip()[-2000:]}")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def library_key() -> str:
    """Hash of the kernel sources, the build flags, MindSpore and the host CPU: the cached library's name."""
    text = " ".join([*_compile_flags(), *_link_flags(), ms.__version__, _cpu_signature()])
    sources = b"".join(path.read_bytes() for path in (SOURCE, *INCLUDES))
    return hashlib.sha256(sources + text.encode()).hexdigest()[:16]


def library_path() -> str:
    """Path of the compiled library, building it if needed; raises :class:`KernelBuildError`."""
    global _library, _failed
    if _library is not None:
        return _library
    if _failed is not None:
        raise KernelBuildError(_failed)
    compiler = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if compiler is None:
        _failed = "no C++ compiler found (set CXX or install g++)"
        raise KernelBuildError(_failed)
    cache = Path(os.environ.get("DVT_MS_KERNEL_CACHE", Path.home() / ".cache" / "dvt_ms" / "kernels"))
    try:
        target = cache / f"cpu_ops_{library_key()}.so"
        if not target.is_file():
            logger.info("compiling the CPU kernels: %s -> %s", SOURCE.name, target)
            _compile(compiler, target)
    except (OSError, subprocess.SubprocessError, KernelBuildError) as exc:
        _failed = str(exc)
        raise KernelBuildError(_failed) from None
    _library = str(target)
    return _library
