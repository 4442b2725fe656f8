"""Which ops a model runs: the fused CPU kernels or MindSpore's own, decided once per model.

A :class:`KernelChoice` is resolved when a model is built (from a mode and the device target) and the
same object is handed to every layer of that model. Layers read ``choice.fused`` when a graph is
compiled, so :meth:`KernelChoice.stock` switches a whole model to MindSpore's ops for the graphs
compiled inside it (dynamic shapes, exported files) without rebuilding anything. A graph keeps the ops
it was compiled with.

The choice also holds the model's ``precision`` (``fp32``, ``bf16``, ``fp16``). On CPU, ``bf16`` runs the
fused kernels' matrix products (dense layers, attention scores and mix, DVT reuse products) on bfloat16
operands with float32 accumulation, and the activations that go from one fused kernel straight into a
product travel in bfloat16 (LayerNorm outputs, q/k/v, attention probabilities and output, the MLP's hidden
layer; :mod:`dvt_ms.kernels.ops`), since the product would round them anyway. LayerNorm and softmax
arithmetic and statistics, the attention logits (which DVT reuses), the residual stream, the exit logits and
confidences and everything outside the fused blocks stay float32. It needs the fused kernels and a CPU with
bfloat16 dot products (AVX512-BF16 or AMX): without them ``cpu_kernels: auto`` falls back to fp32 with a
warning and ``on`` is an error. ``fp16`` with the fused kernels is refused; with ``cpu_kernels: off`` it runs
MindSpore's own float16 ops, the graph GPU and Ascend run (for checking; slow). With MindSpore's ops the
layers cast the operands of their products to :attr:`KernelChoice.product_dtype`
(:mod:`dvt_ms.kernels.precision`).
"""
import contextlib
import logging
import os
from typing import Iterator, Optional, Tuple

import mindspore as ms

from ..precision import PRECISIONS, check_device_precision, check_precision
from ..utils.cpuinfo import cpuinfo_flags
from .build import CPU_KERNEL_MODES, KernelBuildError, library_path
from .precision import AMP_DTYPES, CHECK_GRAPH_NOTE

logger = logging.getLogger(__name__)

__all__ = ["BF16_CPU_FLAGS", "KernelChoice", "PRECISIONS", "STOCK", "UsesKernels", "check_precision", "cpu_bf16_flags",
           "cpu_supports_bf16", "default_mode"]

ENV_MODE = "DVT_MS_CPU_KERNELS"
#: /proc/cpuinfo flags of the CPUs with bfloat16 dot products
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_bf16_flags() -> Tuple[str, ...]:
    """The :data:`BF16_CPU_FLAGS` this CPU reports in ``/proc/cpuinfo`` (empty where it cannot be read)."""
    flags = cpuinfo_flags() or frozenset()
    return tuple(flag for flag in BF16_CPU_FLAGS if flag in flags)


def cpu_supports_bf16() -> bool:
    """Whether the CPU has bfloat16 dot products, which the ``bf16`` precision needs to be faster than fp32."""
    return bool(cpu_bf16_flags())


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
    ``model_precision`` is the precision the model was built for; ``precision`` the one graphs compiled now
    run in (fp32 inside :meth:`stock` on CPU, where MindSpore's own ops are float32).
    """

    def __init__(self, available: bool, mode: str, device_target: str, reason: str = "",
                 precision: str = "fp32"):
        self.available = bool(available)
        self.mode = mode
        self.device_target = device_target
        self.reason = reason
        self.model_precision = check_precision(precision)
        if self.model_precision == "bf16" and device_target == "CPU" and not self.available:
            raise ValueError(f"precision {precision} on CPU runs on the fused kernels, which this choice lacks")
        self._stock_depth = 0

    @classmethod
    def resolve(cls, mode: Optional[str] = None, device_target: Optional[str] = None,
                precision: Optional[str] = None) -> "KernelChoice":
        """Decide for a model built now: ``mode`` is ``auto``/``on``/``off`` (default :func:`default_mode`),
        ``device_target`` defaults to MindSpore's current one, ``precision`` to ``fp32``. ``on`` raises
        :class:`KernelBuildError` if the kernels cannot be built; ``auto`` falls back to MindSpore's ops with
        a warning. On CPU, ``bf16`` needs the kernels and a bfloat16-capable CPU: ``auto`` falls back to fp32
        with a warning, ``on`` and ``off`` raise ``ValueError``; ``fp16`` needs ``off`` (MindSpore's float16
        ops, the GPU/Ascend graph) and raises ``ValueError`` otherwise. bf16 on GPU raises ``ValueError``."""
        mode = default_mode() if mode is None else mode
        if mode not in CPU_KERNEL_MODES:
            raise ValueError(f"cpu_kernels must be one of {', '.join(CPU_KERNEL_MODES)}, got {mode!r}")
        precision = check_precision("fp32" if precision is None else precision)
        device = device_target or ms.get_context("device_target")
        if device != "CPU":
            reason = "cpu_kernels is off" if mode == "off" else \
                f"the fused kernels are CPU-only; {device} uses MindSpore's ops"
            return cls(False, mode, device, reason, check_device_precision(precision, device))
        if precision == "fp16":
            if mode != "off":
                raise ValueError(f"precision fp16 with the fused CPU kernels (cpu_kernels {mode}) is not supported "
                                 "(no fast float16 products on CPU); use bf16 (AVX512-BF16 or AMX) or fp32, or "
                                 "cpu_kernels off to check the GPU/Ascend float16 graph on CPU (slow)")
            logger.warning("precision fp16 with cpu_kernels off: %s", CHECK_GRAPH_NOTE)
            return cls(False, mode, device, "cpu_kernels is off; float16 check of the GPU/Ascend graph", precision)
        if precision == "bf16" and mode == "off":
            raise ValueError("precision bf16 on CPU runs on the fused kernels, but cpu_kernels is off; "
                             "set cpu_kernels to auto or on, or precision to fp32")
        if mode == "off":
            return cls(False, mode, device, "cpu_kernels is off")
        try:
            library_path()
        except KernelBuildError as exc:
            if mode == "on":
                raise
            if precision != "fp32":
                logger.warning("precision %s falls back to fp32: the fused CPU kernels are unavailable", precision)
            logger.warning("fused CPU kernels unavailable (%s); using MindSpore's own ops", exc)
            return cls(False, mode, device, str(exc))
        if precision == "bf16" and not cpu_supports_bf16():
            message = (f"precision bf16 needs a CPU with bfloat16 dot products ({' or '.join(BF16_CPU_FLAGS)} "
                       "in /proc/cpuinfo), and this one has none")
            if mode == "on":
                raise ValueError(message + "; use precision fp32, or cpu_kernels auto to fall back to it")
            logger.warning("%s: falling back to fp32 (cpu_kernels auto)", message)
            precision = "fp32"
        return cls(True, mode, device, precision=precision)

    @property
    def precision(self) -> str:
        """The precision of graphs compiled now: the model's, except fp32 for MindSpore's ops on CPU."""
        if self.device_target == "CPU" and self.available and not self.fused:
            return "fp32"
        return self.model_precision

    @property
    def product_dtype(self) -> Optional[ms.Type]:
        """The dtype MindSpore's ops cast the operands of products to now (``None``: float32, or the fused
        kernels, which carry their precision themselves)."""
        if self.fused or self.precision == "fp32":
            return None
        return AMP_DTYPES[self.precision]

    @property
    def kernel_precision(self) -> str:
        """The precision the fused kernels' matrix products are built in (``fp32`` or ``bf16``)."""
        return self.model_precision if self.available else "fp32"

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
        if self.fused and self.model_precision == "bf16":
            return "fused CPU kernels, bf16 (oneDNN bfloat16 products, float32 accumulation)"
        if self.fused:
            return "fused CPU kernels (oneDNN sgemm)"
        if self.available:
            return "MindSpore ops (fused CPU kernels switched off for this graph)"
        ops_name = "MindSpore ops" if self.precision == "fp32" else f"MindSpore ops, {self.precision} mixed precision"
        return f"{ops_name} ({self.reason})" if self.reason else ops_name

    def __repr__(self) -> str:
        return (f"KernelChoice(mode={self.mode!r}, device={self.device_target!r}, precision={self.precision!r}, "
                f"{self.describe()})")


#: MindSpore's own ops: what a layer built without a choice runs.
STOCK = KernelChoice(False, "off", "any", "no kernel choice given")


class UsesKernels:
    """Mixin of the layers that can run on the fused kernels: ``self.fused`` follows ``self.kernels``."""

    kernels: KernelChoice = STOCK

    @property
    def fused(self) -> bool:
        return self.kernels.fused

    @property
    def product_dtype(self) -> Optional[ms.Type]:
        return self.kernels.product_dtype
