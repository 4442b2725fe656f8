"""Inference throughput (images/s, fp32, eval mode) of the MindSpore models, with a PyTorch baseline.

    python scripts/benchmark.py [--models deit_small dvt_deit_small dvt_t2t_vit_12] [--batch_sizes 1 8]
                                [--rounds 4] [--seconds 5 | --iters N] [--json results.json]

Every MindSpore model runs in GRAPH_MODE with random weights. Its first call compiles the graph (reported
separately), then ``--warmup`` calls are discarded. If torch is importable, a plain ``torch.nn`` DeiT-S
(defined below) runs eagerly under ``torch.inference_mode()`` with as many threads as MindSpore's CPU
kernels use (``runtime_num_threads``). The fastest call of a large MindSpore ``matmul`` gives the fp32
GEMM peak used for model-FLOP utilization, MFU = 2 * MACs * images/s / peak, with MACs from
``dvt_ms.flops.count`` (the full cascade for DVT). The torch baseline computes attention explicitly
(``q @ k^T``, softmax, ``@ v``) like the official DeiT code and the MindSpore model, not with a fused
attention kernel.

The measurements are interleaved: each of ``--rounds`` rounds times every (model, batch) in turn, in a
rotated order, so that ratios are taken under the same machine load. Every call is timed on its own
(outputs are synchronized with ``.asnumpy()`` / by eager execution) and the tables report medians.
"best" is the fastest single call, "threads used" the number of this process's threads that did at least
a quarter of the busiest thread's CPU work during a measurement (from /proc), and "cores busy" the
process CPU time over wall time: below the thread count means other processes took CPU time.
"""
import argparse
import json
import logging
import math
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dvt_ms.utils.cli import quiet_mindspore, run_cli, setup_logging  # noqa: E402

logger = logging.getLogger("benchmark")

DEFAULT_MODELS = ("deit_small", "dvt_deit_small", "dvt_t2t_vit_12")
TORCH_NAME = "deit_small"
TARGETS = {"ms_over_torch": (8, 1.3), "dvt_over_deit": (8, 0.5)}  # (batch size, minimum ratio)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS), help="registered model names")
    parser.add_argument("--batch_sizes", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--device_target", default="CPU", choices=("CPU", "GPU", "Ascend"))
    parser.add_argument("--rounds", type=int, default=4, help="interleaved rounds over all measurements")
    parser.add_argument("--seconds", type=float, default=5.0,
                        help="time budget per measurement per round (at least --min_iters calls)")
    parser.add_argument("--iters", type=int, default=None, help="fixed calls per measurement per round "
                        "(replaces --seconds)")
    parser.add_argument("--min_iters", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=2, help="calls discarded after the compiling call")
    parser.add_argument("--gemm_size", type=int, default=2048, help="side of the square GEMM for the peak")
    parser.add_argument("--no_torch", action="store_true", help="skip the PyTorch baseline")
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--json", type=Path, default=None, help="also write the results to this file")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    for key in ("rounds", "min_iters", "gemm_size", "image_size"):
        if getattr(args, key) < 1:
            raise ValueError(f"--{key} must be at least 1")
    if args.warmup < 0 or args.seconds <= 0 or (args.iters is not None and args.iters < 1):
        raise ValueError("--warmup must be >= 0, --seconds > 0 and --iters >= 1")
    if any(b < 1 for b in args.batch_sizes):
        raise ValueError("--batch_sizes must be positive")
    return args


@dataclass
class Measurement:
    """One timed callable: a (model, framework, batch) or the GEMM."""

    model: str
    framework: str
    batch: int
    run: Callable[[], None]
    macs_per_image: float = 0.0
    flops_per_call: float = 0.0  # GEMM only
    first_call_s: float = math.nan
    times: List[float] = field(default_factory=list)
    round_medians: List[float] = field(default_factory=list)
    cpu_over_wall: List[float] = field(default_factory=list)
    threads_used: List[int] = field(default_factory=list)

    @property
    def median_s(self) -> float:
        return statistics.median(self.times)

    @property
    def images_per_s(self) -> float:
        return self.batch / self.median_s


def _thread_cpu_ticks() -> Dict[str, int]:
    """CPU time (clock ticks) of every thread of this process, from /proc (empty elsewhere)."""
    ticks = {}
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return ticks
    for tid in tids:
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            ticks[tid] = int(fields[11]) + int(fields[12])  # utime + stime
        except (OSError, IndexError, ValueError):
            continue
    return ticks


def _busy_threads(before: Dict[str, int], after: Dict[str, int]) -> int:
    """Threads that did at least a quarter of the busiest thread's work between two snapshots."""
    deltas = [after[t] - before.get(t, 0) for t in after]
    top = max(deltas, default=0)
    return sum(d >= 0.25 * top for d in deltas) if top > 0 else 0


def time_chunk(m: Measurement, seconds: float, iters: Optional[int], min_iters: int) -> None:
    """Time calls of ``m.run`` one by one for ``iters`` calls or ``seconds`` (at least ``min_iters``)."""
    chunk: List[float] = []
    ticks0 = _thread_cpu_ticks()
    wall0, cpu0 = time.perf_counter(), time.process_time()
    while True:
        start = time.perf_counter()
        m.run()
        chunk.append(time.perf_counter() - start)
        if iters is not None:
            if len(chunk) >= iters:
                break
        elif len(chunk) >= min_iters and time.perf_counter() - wall0 >= seconds:
            break
    m.cpu_over_wall.append((time.process_time() - cpu0) / (time.perf_counter() - wall0))
    m.threads_used.append(_busy_threads(ticks0, _thread_cpu_ticks()))
    m.times.extend(chunk)
    m.round_medians.append(statistics.median(chunk))


def prepare(m: Measurement, warmup: int) -> None:
    start = time.perf_counter()
    m.run()
    m.first_call_s = time.perf_counter() - start
    for _ in range(warmup):
        m.run()


# ----------------------------------------------------------------------------------------------------
# MindSpore
# ----------------------------------------------------------------------------------------------------
def mindspore_measurements(args: argparse.Namespace, images: Dict[int, "object"]) -> List[Measurement]:
    import mindspore as ms
    from mindspore import Tensor

    from dvt_ms import create_model
    from dvt_ms.flops import count

    out = []
    for name in args.models:
        logger.info("building %s", name)
        net = create_model(name, image_size=args.image_size)
        net.set_train(False)
        macs = count(net, args.image_size)[-1]
        for batch in args.batch_sizes:
            x = Tensor(images[batch], ms.float32)

            def run(net=net, x=x) -> None:
                result = net(x)
                for t in (result if isinstance(result, (tuple, list)) else (result,)):
                    t.asnumpy()

            out.append(Measurement(name, "mindspore", batch, run, macs_per_image=macs))
    return out


def mindspore_gemm(size: int) -> Measurement:
    import numpy as np
    from mindspore import Tensor, nn, ops

    class MatMul(nn.Cell):
        def construct(self, a, b):
            return ops.matmul(a, b)

    rng = np.random.default_rng(0)
    a = Tensor(rng.standard_normal((size, size), dtype=np.float32))
    b = Tensor(rng.standard_normal((size, size), dtype=np.float32))
    cell = MatMul()
    return Measurement(f"gemm {size}^3", "mindspore", 1, lambda: cell(a, b).asnumpy(),
                       flops_per_call=2.0 * size ** 3)


# ----------------------------------------------------------------------------------------------------
# PyTorch baseline: DeiT-S in plain torch.nn
# ----------------------------------------------------------------------------------------------------
def torch_deit_small(torch, image_size: int):
    """DeiT-S: 16x16 patch conv, 12 blocks of 384 channels, 6 heads, MLP ratio 4, qkv bias, exact GELU."""
    nn = torch.nn
    dim, depth, heads, mlp_ratio, eps = 384, 12, 6, 4, 1e-6

    class Attention(nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = (dim // heads) ** -0.5
            self.qkv = nn.Linear(dim, 3 * dim, bias=True)
            self.proj = nn.Linear(dim, dim)

        def forward(self, x):
            b, n, c = x.shape
            q, k, v = self.qkv(x).reshape(b, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
            attn = (q @ k.transpose(-2, -1) * self.scale).softmax(dim=-1)
            return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.norm1 = nn.LayerNorm(dim, eps=eps)
            self.attn = Attention()
            self.norm2 = nn.LayerNorm(dim, eps=eps)
            self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(),
                                     nn.Linear(mlp_ratio * dim, dim))

        def forward(self, x):
            x = x + self.attn(self.norm1(x))
            return x + self.mlp(self.norm2(x))

    class DeiT(nn.Module):
        def __init__(self):
            super().__init__()
            self.patch_embed = nn.Conv2d(3, dim, kernel_size=16, stride=16)
            num_tokens = (image_size // 16) ** 2 + 1
            self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
            self.pos_embed = nn.Parameter(torch.randn(1, num_tokens, dim) * 0.02)
            self.blocks = nn.Sequential(*[Block() for _ in range(depth)])
            self.norm = nn.LayerNorm(dim, eps=eps)
            self.head = nn.Linear(dim, 1000)

        def forward(self, x):
            x = self.patch_embed(x).flatten(2).transpose(1, 2)
            x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1) + self.pos_embed
            return self.head(self.norm(self.blocks(x))[:, 0])

    return DeiT().eval()


def torch_measurements(torch, args: argparse.Namespace, images: Dict[int, "object"],
                       macs: float) -> List[Measurement]:
    net = torch_deit_small(torch, args.image_size)
    out = []
    for batch in args.batch_sizes:
        x = torch.from_numpy(images[batch])

        def run(x=x) -> None:
            with torch.inference_mode():
                net(x)

        out.append(Measurement(TORCH_NAME, "torch", batch, run, macs_per_image=macs))
    return out


# ----------------------------------------------------------------------------------------------------
# report
# ----------------------------------------------------------------------------------------------------
def _find(ms_list: List[Measurement], model: str, framework: str, batch: int) -> Optional[Measurement]:
    for m in ms_list:
        if (m.model, m.framework, m.batch) == (model, framework, batch):
            return m
    return None


def ratios(models: List[Measurement], batch_sizes: List[int]) -> List[dict]:
    """Throughput ratios from the overall medians, per-round spread, and from the fastest calls."""
    pairs = [("ms_over_torch", "deit_small MS / torch", ("deit_small", "mindspore"), (TORCH_NAME, "torch")),
             ("dvt_over_deit", "dvt_deit_small / deit_small (MS)", ("dvt_deit_small", "mindspore"),
              ("deit_small", "mindspore"))]
    out = []
    for key, label, num, den in pairs:
        for batch in batch_sizes:
            a, b = _find(models, *num, batch), _find(models, *den, batch)
            if a is None or b is None:
                continue
            per_round = [d / n for n, d in zip(a.round_medians, b.round_medians)]
            target_batch, minimum = TARGETS[key]
            target = minimum if batch == target_batch else None
            value = a.images_per_s / b.images_per_s
            out.append(dict(key=key, label=label, batch=batch, ratio=value, round_min=min(per_round),
                            round_max=max(per_round), best_call_ratio=min(b.times) / min(a.times),
                            target=target, met=None if target is None else value >= target))
    return out


def gemm_peak(gemm: Measurement) -> float:
    """FLOP/s of the fastest GEMM call: a peak, so that MFU stays below 1 on a machine with noisy calls."""
    return gemm.flops_per_call / min(gemm.times)


def print_report(env: dict, models: List[Measurement], gemm: Measurement, ratio_rows: List[dict]) -> None:
    peak = gemm_peak(gemm)
    print()
    for key, value in env.items():
        print(f"{key:>26}: {value}")
    print(f"{'fp32 GEMM peak (MS)':>26}: {peak / 1e9:.1f} GFLOP/s ({gemm.model}, best of {len(gemm.times)} "
          f"calls; median {gemm.flops_per_call / gemm.median_s / 1e9:.1f}; threads used "
          f"{statistics.median(gemm.threads_used):g}, cores busy {statistics.median(gemm.cpu_over_wall):.2f})")
    print()
    header = ("| model | framework | batch | first call s | median ms/call | best ms/call | images/s | GMACs/img "
              "| MFU | calls | threads used | cores busy |")
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for m in models:
        mfu = 2 * m.macs_per_image * m.images_per_s / peak
        compile_s = "-" if m.framework == "torch" else f"{m.first_call_s:.1f}"
        print(f"| {m.model} | {m.framework} | {m.batch} | {compile_s} | {1e3 * m.median_s:.1f} | "
              f"{1e3 * min(m.times):.1f} | {m.images_per_s:.2f} | {m.macs_per_image / 1e9:.3f} | "
              f"{100 * mfu:.1f}% | {len(m.times)} | {statistics.median(m.threads_used):g} | "
              f"{statistics.median(m.cpu_over_wall):.2f} |")
    print()
    print("| ratio (images/s) | batch | median | per-round range | best calls | target | met (median) |")
    print("|---|---|---|---|---|---|---|")
    for r in ratio_rows:
        target = "-" if r["target"] is None else f">= {r['target']}"
        met = "-" if r["met"] is None else ("yes" if r["met"] else "NO")
        print(f"| {r['label']} | {r['batch']} | {r['ratio']:.2f} | {r['round_min']:.2f}-{r['round_max']:.2f} "
              f"| {r['best_call_ratio']:.2f} | {target} | {met} |")


def cpu_model() -> str:
    """CPU model name from /proc/cpuinfo, or what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main(argv=None) -> int:
    args = parse_args(argv)
    setup_logging(args.verbose)
    quiet_mindspore()
    import numpy as np
    import mindspore as ms

    from dvt_ms.utils.device import configure_device

    device = configure_device(args.device_target, "graph")
    # MindSpore picks its CPU kernel thread count itself (runtime_num_threads; on this 2-core machine 2,
    # and neither set_context(runtime_num_threads=...) nor op_tuning.threads_num changed what its matmuls
    # use), so torch gets the same number and the table reports the threads each measurement really used.
    ms_threads = int(ms.get_context("runtime_num_threads"))
    rng = np.random.default_rng(0)
    images = {b: rng.standard_normal((b, 3, args.image_size, args.image_size), dtype=np.float32)
              for b in args.batch_sizes}

    gemm = mindspore_gemm(args.gemm_size)
    models = mindspore_measurements(args, images)
    torch = None
    if not args.no_torch:
        try:
            import torch
        except ImportError:
            logger.warning("torch is not importable; skipping the PyTorch baseline")
    if torch is not None:
        torch.set_num_threads(ms_threads)
        from dvt_ms import create_model
        from dvt_ms.flops import count

        deit = next((m for m in models if m.model == "deit_small"), None)
        macs = deit.macs_per_image if deit else count(create_model("deit_small", image_size=args.image_size),
                                                      args.image_size)[0]
        models += torch_measurements(torch, args, images, macs)

    load_before = os.getloadavg()
    everything = [gemm] + models
    for m in everything:
        logger.info("compiling/warming up %s (%s, batch %d)", m.model, m.framework, m.batch)
        prepare(m, args.warmup)
    for r in range(args.rounds):
        shift = r % len(everything)
        for m in everything[shift:] + everything[:shift]:
            logger.info("round %d/%d: %s (%s, batch %d)", r + 1, args.rounds, m.model, m.framework, m.batch)
            time_chunk(m, args.seconds, args.iters, args.min_iters)
    load_after = os.getloadavg()

    env = {
        "device": device,
        "machine": f"{cpu_model()} ({platform.machine()}), {os.cpu_count()} logical CPUs",
        "mindspore": f"{ms.__version__}, CPU kernel threads (runtime_num_threads) = {ms_threads}",
        "torch": "not used" if torch is None else
                 f"{torch.__version__}, threads = {torch.get_num_threads()}, eager, inference_mode",
        "load average before/after": f"{load_before[0]:.2f} / {load_after[0]:.2f}",
        "timing": f"{args.rounds} interleaved rounds x "
                  + (f"{args.iters} calls" if args.iters else f">= {args.seconds:g} s (>= {args.min_iters} calls)")
                  + f", warmup {args.warmup}, median per call",
    }
    ratio_rows = ratios(models, args.batch_sizes)
    print_report(env, models, gemm, ratio_rows)
    if args.json:
        peak = gemm_peak(gemm)
        payload = dict(
            args={k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            environment=env, gemm_peak_flops=peak, ratios=ratio_rows,
            results=[dict(model=m.model, framework=m.framework, batch=m.batch, first_call_s=m.first_call_s,
                          median_s=m.median_s, images_per_s=m.images_per_s, macs_per_image=m.macs_per_image,
                          mfu=2 * m.macs_per_image * m.images_per_s / peak, times_s=m.times,
                          round_medians_s=m.round_medians, cpu_over_wall=m.cpu_over_wall,
                          threads_used=m.threads_used)
                     for m in models])
        args.json.write_text(json.dumps(payload, indent=2))
        logger.info("wrote %s", args.json)
    return 0


if __name__ == "__main__":
    run_cli(main)
