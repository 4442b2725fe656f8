"""Inference throughput (images/s, fp32 or --precision bf16, eval mode) of the MindSpore models, with a
PyTorch baseline.

    dvt-ms benchmark [--models deit_small dvt_deit_small dvt_t2t_vit_12] [--batch_sizes 1 8]
                     [--rounds 4] [--seconds 5 | --iters N] [--json results.json]
                     [--suite inference|early_exit|all|train] [--config FILE.yaml]
    (or python scripts/benchmark.py ...)

``--suite inference`` (the default) is the throughput table described below. ``--suite early_exit``
measures early-exit inference instead (see ``early_exit_suite``); ``all`` runs both.
``--suite train`` measures training steps (images/s) against a PyTorch eager training step
(see ``train_suite``); it is not part of ``all``.

Every MindSpore model runs in GRAPH_MODE with random weights. Its first call compiles the graph (reported
separately), then ``--warmup`` calls are discarded. If torch is importable, a plain ``torch.nn`` DeiT-S
(defined below) runs eagerly under ``torch.inference_mode()`` with as many threads as MindSpore's CPU
kernels use (``runtime_num_threads``). The fastest call of a large MindSpore ``matmul`` gives the fp32
GEMM peak used for model-FLOP utilization, MFU = 2 * MACs * images/s / peak, with MACs from
``dvt_ms.flops.count`` (the full cascade for DVT). The torch baseline computes attention explicitly
(``q @ k^T``, softmax, ``@ v``) like the official DeiT code and the MindSpore model, not with a fused
attention kernel. With ``--precision bf16`` the MindSpore models run in bf16 (:mod:`dvt_ms.kernels.choice`),
the torch DeiT-S gets extra rows under ``torch.autocast("cpu", dtype=torch.bfloat16)``, a bf16 GEMM peak of
the fused kernels' product is printed next to the fp32 one, and each row's MFU is against the peak of its
own precision.

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
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple


from dvt_ms.config import COMMON, resolve_config
from dvt_ms.script_config import BENCHMARK
from dvt_ms.utils.cli import quiet_mindspore, run_cli, setup_logging

logger = logging.getLogger("benchmark")

TORCH_NAME = "deit_small"
FUSED_LABEL = "deit_small MS fused CPU kernels / MindSpore's ops"
#: framework label of the MindSpore measurements built without the fused CPU kernels (--stock_baseline)
STOCK = "mindspore-stock-ops"
TARGETS = {"ms_over_torch": (8, 1.3), "dvt_over_deit": (8, 0.5),  # (batch size, minimum ratio)
           "bf16_ms_over_torch": (8, 1.2)}
EXIT_TARGETS = {"realized_over_theoretical": 0.85, "evit_over_deit": 1.4}


SCHEMA = COMMON + BENCHMARK


def parse_args(argv=None) -> argparse.Namespace:
    """The resolved config (``COMMON + BENCHMARK``, ``--config FILE`` and flags) as a namespace."""
    config = resolve_config(SCHEMA, argv, description=__doc__)
    args = argparse.Namespace(**config.to_dict())
    args.json = None if args.json is None else Path(args.json)
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

def run_interleaved(measurements: List[Measurement], args: argparse.Namespace) -> Tuple[float, float]:
    """Warm every measurement up, then time ``args.rounds`` rounds, each starting one measurement later.

    Returns the 1-minute load average before and after.
    """
    load_before = os.getloadavg()[0]
    for m in measurements:
        logger.info("compiling/warming up %s (%s, batch %d)", m.model, m.framework, m.batch)
        prepare(m, args.warmup)
    for r in range(args.rounds):
        shift = r % len(measurements)
        for m in measurements[shift:] + measurements[:shift]:
            logger.info("round %d/%d: %s (%s, batch %d)", r + 1, args.rounds, m.model, m.framework, m.batch)
            time_chunk(m, args.seconds, args.iters, args.min_iters)
    return load_before, os.getloadavg()[0]


def timing_description(args: argparse.Namespace, unit: str) -> str:
    """The "timing" line of a report; ``unit`` is what one timed call is ("call", "step")."""
    per_round = f"{args.iters} {unit}s" if args.iters else f">= {args.seconds:g} s (>= {args.min_iters} {unit}s)"
    return f"{args.rounds} interleaved rounds x {per_round}, warmup {args.warmup}, median per {unit}"


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


def deit_small_macs(measurements: List[Measurement], image_size: int) -> float:
    """DeiT-S MACs per image: from its MindSpore measurement if there is one, else counted."""
    deit = next((m for m in measurements if m.model == "deit_small" and m.framework == "mindspore"), None)
    if deit is not None:
        return deit.macs_per_image
    from dvt_ms import create_model
    from dvt_ms.flops import count

    return count(create_model("deit_small", image_size=image_size), image_size)[0]



# ----------------------------------------------------------------------------------------------------
# MindSpore
# ----------------------------------------------------------------------------------------------------
def kernel_mode(mode: str, framework: str) -> str:
    """The ``cpu_kernels`` mode of a measurement: MindSpore's own ops for ``STOCK`` rows, ``mode`` otherwise."""
    return "off" if framework == STOCK else mode


def kernels_description(mode: str, precision: str = "fp32") -> str:
    from dvt_ms.kernels import KernelChoice

    choice = KernelChoice.resolve(mode, precision=precision)
    return f"{mode}, precision {choice.precision}: {choice.describe()} (the {STOCK} rows are built without them)"


def cpu_flags() -> str:
    """The CPU's bfloat16-related flags (AVX512-BF16, AMX) from /proc/cpuinfo."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return "unknown (no /proc/cpuinfo)"
    wanted = ["avx512f", "avx512_bf16", "amx_tile", "amx_bf16"]
    return ", ".join(f"{flag} {'yes' if flag in flags else 'no'}" for flag in wanted)


def precision_of(m: "Measurement") -> str:
    """``bf16`` for the bf16 rows (framework label ending in bf16 or bf16-autocast), else ``fp32``."""
    return "bf16" if "bf16" in m.framework else "fp32"


def fused_gemm(size: int, precision: str) -> Measurement:
    """``[size, size] @ [size, size]^T`` on the fused kernels' dense product in ``precision``: the peak of the
    bf16 rows (MindSpore's own matmul has no bf16 path on CPU)."""
    import numpy as np
    from mindspore import Tensor, nn

    from dvt_ms.kernels import ops as fused_ops

    op = fused_ops.project_op(precision=precision)

    class Product(nn.Cell):
        def construct(self, a, b):
            return op(a, b)

    rng = np.random.default_rng(0)
    a = Tensor(rng.standard_normal((size, size), dtype=np.float32))
    b = Tensor(rng.standard_normal((size, size), dtype=np.float32))
    cell = Product()
    return Measurement(f"gemm {size}^3", f"fused {precision}", 1, lambda: cell(a, b).asnumpy(),
                       flops_per_call=2.0 * size ** 3)


def mindspore_measurements(args: argparse.Namespace, images: Dict[int, "object"], models: List[str],
                           framework: str = "mindspore") -> List[Measurement]:
    import mindspore as ms
    from mindspore import Tensor

    from dvt_ms import create_model
    from dvt_ms.flops import count

    out = []
    for name in models:
        logger.info("building %s (%s)", name, framework)
        precision = "fp32" if framework == STOCK else args.precision
        net = create_model(name, image_size=args.image_size, cpu_kernels=kernel_mode(args.cpu_kernels, framework),
                           precision=precision)
        net.set_train(False)
        macs = count(net, args.image_size)[-1]
        label = framework if net.kernels.precision == "fp32" else f"{framework} {net.kernels.precision}"
        for batch in args.batch_sizes:
            x = Tensor(images[batch], ms.float32)

            def run(net=net, x=x) -> None:
                result = net(x)
                for t in (result if isinstance(result, (tuple, list)) else (result,)):
                    t.asnumpy()

            out.append(Measurement(name, label, batch, run, macs_per_image=macs))
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
        if args.precision == "bf16":
            def run_bf16(x=x) -> None:
                with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
                    net(x)

            out.append(Measurement(TORCH_NAME, "torch bf16-autocast", batch, run_bf16, macs_per_image=macs))
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
              ("deit_small", "mindspore")),
             ("fused_over_stock", FUSED_LABEL, ("deit_small", "mindspore"), ("deit_small", STOCK)),
             ("bf16_ms_over_torch", "deit_small MS bf16 / torch bf16 autocast", ("deit_small", "mindspore bf16"),
              (TORCH_NAME, "torch bf16-autocast")),
             ("bf16_dvt_over_deit", "dvt_deit_small / deit_small (MS bf16)", ("dvt_deit_small", "mindspore bf16"),
              ("deit_small", "mindspore bf16"))]
    out = []
    for key, label, num, den in pairs:
        for batch in batch_sizes:
            a, b = _find(models, *num, batch), _find(models, *den, batch)
            if a is None or b is None:
                continue
            per_round = [d / n for n, d in zip(a.round_medians, b.round_medians)]
            target_batch, minimum = TARGETS.get(key, (None, None))
            target = minimum if batch == target_batch else None
            value = a.images_per_s / b.images_per_s
            out.append(dict(key=key, label=label, batch=batch, ratio=value, round_min=min(per_round),
                            round_max=max(per_round), best_call_ratio=min(b.times) / min(a.times),
                            target=target, met=None if target is None else value >= target))
    return out


def gemm_peak(gemm: Measurement) -> float:
    """FLOP/s of the fastest GEMM call: a peak, so that MFU stays below 1 on a machine with noisy calls."""
    return gemm.flops_per_call / min(gemm.times)


def print_ratio_table(ratio_rows: List[dict], title: str, best_column: str) -> None:
    """Markdown table of throughput ratios with their targets."""
    print(f"| {title} | batch | median | per-round range | {best_column} | target | met (median) |")
    print("|---|---|---|---|---|---|---|")
    for r in ratio_rows:
        target = "-" if r["target"] is None else f">= {r['target']}"
        met = "-" if r["met"] is None else ("yes" if r["met"] else "NO")
        print(f"| {r['label']} | {r['batch']} | {r['ratio']:.2f} | {r['round_min']:.2f}-{r['round_max']:.2f} "
              f"| {r['best_call_ratio']:.2f} | {target} | {met} |")


def print_report(env: dict, models: List[Measurement], gemm: Measurement, ratio_rows: List[dict],
                 bf16_gemm: Optional[Measurement] = None) -> None:
    peaks = {"fp32": gemm_peak(gemm)}
    print()
    for key, value in env.items():
        print(f"{key:>26}: {value}")
    for label, g in (("fp32 GEMM peak (MS)", gemm), ("bf16 GEMM peak (fused)", bf16_gemm)):
        if g is None:
            continue
        print(f"{label:>26}: {gemm_peak(g) / 1e9:.1f} GFLOP/s ({g.model}, best of {len(g.times)} "
              f"calls; median {g.flops_per_call / g.median_s / 1e9:.1f}; threads used "
              f"{statistics.median(g.threads_used):g}, cores busy {statistics.median(g.cpu_over_wall):.2f})")
    if bf16_gemm is not None:
        peaks["bf16"] = gemm_peak(bf16_gemm)
    print("(MFU of each row against the GEMM peak of its own precision)")
    print()
    header = ("| model | framework | batch | first call s | median ms/call | best ms/call | images/s | GMACs/img "
              "| MFU | calls | threads used | cores busy |")
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for m in models:
        mfu = 2 * m.macs_per_image * m.images_per_s / peaks.get(precision_of(m), peaks["fp32"])
        compile_s = "-" if m.framework.startswith("torch") else f"{m.first_call_s:.1f}"
        print(f"| {m.model} | {m.framework} | {m.batch} | {compile_s} | {1e3 * m.median_s:.1f} | "
              f"{1e3 * min(m.times):.1f} | {m.images_per_s:.2f} | {m.macs_per_image / 1e9:.3f} | "
              f"{100 * mfu:.1f}% | {len(m.times)} | {statistics.median(m.threads_used):g} | "
              f"{statistics.median(m.cpu_over_wall):.2f} |")
    print()
    print_ratio_table(ratio_rows, "ratio (images/s)", "best calls")


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


# ----------------------------------------------------------------------------------------------------
# early-exit suite
# ----------------------------------------------------------------------------------------------------
def _engine_label(mode: str) -> str:
    return f"dvt_deit_small early exit ({mode})"


def early_exit_measurements(args: argparse.Namespace, images) -> dict:
    """Build the models, fit the thresholds on the cascade's own logits, check both engines against the
    cascade, and return the timed callables with what the report needs."""
    import numpy as np
    import mindspore as ms
    from mindspore import Tensor

    from dvt_ms import create_model
    from dvt_ms.budget import exit_assignment
    from dvt_ms.flops import count
    from dvt_ms.infer import AdaptiveClassifier, softmax, thresholds_for_fractions

    size = args.image_size
    x = Tensor(images, ms.float32)
    dvt = create_model("dvt_deit_small", image_size=size, cpu_kernels=args.cpu_kernels)
    deit = create_model("deit_small", image_size=size, cpu_kernels=args.cpu_kernels)
    evit = create_model("evit_deit_small", image_size=size, cpu_kernels=args.cpu_kernels)
    for net in (dvt, deit, evit):
        net.set_train(False)
    if len(args.exit_fractions) != dvt.num_exits:
        raise ValueError(f"--exit_fractions needs {dvt.num_exits} values, got {len(args.exit_fractions)}")

    chunks = [Tensor(images[i:i + args.exit_cascade_chunk], ms.float32)
              for i in range(0, images.shape[0], args.exit_cascade_chunk)]
    logger.info("compiling the full cascade and fitting thresholds on its logits")
    logits = np.concatenate([np.stack([o.asnumpy() for o in dvt(chunk)]) for chunk in chunks], axis=1)
    probs = softmax(logits)
    thresholds = thresholds_for_fractions(probs, args.exit_fractions)
    exits = exit_assignment(probs, thresholds)
    counts = np.bincount(exits, minlength=dvt.num_exits)
    rows = np.arange(images.shape[0])

    engines = {}
    for mode in ("dynamic", "buckets"):
        logger.info("compiling the %s early-exit engine", mode)
        engine = AdaptiveClassifier(dvt, thresholds, shape_mode=mode)
        start = time.perf_counter()
        result = engine(images, return_logits=True)
        first_call = time.perf_counter() - start
        if not np.array_equal(result.exits, exits):
            raise RuntimeError(f"{mode} engine: the exits differ from the full cascade's")
        engines[mode] = dict(engine=engine, first_call_s=first_call,
                             max_logit_diff=float(np.abs(result.logits - logits[exits, rows]).max()))

    macs = count(dvt, size)
    expected = float(sum(c / images.shape[0] * m for c, m in zip(counts, macs)))

    def cascade_run() -> None:
        for chunk in chunks:
            for t in dvt(chunk):
                t.asnumpy()

    def single_run(net) -> Callable[[], None]:
        return lambda: net(x).asnumpy()

    def engine_run(mode: str) -> Callable[[], None]:
        return lambda: engines[mode]["engine"](images)

    batch = images.shape[0]
    measurements = [Measurement(_engine_label(mode), "mindspore", batch, engine_run(mode), macs_per_image=expected)
                    for mode in engines]
    measurements += [
        Measurement("dvt_deit_small full cascade", "mindspore", batch, cascade_run, macs_per_image=macs[-1]),
        Measurement("deit_small", "mindspore", batch, single_run(deit), macs_per_image=count(deit, size)[0]),
        Measurement("evit_deit_small", "mindspore", batch, single_run(evit), macs_per_image=count(evit, size)[0]),
    ]
    return dict(measurements=measurements, engines=engines, thresholds=thresholds, counts=counts, macs=macs,
                expected_macs=expected)


def _speedup_row(label: str, num: Measurement, den: Measurement, theoretical: float, target: float,
                 target_of: str) -> dict:
    realized = num.images_per_s / den.images_per_s
    per_round = [d / n for n, d in zip(num.round_medians, den.round_medians)]
    checked = realized / theoretical if target_of == "realized/theoretical" else realized
    return dict(label=label, theoretical=theoretical, realized=realized, round_min=min(per_round),
                round_max=max(per_round), realized_over_theoretical=realized / theoretical, target=target,
                target_of=target_of, met=checked >= target)


def early_exit_ratios(m: Dict[str, Measurement], macs: List[float], expected: float) -> List[dict]:
    """Theoretical (MACs) and realized (images/s) speedups of each engine, and EViT over DeiT."""
    target = EXIT_TARGETS["realized_over_theoretical"]
    deit, evit, cascade = m["deit_small"], m["evit_deit_small"], m["dvt_deit_small full cascade"]
    rows = []
    for mode in ("dynamic", "buckets"):
        engine = m[_engine_label(mode)]
        rows.append(_speedup_row(f"engine ({mode}) / full cascade", engine, cascade, macs[-1] / expected,
                                 target, "realized/theoretical"))
        rows.append(_speedup_row(f"engine ({mode}) / deit_small", engine, deit, deit.macs_per_image / expected,
                                 target, "realized/theoretical"))
    rows.append(_speedup_row("evit_deit_small / deit_small", evit, deit,
                             deit.macs_per_image / evit.macs_per_image, EXIT_TARGETS["evit_over_deit"], "realized"))
    return rows


def print_early_exit_report(env: dict, info: dict, ratio_rows: List[dict]) -> None:
    n = int(sum(info["counts"]))
    print()
    for key, value in env.items():
        print(f"{key:>26}: {value}")
    print(f"{'thresholds':>26}: {', '.join(f'{t:.6g}' for t in info['thresholds'])} "
          "(fitted on the full cascade's softmax outputs for this batch)")
    print(f"{'exits taken':>26}: " + ", ".join(f"exit {k + 1}: {c} ({100 * c / n:.1f}%)"
                                              for k, c in enumerate(info["counts"])))
    print(f"{'GMACs/img at exits 1/2/3':>26}: " + " / ".join(f"{m / 1e9:.3f}" for m in info["macs"])
          + f" (cumulative); expected at the exits taken: {info['expected_macs'] / 1e9:.3f}")
    for mode, e in info["engines"].items():
        engine = e["engine"]
        calls = "; ".join(f"stage {k + 1}: " + ", ".join(f"{c} x b{b}" for b, c in sorted(batches.items()))
                          for k, batches in enumerate(engine.stage_batches))
        print(f"{'engine ' + mode:>26}: compiling call {e['first_call_s']:.1f} s; graphs per stage "
              f"{engine.compiled_graphs()}; max |logit - cascade logit| at the exit taken "
              f"{e['max_logit_diff']:.1e}")
        print(f"{'':>26}  calls x graph batch size over the whole run: {calls}")
    print()
    print("| model | batch | median s/call | best s/call | images/s | GMACs/img | calls | cores busy |")
    print("|---|---|---|---|---|---|---|---|")
    for m in info["measurements"]:
        print(f"| {m.model} | {m.batch} | {m.median_s:.2f} | {min(m.times):.2f} | {m.images_per_s:.2f} | "
              f"{m.macs_per_image / 1e9:.3f} | {len(m.times)} | {statistics.median(m.cpu_over_wall):.2f} |")
    print()
    print("| speedup (images/s) | theoretical (MACs) | realized (median) | per-round range "
          "| realized / theoretical | target | met |")
    print("|---|---|---|---|---|---|---|")
    for r in ratio_rows:
        if r["target_of"] == "realized/theoretical":
            target = f"realized/theoretical >= {100 * r['target']:.0f}%"
        else:
            target = f"realized >= {r['target']}x"
        print(f"| {r['label']} | {r['theoretical']:.2f}x | {r['realized']:.2f}x | "
              f"{r['round_min']:.2f}-{r['round_max']:.2f} | {100 * r['realized_over_theoretical']:.0f}% | "
              f"{target} | {'yes' if r['met'] else 'NO'} |")


def early_exit_suite(args: argparse.Namespace, device: str) -> int:
    """Early-exit engine vs the full cascade, DeiT-S and EViT-S on one fixed random batch.

    Thresholds are fitted on the full cascade's own softmax outputs for that batch so that
    ``--exit_fractions`` (60/25/15%) of it leaves at exits 1/2/3. Theoretical speedups are MACs ratios
    (``dvt_ms.flops.count``: the full cascade's or DeiT-S's MACs over the expected MACs at the exits
    taken); realized speedups are throughput ratios. Everything is timed in ``--rounds`` interleaved
    rounds and the medians are reported. The full cascade runs the batch in calls of
    ``--exit_cascade_chunk`` images, because one call on 64 images needs about 14 GB of workspace.
    """
    import numpy as np
    import mindspore as ms

    rng = np.random.default_rng(args.exit_seed)
    images = rng.standard_normal((args.exit_batch, 3, args.image_size, args.image_size), dtype=np.float32)
    info = early_exit_measurements(args, images)
    measurements = info["measurements"]
    load_before, load_after = run_interleaved(measurements, args)

    ratio_rows = early_exit_ratios({m.model: m for m in measurements}, info["macs"], info["expected_macs"])
    env = {
        "suite": "early_exit",
        "device": device,
        "machine": f"{cpu_model()} ({platform.machine()}), {os.cpu_count()} logical CPUs",
        "mindspore": f"{ms.__version__}, CPU kernel threads (runtime_num_threads) = "
                     f"{int(ms.get_context('runtime_num_threads'))}",
        "fused CPU kernels": kernels_description(args.cpu_kernels),
        "images": f"{args.exit_batch} x 3 x {args.image_size} x {args.image_size}, standard normal, seed "
                  f"{args.exit_seed}; random weights",
        "calls": f"engines, deit_small, evit_deit_small: all {args.exit_batch} images in one call; full cascade: "
                 f"calls of {args.exit_cascade_chunk} images",
        "load average before/after": f"{load_before:.2f} / {load_after:.2f}",
        "timing": timing_description(args, "call"),
    }
    print_early_exit_report(env, info, ratio_rows)
    if args.json:
        path = args.json if args.suite == "early_exit" else args.json.with_name(args.json.stem + "_early_exit.json")
        payload = dict(
            environment=env, thresholds=[float(t) for t in info["thresholds"]],
            exit_counts=[int(c) for c in info["counts"]], macs_per_exit=info["macs"],
            expected_macs=info["expected_macs"], ratios=ratio_rows,
            engines={mode: dict(first_call_s=e["first_call_s"], compiled_graphs=e["engine"].compiled_graphs(),
                                stage_batches=[{str(b): c for b, c in s.items()} for s in e["engine"].stage_batches],
                                max_logit_diff=e["max_logit_diff"]) for mode, e in info["engines"].items()},
            results=[dict(model=m.model, batch=m.batch, median_s=m.median_s, images_per_s=m.images_per_s,
                          macs_per_image=m.macs_per_image, times_s=m.times, round_medians_s=m.round_medians,
                          cpu_over_wall=m.cpu_over_wall)
                     for m in measurements])
        path.write_text(json.dumps(payload, indent=2))
        logger.info("wrote %s", path)
    return 0


# ----------------------------------------------------------------------------------------------------
# training suite
# ----------------------------------------------------------------------------------------------------
#: (batch size, minimum ratio) of deit_small MindSpore training over the PyTorch eager training step.
TRAIN_TARGET = (8, 1.0)


def _soft_targets(batch: int, num_classes: int, smoothing: float, seed: int):
    """Label-smoothed one-hot targets ``float32 [batch, num_classes]`` (what the mixup recipe feeds the loss)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    targets = np.full((batch, num_classes), smoothing / num_classes, dtype=np.float32)
    targets[np.arange(batch), rng.integers(0, num_classes, batch)] += 1.0 - smoothing
    return targets


def mindspore_train_measurement(name: str, batch: int, image_size: int, images, targets, cpu_kernels: str,
                                framework: str = "mindspore") -> Measurement:
    """One ``TrainStep`` call: forward, multi-exit loss, backward, finite checks, AdamW update (no EMA)."""
    import mindspore as ms
    from mindspore import Tensor

    from dvt_ms import create_model
    from dvt_ms.flops import count
    from dvt_ms.train import MultiExitLoss, TrainStep, create_optimizer

    ms.set_seed(0)
    net = create_model(name, image_size=image_size, cpu_kernels=kernel_mode(cpu_kernels, framework))
    optimizer = create_optimizer(net, "adamw", 5e-4, weight_decay=0.05)
    step = TrainStep(net, MultiExitLoss(label_smoothing=0.1), optimizer)
    x, y = Tensor(images, ms.float32), Tensor(targets, ms.float32)

    def run() -> None:
        step(x, y)  # reads the loss back, so the step has finished

    return Measurement(name, framework, batch, run, macs_per_image=count(net, image_size)[-1])


def torch_train_measurement(torch, batch: int, image_size: int, images, targets, macs: float) -> Measurement:
    """The same step in eager PyTorch: ``torch_deit_small`` in train mode, soft-target CE, AdamW (no decay
    for biases, norms, pos_embed and cls_token), ``zero_grad(set_to_none=True)``."""
    net = torch_deit_small(torch, image_size).train()
    decay = [p for n, p in net.named_parameters() if p.ndim > 1 and n not in ("pos_embed", "cls_token")]
    no_decay = [p for n, p in net.named_parameters() if p.ndim <= 1 or n in ("pos_embed", "cls_token")]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}],
                                  lr=5e-4)
    x, t = torch.from_numpy(images), torch.from_numpy(targets)

    def run() -> None:
        loss = torch.sum(-t * torch.log_softmax(net(x), dim=-1), dim=-1).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return Measurement(TORCH_NAME, "torch", batch, run, macs_per_image=macs)


def train_ratios(measurements: List[Measurement], batch: int) -> List[dict]:
    """MindSpore/torch for DeiT-S and DVT/DeiT-S (MindSpore), from the medians of the interleaved rounds."""
    target_batch, minimum = TRAIN_TARGET
    pairs = [("ms_over_torch", "deit_small training MS / torch", ("deit_small", "mindspore"), (TORCH_NAME, "torch"),
              minimum if batch == target_batch else None),
             ("dvt_over_torch", "dvt_deit_small training MS / deit_small torch", ("dvt_deit_small", "mindspore"),
              (TORCH_NAME, "torch"), None),
             ("dvt_over_deit", "dvt_deit_small / deit_small training (MS)", ("dvt_deit_small", "mindspore"),
              ("deit_small", "mindspore"), None),
             ("fused_over_stock", FUSED_LABEL + " (training)", ("deit_small", "mindspore"), ("deit_small", STOCK),
              None)]
    rows = []
    for key, label, num, den, target in pairs:
        a, b = _find(measurements, *num, batch), _find(measurements, *den, batch)
        if a is None or b is None:
            continue
        per_round = [d / n for n, d in zip(a.round_medians, b.round_medians)]
        value = a.images_per_s / b.images_per_s
        rows.append(dict(key=key, label=label, batch=batch, ratio=value, round_min=min(per_round),
                         round_max=max(per_round), best_call_ratio=min(b.times) / min(a.times), target=target,
                         met=None if target is None else value >= target))
    return rows


def print_train_report(env: dict, measurements: List[Measurement], peak: float, ratio_rows: List[dict]) -> None:
    print()
    for key, value in env.items():
        print(f"{key:>26}: {value}")
    print(f"{'fp32 GEMM peak (MS)':>26}: {peak / 1e9:.1f} GFLOP/s (fastest call)")
    print()
    print("| model | framework | batch | first call s | median s/step | best s/step | images/s | GMACs/img (fwd) "
          "| training MFU | steps | cores busy |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for m in measurements:
        mfu = 6 * m.macs_per_image * m.images_per_s / peak  # forward + backward = 3 x the forward's 2 x MACs
        print(f"| {m.model} | {m.framework} | {m.batch} | {m.first_call_s:.1f} | {m.median_s:.3f} | "
              f"{min(m.times):.3f} | {m.images_per_s:.2f} | {m.macs_per_image / 1e9:.3f} | {100 * mfu:.1f}% | "
              f"{len(m.times)} | {statistics.median(m.cpu_over_wall):.2f} |")
    print()
    print_ratio_table(ratio_rows, "ratio (training images/s)", "best steps")


def train_suite(args: argparse.Namespace, device: str) -> int:
    """Training throughput: one optimizer step per call at ``--train_batch`` on random images and soft targets.

    MindSpore: :class:`dvt_ms.train.TrainStep` (graph mode: forward, loss, backward, finite checks and
    AdamW in one compiled graph) for each of ``--train_models``; PyTorch (if importable): the eager DeiT-S
    above with the same loss and optimizer, on as many threads as MindSpore uses. No EMA, no drop path,
    no gradient clipping on either side. Measured in ``--rounds`` interleaved rounds; medians reported.
    """
    import numpy as np
    import mindspore as ms

    batch, size = args.train_batch, args.image_size
    rng = np.random.default_rng(0)
    images = rng.standard_normal((batch, 3, size, size), dtype=np.float32)
    targets = _soft_targets(batch, 1000, 0.1, 1)
    ms_threads = int(ms.get_context("runtime_num_threads"))
    gemm = mindspore_gemm(args.gemm_size)
    measurements = []
    for name in args.train_models:
        logger.info("building the %s training step", name)
        measurements.append(mindspore_train_measurement(name, batch, size, images, targets, args.cpu_kernels))
    if args.stock_baseline:
        measurements.append(mindspore_train_measurement("deit_small", batch, size, images, targets, args.cpu_kernels,
                                                        STOCK))
    torch = import_torch(args, ms_threads)
    if torch is not None:
        macs = deit_small_macs(measurements, size)
        measurements.append(torch_train_measurement(torch, batch, size, images, targets, macs))

    load_before, load_after = run_interleaved([gemm] + measurements, args)

    peak = gemm_peak(gemm)
    ratio_rows = train_ratios(measurements, batch)
    env = {
        "suite": "train",
        "device": device,
        "machine": f"{cpu_model()} ({platform.machine()}), {os.cpu_count()} logical CPUs",
        "mindspore": f"{ms.__version__}, graph mode, CPU kernel threads (runtime_num_threads) = {ms_threads}",
        "fused CPU kernels": kernels_description(args.cpu_kernels),
        "torch": "not used" if torch is None else
                 f"{torch.__version__}, threads = {torch.get_num_threads()}, eager, train mode",
        "step": f"batch {batch} x 3 x {size} x {size} random images, soft targets (1000 classes), AdamW 5e-4 / "
                "wd 0.05, fp32; no EMA, drop path or clipping",
        "load average before/after": f"{load_before:.2f} / {load_after:.2f}",
        "timing": timing_description(args, "step"),
    }
    print_train_report(env, measurements, peak, ratio_rows)
    if args.json:
        path = args.json if args.suite == "train" else args.json.with_name(args.json.stem + "_train.json")
        payload = dict(environment=env, gemm_peak_flops=peak, ratios=ratio_rows,
                       results=[dict(model=m.model, framework=m.framework, batch=m.batch, first_call_s=m.first_call_s,
                                     median_s=m.median_s, images_per_s=m.images_per_s,
                                     macs_per_image=m.macs_per_image, times_s=m.times,
                                     round_medians_s=m.round_medians, cpu_over_wall=m.cpu_over_wall)
                                for m in measurements])
        path.write_text(json.dumps(payload, indent=2))
        logger.info("wrote %s", path)
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    setup_logging(args.verbose)
    quiet_mindspore()
    import numpy as np
    import mindspore as ms

    from dvt_ms.utils.device import configure_device

    device = configure_device(args.device_target, "graph", args.cpu_kernels)
    if args.suite == "early_exit":
        return early_exit_suite(args, device)
    if args.suite == "train":
        return train_suite(args, device)
    # MindSpore picks its CPU kernel thread count itself (runtime_num_threads; on this 2-core machine 2,
    # and neither set_context(runtime_num_threads=...) nor op_tuning.threads_num changed what its matmuls
    # use), so torch gets the same number and the table reports the threads each measurement really used.
    ms_threads = int(ms.get_context("runtime_num_threads"))
    rng = np.random.default_rng(0)
    images = {b: rng.standard_normal((b, 3, args.image_size, args.image_size), dtype=np.float32)
              for b in args.batch_sizes}

    gemm = mindspore_gemm(args.gemm_size)
    bf16_gemm = fused_gemm(args.gemm_size, "bf16") if args.precision == "bf16" and device == "CPU" else None
    models = mindspore_measurements(args, images, args.models)
    if args.stock_baseline:
        models += mindspore_measurements(args, images, ["deit_small"], STOCK)
    torch = import_torch(args, ms_threads)
    if torch is not None:
        models += torch_measurements(torch, args, images, deit_small_macs(models, args.image_size))

    load_before, load_after = run_interleaved([gemm] + ([bf16_gemm] if bf16_gemm else []) + models, args)

    env = {
        "device": device,
        "machine": f"{cpu_model()} ({platform.machine()}), {os.cpu_count()} logical CPUs",
        "CPU flags": cpu_flags(),
        "mindspore": f"{ms.__version__}, CPU kernel threads (runtime_num_threads) = {ms_threads}",
        "fused CPU kernels": kernels_description(args.cpu_kernels, args.precision),
        "torch": "not used" if torch is None else
                 f"{torch.__version__}, threads = {torch.get_num_threads()}, eager, inference_mode"
                 + (", bf16 rows under torch.autocast" if args.precision == "bf16" else ""),
        "load average before/after": f"{load_before:.2f} / {load_after:.2f}",
        "timing": timing_description(args, "call"),
    }
    ratio_rows = ratios(models, args.batch_sizes)
    print_report(env, models, gemm, ratio_rows, bf16_gemm)
    if args.json:
        peak = gemm_peak(gemm)
        payload = dict(
            args={k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            environment=env, gemm_peak_flops=peak, ratios=ratio_rows,
            bf16_gemm_peak_flops=None if bf16_gemm is None else gemm_peak(bf16_gemm),
            results=[dict(model=m.model, framework=m.framework, batch=m.batch, first_call_s=m.first_call_s,
                          median_s=m.median_s, images_per_s=m.images_per_s, macs_per_image=m.macs_per_image,
                          precision=precision_of(m),
                          mfu=2 * m.macs_per_image * m.images_per_s
                          / (gemm_peak(bf16_gemm) if precision_of(m) == "bf16" and bf16_gemm else peak),
                          times_s=m.times,
                          round_medians_s=m.round_medians, cpu_over_wall=m.cpu_over_wall,
                          threads_used=m.threads_used)
                     for m in models])
        args.json.write_text(json.dumps(payload, indent=2))
        logger.info("wrote %s", args.json)
    if args.suite == "all":
        return early_exit_suite(args, device)
    return 0


if __name__ == "__main__":
    run_cli(main)
