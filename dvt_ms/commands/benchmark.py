"""Throughput benchmarks (images/s, fp32 or --precision bf16) of the MindSpore models, with PyTorch baselines.

    dvt-ms benchmark [--models deit_small dvt_deit_small dvt_t2t_vit_12] [--batch_sizes 1 8]
                     [--rounds 4] [--seconds 5 | --iters N] [--json results.json] [--precision fp32|bf16]
                     [--suite inference|early_exit|all|train] [--config FILE.yaml]
    (or python scripts/benchmark.py ...)

``--suite inference`` (the default) is the throughput table of the models in eval mode against the torch
DeiT-S and, with ``dvt_deit_small``, the official DVT cascade (plain torch.nn ports of the official code in
:mod:`dvt_ms.reference.torch_models`), eager under ``torch.inference_mode()``; with ``--precision bf16`` the
torch rows are also run under ``torch.autocast("cpu", dtype=torch.bfloat16)``. ``--suite early_exit``
measures the early-exit engine against the full cascade, DeiT-S and EViT-S (in bf16 the ``buckets`` engine
only: the dynamic-shape engine runs MindSpore's float32 ops); ``all`` runs both. ``--suite train`` measures
training steps (images/s) against an eager PyTorch training step (bf16: autocast); it is not part of ``all``.
The suites live in :mod:`dvt_ms.benchmarks`; their targets in ``dvt_ms.benchmarks.ratios.TARGETS``.

Every MindSpore model runs in GRAPH_MODE with random weights. Its first call compiles the graph (reported
separately), then ``--warmup`` calls are discarded. torch runs with as many threads as MindSpore's CPU
kernels use (``runtime_num_threads``). The fastest call of a large MindSpore ``matmul`` gives the fp32
GEMM peak used for model-FLOP utilization, MFU = 2 * MACs * images/s / peak (x3 for a training step), with
MACs from ``dvt_ms.flops.count`` (the full cascade for DVT); with ``--precision bf16`` on CPU a bf16 GEMM
peak of the fused kernels' product is printed next to the fp32 one, and each row's MFU is against the peak
of its own precision. Every report's header lists the CPU's bf16 flags (AVX512-BF16, AMX).

The measurements are interleaved: each of ``--rounds`` rounds times every measurement in turn, in a rotated
order, so that ratios are taken under the same machine load. Every call is timed on its own (outputs are
synchronized with ``.asnumpy()`` / by eager execution) and the tables report medians. "best" is the fastest
single call, "threads used" the number of this process's threads that did at least a quarter of the
busiest thread's CPU work during a measurement (from /proc), and "cores busy" the process CPU time over
wall time: below the thread count means other processes took CPU time.
"""
import argparse
from pathlib import Path

from dvt_ms.benchmarks import early_exit, inference, train
from dvt_ms.config import COMMON, resolve_config
from dvt_ms.config.scripts import BENCHMARK
from dvt_ms.run import configure_device
from dvt_ms.utils.cli import quiet_mindspore, run_cli, setup_logging

SCHEMA = COMMON + BENCHMARK


def parse_args(argv=None) -> argparse.Namespace:
    """The resolved config (``COMMON + BENCHMARK``, ``--config FILE`` and flags) as a namespace."""
    config = resolve_config(SCHEMA, argv, description=__doc__)
    args = argparse.Namespace(**config.to_dict())
    args.json = None if args.json is None else Path(args.json)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    setup_logging(args.verbose)
    quiet_mindspore()
    device = configure_device(args.device_target, "graph", args.cpu_kernels)
    if args.suite == "early_exit":
        return early_exit.early_exit_suite(args, device)
    if args.suite == "train":
        return train.train_suite(args, device)
    status = inference.inference_suite(args, device)
    if args.suite == "all" and status == 0:
        return early_exit.early_exit_suite(args, device)
    return status


if __name__ == "__main__":
    run_cli(main)
