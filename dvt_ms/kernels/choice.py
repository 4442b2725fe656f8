"""Which ops a model runs: the fused CPU kernels or MindSpore's own, decided once per model.

A :class:`KernelChoice` is resolved when a model is built (from a mode and the device target) and the
same object is handed to every layer of that model. Layers read ``choice.fused`` when a graph is
compiled, so :meth:`KernelChoice.stock` switches a whole model to MindSpore's ops for the graphs
compiled inside it (dynamic shapes, exported files) without rebuilding anything. A graph keeps the ops
it was compiled with.
"""
import contextlib
import logging
import os
from typing import Iterator, Optional

import mindspore as ms

from .build import CPU_KERNEL_MODES, KernelBuildError, library_path

logger = logging.getLogger(__name__)

__all__ = ["KernelChoice", "STOCK", "UsesKernels", "default_mode"]

ENV_MODE = "DVT_MS_CPU_KERNELS"


def default_mode() -> str:
    """The mode used when none is given: ``$DVT_MS_CPU_KERNELS``, else ``auto``."""
    mode = os.environ.get(ENV_MODE, "auto")
    if mode not in CPU_KERNEL_MODES:
        raise ValueError(f"{ENV_MODE} must be one of {', '.join(CPU_KERNEL_MODES)}, got {mode!r}")
    return mode


class KernelChoice:
    """The kernels of one model.

    ``available`` says whether the fused kernels were built into the layers (fixed at construction);
    ``fused`` says whether graphs compiled now use them (``available`` unless inside :meth:`stock`).
    """

    def __init__(self, available: bool, mode: str, device_target: str, reason: str = ""):
        self.available = bool(available)
        self.mode = mode
        self.device_target = device_target
        self.reason = reason
        self._stock_depth = 0

    @classmethod
    def resolve(cls, mode: Optional[str] = None, device_target: Optional[str] = None) -> "KernelChoice":
        """Decide for a model built now: ``mode`` is ``auto``/``on``/``off`` (default :func:`default_mode`),
        ``device_target`` defaults to MindSpore's current one. ``on`` raises :class:`KernelBuildError`
        if the kernels cannot be built; ``auto`` falls back to MindSpore's ops with a warning."""
        mode = default_mode() if mode is None else mode
        if mode not in CPU_KERNEL_MODES:
            raise ValueError(f"cpu_kernels must be one of {', '.join(CPU_KERNEL_MODES)}, got {mode!r}")
        device = device_target or ms.get_context("device_target")
        if mode == "off":
            return cls(False, mode, device, "cpu_kernels is off")
        if device != "CPU":
            return cls(False, mode, device, f"the fused kernels are CPU-only; {device} uses MindSpore's ops")
        try:
            library_path()
        except KernelBuildError as exc:
            if mode == "on":
                raise
            logger.warning("fused CPU kernels unavailable (%s); using MindSpore's own ops", exc)
            return cls(False, mode, device, str(exc))
        return cls(True, mode, device)

    @property
    def fused(self) -> bool:
        return self.available and self._stock_depth == 0

    @contextlib.contextmanager
    def stock(self) -> Iterator[None]:
        """``with choice.stock():`` graphs compiled inside use MindSpore's ops; restored after."""
        self._stock_depth += 1
        try:
            yield
        finally:
            self._stock_depth -= 1

    def describe(self) -> str:
        """One line for logs and results: what the model runs on and why."""
        if self.fused:
            return "fused CPU kernels (oneDNN sgemm)"
        if self.available:
            return "MindSpore ops (fused CPU kernels switched off for this graph)"
        return f"MindSpore ops ({self.reason})" if self.reason else "MindSpore ops"

    def __repr__(self) -> str:
        return f"KernelChoice(mode={self.mode!r}, device={self.device_target!r}, {self.describe()})"


#: MindSpore's own ops: what a layer built without a choice runs.
STOCK = KernelChoice(False, "off", "any", "no kernel choice given")


class UsesKernels:
    """Mixin of the layers that can run on the fused kernels: ``self.fused`` follows ``self.kernels``."""

    kernels: KernelChoice = STOCK

    @property
    def fused(self) -> bool:
        return self.kernels.fused
