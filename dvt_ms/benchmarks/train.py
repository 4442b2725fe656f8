"""The training suite: one optimizer step per call at ``--train_batch`` on random images and soft targets.

MindSpore: :class:`dvt_ms.train.TrainStep` (graph mode: forward, loss, backward, finite checks and AdamW in
one compiled graph) for each of ``--train_models``, built in ``--precision`` (bf16: float32 master weights,
the fused kernels compute the products and their gradients in bf16; no loss scaler). PyTorch (if
importable): an eager step of the torch DeiT-S with the same loss and optimizer, on as many threads as
MindSpore uses, under ``torch.autocast("cpu", dtype=torch.bfloat16)`` in bf16 (no GradScaler). No EMA, no
drop path, no gradient clipping on either side. Measured in ``--rounds`` interleaved rounds with the GEMM
peaks; medians reported, training MFU = 6 * MACs * images/s over the peak of the row's precision.
"""
import argparse
import logging
import statistics
from typing import Dict, List, Sequence

import numpy as np
import mindspore as ms

from .environment import STOCK, gemm_measurements, gemm_peaks, header, import_torch, mfu, print_header, write_results
from .inference import FUSED_LABEL
from .mindspore_rows import macs_of, mindspore_train_measurement, soft_targets
from .ratios import Pair, print_ratio_table, ratio_rows
from .timing import Measurement, run_interleaved, run_lines
from .torch_baselines import TORCH_DEIT, torch_label, torch_train_measurement

logger = logging.getLogger("benchmark")

__all__ = ["train_pairs", "train_ratios", "train_suite"]


def train_pairs(precision: str) -> List[Pair]:
    """The ratios of the training table in ``precision``: MS/torch for DeiT-S, DVT over DeiT-S, fused/stock."""
    ms, torch = ("mindspore", torch_label("fp32")) if precision == "fp32" else ("mindspore bf16", torch_label("bf16"))
    prefix, suffix = ("", "") if precision == "fp32" else ("bf16_", " bf16")
    torch_name = "torch" if precision == "fp32" else "torch bf16 autocast"
    return [Pair(f"{prefix}ms_over_torch", f"deit_small{suffix} training MS / {torch_name}", ("deit_small", ms),
                 (TORCH_DEIT, torch)),
            Pair(f"{prefix}dvt_over_torch", f"dvt_deit_small{suffix} training MS / deit_small {torch_name}",
                 ("dvt_deit_small", ms), (TORCH_DEIT, torch)),
            Pair(f"{prefix}dvt_over_deit", f"dvt_deit_small / deit_small training (MS{suffix})",
                 ("dvt_deit_small", ms), ("deit_small", ms)),
            Pair("fused_over_stock", FUSED_LABEL + " (training)", ("deit_small", "mindspore"), ("deit_small", STOCK))]


def train_ratios(measurements: Sequence[Measurement], batch: int, precision: str = "fp32") -> List[dict]:
    """The :func:`train_pairs` ratios with their targets from ``TARGETS["train"]``."""
    return ratio_rows("train", measurements, train_pairs(precision), [batch])


def print_train_report(env: Dict[str, str], measurements: Sequence[Measurement], gemms: Sequence[Measurement],
                       rows: Sequence[dict]) -> None:
    peaks = gemm_peaks(gemms)
    print_header(env, gemms)
    print()
    print("| model | framework | batch | first call s | median s/step | best s/step | images/s | GMACs/img (fwd) "
          "| training MFU | steps | cores busy |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for m in measurements:
        print(f"| {m.model} | {m.framework} | {m.batch} | {m.first_call_s:.1f} | {m.median_s:.3f} | "
              f"{min(m.times):.3f} | {m.images_per_s:.2f} | {m.macs_per_image / 1e9:.3f} | "
              f"{100 * mfu(m, peaks, passes=3):.1f}% | {len(m.times)} | {statistics.median(m.cpu_over_wall):.2f} |")
    print()
    print_ratio_table(rows, "ratio (training images/s)", "best steps")


def train_suite(args: argparse.Namespace, device: str) -> int:
    """Run the suite, print its report and (with ``--json``) write it."""
    batch, size, precision = args.train_batch, args.image_size, args.precision
    rng = np.random.default_rng(0)
    images = rng.standard_normal((batch, 3, size, size), dtype=np.float32)
    targets = soft_targets(batch, 1000, 0.1, 1)
    ms_threads = int(ms.get_context("runtime_num_threads"))
    gemms = gemm_measurements(args.gemm_size, precision, device)
    measurements = []
    for name in args.train_models:
        logger.info("building the %s training step", name)
        measurements.append(mindspore_train_measurement(name, batch, size, images, targets, args.cpu_kernels,
                                                        precision))
    if args.stock_baseline:
        measurements.append(mindspore_train_measurement("deit_small", batch, size, images, targets, args.cpu_kernels,
                                                        "fp32", STOCK))
    torch = import_torch(args, ms_threads)
    if torch is not None:
        macs = macs_of(measurements, TORCH_DEIT, size)
        measurements.append(torch_train_measurement(torch, batch, size, images, targets, macs, precision))

    loads = run_interleaved(list(gemms) + measurements, args)

    rows = train_ratios(measurements, batch, precision)
    env = header("train", device, args)
    env["torch"] = ("not used" if torch is None else
                    f"{torch.__version__}, threads = {torch.get_num_threads()}, eager, train mode"
                    + (", forward under torch.autocast bf16, no GradScaler" if precision == "bf16" else ""))
    env["step"] = (f"batch {batch} x 3 x {size} x {size} random images, soft targets (1000 classes), AdamW 5e-4 / "
                   f"wd 0.05, {precision} (float32 weights); no EMA, drop path, clipping or loss scaling")
    env.update(run_lines(args, loads, "step"))
    print_train_report(env, measurements, gemms, rows)
    if args.json:
        peaks = gemm_peaks(gemms)
        payload = dict(environment=env, gemm_peak_flops=peaks["fp32"], bf16_gemm_peak_flops=peaks.get("bf16"),
                       ratios=rows, results=[dict(m.result(), mfu=mfu(m, peaks, passes=3)) for m in measurements])
        write_results(args, "train", payload)
    return 0
