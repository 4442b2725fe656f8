"""What a benchmark report says about its machine: the header lines (CPU, its bf16 flags, MindSpore, the fused
kernels, torch) and the GEMM peaks that model-FLOP utilization is taken against.

The fp32 peak is the fastest call of a large MindSpore ``matmul``; in bf16 on CPU the fused kernels' dense
product in bf16 gives a second peak (MindSpore's own matmul has no bf16 path on CPU). Each row's MFU is
against the peak of its own precision.
"""
import argparse
import json
import logging
import os
import platform
import statistics
from typing import Dict, List, Optional, Sequence

import numpy as np
import mindspore as ms
from mindspore import Tensor, nn, ops

from ..kernels import KernelChoice
from ..kernels import ops as fused_ops
from ..utils.cpuinfo import CPUINFO, cpuinfo_field, cpuinfo_flags
from .timing import Measurement

logger = logging.getLogger("benchmark")

__all__ = ["STOCK", "kernel_mode", "kernels_description", "cpu_model", "cpu_flags", "header", "import_torch",
           "gemm_measurements", "gemm_peak", "gemm_peaks", "mfu", "print_header"]

#: framework label of the MindSpore measurements built without the fused CPU kernels (--stock_baseline)
STOCK = "mindspore-stock-ops"
#: the CPU flags the bf16 paths depend on, in the order the header lists them
BF16_FLAGS = ("avx512f", "avx512_bf16", "amx_tile", "amx_bf16")


def kernel_mode(mode: str, framework: str) -> str:
    """The ``cpu_kernels`` mode of a measurement: MindSpore's own ops for ``STOCK`` rows, ``mode`` otherwise."""
    return "off" if framework == STOCK else mode


def kernels_description(mode: str, precision: str = "fp32") -> str:
    choice = KernelChoice.resolve(mode, precision=precision)
    return f"{mode}, precision {choice.precision}: {choice.describe()} (the {STOCK} rows are built without them)"


def cpu_model() -> str:
    """CPU model name from /proc/cpuinfo, or what ``platform`` knows."""
    return cpuinfo_field("model name") or platform.processor() or "unknown CPU"


def cpu_flags(cpuinfo: str = CPUINFO) -> str:
    """The CPU's bfloat16-related flags (AVX512-BF16, AMX) from ``cpuinfo``."""
    flags = cpuinfo_flags(cpuinfo)
    if flags is None:
        return f"unknown (no flags in {cpuinfo})"
    return ", ".join(f"{flag} {'yes' if flag in flags else 'no'}" for flag in BF16_FLAGS)


def header(suite: str, device: str, args: argparse.Namespace, precision: Optional[str] = None) -> Dict[str, str]:
    """The first lines of every suite's report: suite, device, machine, CPU flags, MindSpore, fused kernels."""
    return {
        "suite": suite,
        "device": device,
        "machine": f"{cpu_model()} ({platform.machine()}), {os.cpu_count()} logical CPUs",
        "CPU flags": cpu_flags(),
        "mindspore": f"{ms.__version__}, graph mode, CPU kernel threads (runtime_num_threads) = "
                     f"{int(ms.get_context('runtime_num_threads'))}",
        "fused CPU kernels": kernels_description(args.cpu_kernels, precision or args.precision),
    }


def import_torch(args: argparse.Namespace, threads: int):
    """torch on ``threads`` threads, or ``None`` with ``--no_torch`` or when it is not importable."""
    if args.no_torch:
        return None
    try:
        import torch
    except ImportError:
        logger.warning("torch is not importable; skipping the PyTorch baseline")
        return None
    torch.set_num_threads(threads)
    return torch


def _square_operands(size: int):
    rng = np.random.default_rng(0)
    return tuple(Tensor(rng.standard_normal((size, size), dtype=np.float32)) for _ in range(2))


def mindspore_gemm(size: int) -> Measurement:
    """``[size, size] @ [size, size]`` on MindSpore's ``matmul``: the fp32 peak."""
    class MatMul(nn.Cell):
        def construct(self, a, b):
            return ops.matmul(a, b)

    a, b = _square_operands(size)
    cell = MatMul()
    return Measurement(f"gemm {size}^3", "mindspore", 1, lambda: cell(a, b).asnumpy(),
                       flops_per_call=2.0 * size ** 3)


def fused_gemm(size: int, precision: str) -> Measurement:
    """``[size, size] @ [size, size]^T`` on the fused kernels' dense product in ``precision``: the peak of the
    bf16 rows (MindSpore's own matmul has no bf16 path on CPU)."""
    op = fused_ops.project_op(precision=precision)

    class Product(nn.Cell):
        def construct(self, a, b):
            return op(a, b)

    a, b = _square_operands(size)
    cell = Product()
    return Measurement(f"gemm {size}^3", f"fused {precision}", 1, lambda: cell(a, b).asnumpy(),
                       flops_per_call=2.0 * size ** 3, precision=precision)


def gemm_measurements(size: int, precision: str, device: str) -> List[Measurement]:
    """The fp32 GEMM, and with ``precision`` bf16 on CPU the fused bf16 one."""
    gemms = [mindspore_gemm(size)]
    if precision == "bf16" and device == "CPU":
        gemms.append(fused_gemm(size, "bf16"))
    return gemms


def gemm_peak(gemm: Measurement) -> float:
    """FLOP/s of the fastest GEMM call: a peak, so that MFU stays below 1 on a machine with noisy calls."""
    return gemm.flops_per_call / min(gemm.times)


def gemm_peaks(gemms: Sequence[Measurement]) -> Dict[str, float]:
    """Peak FLOP/s per precision (``fp32`` always, ``bf16`` where measured)."""
    return {g.precision: gemm_peak(g) for g in gemms}


def mfu(m: Measurement, peaks: Dict[str, float], passes: int = 1) -> float:
    """Model-FLOP utilization: ``2 * passes * MACs * images/s`` over the peak of the row's precision
    (``passes`` 3 for a training step: the backward is twice the forward). A row whose precision has no
    measured peak (bf16 off CPU) is taken against the fp32 one."""
    return 2 * passes * m.macs_per_image * m.images_per_s / peaks.get(m.precision, peaks["fp32"])


def print_header(env: Dict[str, str], gemms: Sequence[Measurement]) -> None:
    """The ``key: value`` lines of ``env``, then one line per GEMM peak."""
    print()
    for key, value in env.items():
        print(f"{key:>26}: {value}")
    for g in gemms:
        label = "fp32 GEMM peak (MS)" if g.precision == "fp32" else f"{g.precision} GEMM peak (fused)"
        print(f"{label:>26}: {gemm_peak(g) / 1e9:.1f} GFLOP/s ({g.model}, best of {len(g.times)} "
              f"calls; median {g.flops_per_call / g.median_s / 1e9:.1f}; threads used "
              f"{statistics.median(g.threads_used):g}, cores busy {statistics.median(g.cpu_over_wall):.2f})")
    print("(MFU of each row against the GEMM peak of its own precision)")


def write_results(args: argparse.Namespace, suite: str, payload: dict) -> None:
    """Write ``payload`` to ``--json`` if ``suite`` is the one asked for, else to ``STEM_<suite>.json`` beside it
    (``--suite all``: the inference results take the name, the early-exit results go beside them)."""
    owns_name = args.suite == suite or (args.suite == "all" and suite == "inference")
    path = args.json if owns_name else args.json.with_name(f"{args.json.stem}_{suite}.json")
    path.write_text(json.dumps(payload, indent=2))
    logger.info("wrote %s", path)
