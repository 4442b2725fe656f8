"""Fused C++ kernels for the CPU backend: dense layers, attention and DVT reuse products, LayerNorm,
bias + exact GELU, softmax, the attention-head layout and a non-finite count, each with its backward.

MindSpore 2.10's own CPU kernels for these ops are slow: a LayerNorm backward on ``[8, 197, 384]`` takes
about 8 ms, against 0.5 ms in PyTorch, and its MatMul reaches 140-160 GFLOP/s on a DeiT-S layer where the
sgemm of the oneDNN library it ships reaches 190-215. ``cpu_ops.cc`` implements them as AOT custom
operators (``ops.Custom(func_type="aot")``, see :mod:`dvt_ms.kernels.ops`). The library is compiled with
the system C++ compiler on first use, linked against MindSpore's ``lib/libdnnl.so.3``, and cached under
``$DVT_MS_KERNEL_CACHE`` (default ``~/.cache/dvt_ms/kernels``), keyed by the source, the build command
and the host CPU, so a shared home folder never serves a library built for another CPU or MindSpore.

The mode is ``auto`` (default: use them on CPU when a compiler is found, otherwise warn once and use
MindSpore's ops), ``on`` (an error if they cannot be built) or ``off``. Set it with
:func:`set_cpu_kernels`, the config key ``cpu_kernels`` or the ``DVT_MS_CPU_KERNELS`` environment
variable. The choice is made when a layer is built; GPU and Ascend always use MindSpore's ops.
"""
import contextlib
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator, List, Optional

import mindspore as ms
from mindspore import nn

logger = logging.getLogger(__name__)

__all__ = ["CPU_KERNEL_MODES", "KernelBuildError", "cpu_kernels", "cpu_kernels_active", "get_cpu_kernels",
           "library_path", "set_cpu_kernels", "stock_ops"]

CPU_KERNEL_MODES = ("auto", "on", "off")
SOURCE = Path(__file__).with_name("cpu_ops.cc")
FLAGS = ("-O3", "-march=native", "-shared", "-fPIC", "-std=c++14", "-pthread")
ONEDNN = "libdnnl.so.3"

_mode: Optional[str] = None
_library: Optional[str] = None
_failed: Optional[str] = None


class KernelBuildError(RuntimeError):
    """The CPU kernel library could not be compiled (``cpu_kernels: on``)."""


def set_cpu_kernels(mode: str) -> None:
    """Use the fused CPU kernels in layers built from now on: ``auto``, ``on`` or ``off``."""
    global _mode
    if mode not in CPU_KERNEL_MODES:
        raise ValueError(f"cpu_kernels must be one of {', '.join(CPU_KERNEL_MODES)}, got {mode!r}")
    _mode = mode


def get_cpu_kernels() -> str:
    """The current mode (``DVT_MS_CPU_KERNELS`` until :func:`set_cpu_kernels` is called)."""
    if _mode is not None:
        return _mode
    mode = os.environ.get("DVT_MS_CPU_KERNELS", "auto")
    if mode not in CPU_KERNEL_MODES:
        raise ValueError(f"DVT_MS_CPU_KERNELS must be one of {', '.join(CPU_KERNEL_MODES)}, got {mode!r}")
    return mode


@contextlib.contextmanager
def cpu_kernels(mode: str) -> Iterator[None]:
    """``with cpu_kernels("off"):`` layers built inside use that mode."""
    global _mode
    previous = _mode
    set_cpu_kernels(mode)
    try:
        yield
    finally:
        _mode = previous


def _cpu_signature() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
        flags = next((line for line in text.splitlines() if line.startswith("flags")), "")
    except OSError:
        flags = ""
    return f"{platform.machine()}|{platform.processor()}|{flags}"


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
        command = [compiler, *FLAGS, str(SOURCE), "-o", tmp, *_link_flags()]
        result = subprocess.run(command, capture_output=True, text=True, timeout=300)
        if result.returncode != 0:
            raise KernelBuildError(f"{compiler} failed on {SOURCE}: {result.stderr.strip()[-2000:]}")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def library_key() -> str:
    """Hash of the kernel source, the build flags, MindSpore and the host CPU: the cached library's name."""
    text = " ".join([*FLAGS, *_link_flags(), ms.__version__, _cpu_signature()])
    return hashlib.sha256(SOURCE.read_bytes() + text.encode()).hexdigest()[:16]


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


def _fused_cells(net: nn.Cell) -> List[nn.Cell]:
    return [cell for _, cell in net.cells_and_names() if getattr(cell, "fused", False)]


@contextlib.contextmanager
def stock_ops(net: nn.Cell) -> Iterator[None]:
    """``with stock_ops(net):`` graphs compiled inside use MindSpore's own ops; the layers are restored after.

    For dynamic-shape graphs (MindSpore 2.10 runs AOT custom ops only with static shapes) and exported
    files. A graph keeps the ops it was compiled with, and the results are the same either way.
    """
    cells = _fused_cells(net)
    for cell in cells:
        cell.fused = False
    try:
        yield
    finally:
        for cell in cells:
            cell.fused = True


def cpu_kernels_active() -> bool:
    """Whether a layer built now should use the fused CPU kernels."""
    mode = get_cpu_kernels()
    if mode == "off" or ms.get_context("device_target") != "CPU":
        return False
    try:
        library_path()
    except KernelBuildError as exc:
        if mode == "on":
            raise
        if not getattr(cpu_kernels_active, "warned", False):
            logger.warning("fused CPU kernels unavailable (%s); using MindSpore's own ops", exc)
            cpu_kernels_active.warned = True
        return False
    return True
