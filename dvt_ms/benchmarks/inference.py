"""The inference suite: images/s of the MindSpore models in eval mode against the torch references.

Every MindSpore model runs in GRAPH_MODE with random weights (fp32, or bf16 with ``--precision bf16``).
Its first call compiles the graph (reported separately), then ``--warmup`` calls are discarded. If torch
is importable, the torch DeiT-S and, when ``dvt_deit_small`` is benchmarked, the official DVT cascade
(:mod:`dvt_ms.benchmarks.torch_baselines`) run eagerly with as many threads as MindSpore's CPU kernels
use (``runtime_num_threads``), in fp32 and, with ``--precision bf16``, under bf16 autocast too. MFU =
2 * MACs * images/s / the GEMM peak of the row's precision, with MACs from ``dvt_ms.flops.count`` (the
full cascade for DVT).
"""
import argparse
import logging
import statistics
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np
import mindspore as ms

from .environment import STOCK, gemm_measurements, gemm_peaks, header, import_torch, mfu, print_header, write_results
from .mindspore_rows import macs_of, mindspore_measurements
from .ratios import Pair, print_ratio_table, ratio_rows
from .timing import Measurement, run_interleaved, run_lines
from .torch_baselines import (TORCH_DEIT, TORCH_DVT, import_timm_vision_transformer, timm_label, torch_label,
                              torch_inference_measurements)

logger = logging.getLogger("benchmark")

__all__ = ["FUSED_LABEL", "INFERENCE_PAIRS", "inference_ratios", "print_report", "inference_suite"]

FUSED_LABEL = "deit_small MS fused CPU kernels / MindSpore's ops"
_TORCH, _AUTOCAST = torch_label("fp32"), torch_label("bf16")
#: the ratios of the inference table (each where both of its rows were measured)
INFERENCE_PAIRS = (
    Pair("ms_over_torch", "deit_small MS / torch", ("deit_small", "mindspore"), (TORCH_DEIT, _TORCH)),
    Pair("dvt_over_deit", "dvt_deit_small / deit_small (MS)", ("dvt_deit_small", "mindspore"),
         ("deit_small", "mindspore")),
    Pair("cascade_over_torch_cascade", "dvt_deit_small MS / official torch cascade", ("dvt_deit_small", "mindspore"),
         (TORCH_DVT, _TORCH)),
    Pair("fused_over_stock", FUSED_LABEL, ("deit_small", "mindspore"), ("deit_small", STOCK)),
    Pair("ms_over_timm", "deit_small MS / timm", ("deit_small", "mindspore"), (TORCH_DEIT, timm_label("fp32"))),
    Pair("bf16_ms_over_torch", "deit_small MS bf16 / torch bf16 autocast", ("deit_small", "mindspore bf16"),
         (TORCH_DEIT, _AUTOCAST)),
    Pair("bf16_ms_over_timm", "deit_small MS bf16 / timm bf16 autocast", ("deit_small", "mindspore bf16"),
         (TORCH_DEIT, timm_label("bf16"))),
    Pair("bf16_dvt_over_deit", "dvt_deit_small / deit_small (MS bf16)", ("dvt_deit_small", "mindspore bf16"),
         ("deit_small", "mindspore bf16")),
    Pair("bf16_cascade_over_torch_cascade", "dvt_deit_small MS bf16 / official torch cascade bf16 autocast",
         ("dvt_deit_small", "mindspore bf16"), (TORCH_DVT, _AUTOCAST)),
)


def _timm_note() -> str:
    module = import_timm_vision_transformer()
    if module is None:
        return "; timm not installed"
    import timm

    return f"; timm {timm.__version__}'s VisionTransformer (DeiT-S sizes)"


def inference_ratios(models: Sequence[Measurement], batch_sizes: Sequence[int]) -> List[dict]:
    """The :data:`INFERENCE_PAIRS` ratios with their targets from ``TARGETS["inference"]``."""
    return ratio_rows("inference", models, INFERENCE_PAIRS, batch_sizes)


def print_report(env: Dict[str, str], models: Sequence[Measurement], gemms: Sequence[Measurement],
                 rows: Sequence[dict]) -> None:
    peaks = gemm_peaks(gemms)
    print_header(env, gemms)
    print()
    table = ("| model | framework | batch | first call s | median ms/call | best ms/call | images/s | GMACs/img "
             "| MFU | calls | threads used | cores busy |")
    print(table)
    print("|" + "---|" * (table.count("|") - 1))
    for m in models:
        compile_s = "-" if m.framework.startswith("torch") else f"{m.first_call_s:.1f}"
        print(f"| {m.model} | {m.framework} | {m.batch} | {compile_s} | {1e3 * m.median_s:.1f} | "
              f"{1e3 * min(m.times):.1f} | {m.images_per_s:.2f} | {m.macs_per_image / 1e9:.3f} | "
              f"{100 * mfu(m, peaks):.1f}% | {len(m.times)} | {statistics.median(m.threads_used):g} | "
              f"{statistics.median(m.cpu_over_wall):.2f} |")
    print()
    print_ratio_table(rows, "ratio (images/s)", "best calls")


def inference_suite(args: argparse.Namespace, device: str) -> int:
    """The throughput table of ``--models`` at ``--batch_sizes``, with the torch rows and the ratios."""
    # MindSpore picks its CPU kernel thread count itself (runtime_num_threads; on a 2-core machine 2, and
    # neither set_context(runtime_num_threads=...) nor op_tuning.threads_num changed what its matmuls use),
    # so torch gets the same number and the table reports the threads each measurement really used.
    ms_threads = int(ms.get_context("runtime_num_threads"))
    rng = np.random.default_rng(0)
    images = {b: rng.standard_normal((b, 3, args.image_size, args.image_size), dtype=np.float32)
              for b in args.batch_sizes}

    gemms = gemm_measurements(args.gemm_size, args.precision, device)
    models = mindspore_measurements(args.models, args.image_size, images, args.cpu_kernels, args.precision)
    if args.stock_baseline:
        models += mindspore_measurements(["deit_small"], args.image_size, images, args.cpu_kernels, "fp32", STOCK)
    torch = import_torch(args, ms_threads)
    if torch is not None:
        names = [TORCH_DEIT] + ([TORCH_DVT] if TORCH_DVT in args.models else [])
        macs = {name: macs_of(models, name, args.image_size) for name in names}
        models += torch_inference_measurements(torch, names, args.image_size, images, macs, args.precision)

    loads = run_interleaved(list(gemms) + models, args)

    env = header("inference", device, args)
    env["torch"] = ("not used" if torch is None else
                    f"{torch.__version__}, threads = {torch.get_num_threads()}, eager, inference_mode; DeiT-S and "
                    "the official DVT cascade (dvt_ms.reference.torch_models)" + _timm_note()
                    + (", bf16 rows under torch.autocast" if args.precision == "bf16" else ""))
    env.update(run_lines(args, loads, "call"))
    rows = inference_ratios(models, args.batch_sizes)
    print_report(env, models, gemms, rows)
    if args.json:
        peaks = gemm_peaks(gemms)
        payload = dict(
            args={k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            environment=env, gemm_peak_flops=peaks["fp32"], bf16_gemm_peak_flops=peaks.get("bf16"), ratios=rows,
            results=[dict(m.result(), mfu=mfu(m, peaks)) for m in models])
        write_results(args, "inference", payload)
    return 0
