"""The early-exit suite: the engine (:class:`dvt_ms.infer.AdaptiveClassifier`) against the full cascade,
DeiT-S and EViT-S on one fixed random batch, in ``--precision`` (fp32 or bf16).

Thresholds are fitted on the full cascade's own softmax outputs for that batch so that
``--exit_fractions`` (60/25/15%) of it leaves at exits 1/2/3. Theoretical speedups are MACs ratios
(``dvt_ms.flops.count``: the full cascade's or DeiT-S's MACs over the expected MACs at the exits taken);
realized speedups are throughput ratios. Everything, the GEMM peaks included, is timed in ``--rounds``
interleaved rounds and the medians are reported. The full cascade runs the batch in calls of
``--exit_cascade_chunk`` images, because one call on 64 images needs about 14 GB of workspace.

Engines: ``dynamic`` (one dynamic-batch graph per stage) and ``buckets`` (static graphs for bucketed batch
sizes) in fp32. In bf16 on CPU only ``buckets``: dynamic shapes run MindSpore's float32 ops, so the engine
refuses ``dynamic`` for a bf16 model (see :data:`NO_DYNAMIC_REASON`).
"""
import argparse
import logging
import statistics
import time
from typing import Callable, Dict, List, Sequence, Tuple

import numpy as np
import mindspore as ms
from mindspore import Tensor

from ..budget import exit_assignment
from ..flops import count
from ..infer import AdaptiveClassifier, softmax, thresholds_for_fractions
from ..models import create_model
from .environment import gemm_measurements, gemm_peaks, header, mfu, print_header, write_results
from .ratios import target_of
from .timing import Measurement, framework_label, run_interleaved, run_lines

logger = logging.getLogger("benchmark")

__all__ = ["NO_DYNAMIC_REASON", "engine_modes", "early_exit_measurements", "early_exit_ratios", "early_exit_suite"]

NO_DYNAMIC_REASON = ("no dynamic engine: dynamic shapes run MindSpore's float32 CPU ops, so AdaptiveClassifier "
                     "refuses shape_mode 'dynamic' for a CPU bf16 model")


def engine_modes(precision: str, device: str) -> Tuple[str, ...]:
    """The engine shape modes the suite measures in ``precision`` on ``device``."""
    return ("buckets",) if precision != "fp32" and device == "CPU" else ("dynamic", "buckets")


def _engine_label(mode: str) -> str:
    return f"dvt_deit_small early exit ({mode})"


def early_exit_measurements(args: argparse.Namespace, images, device: str) -> dict:
    """Build the models, fit the thresholds on the cascade's own logits, check each engine against the
    cascade, and return the timed callables with what the report needs."""
    size = args.image_size

    def build(name: str):
        net = create_model(name, image_size=size, cpu_kernels=args.cpu_kernels, precision=args.precision)
        net.set_train(False)
        return net

    x = Tensor(images, ms.float32)
    dvt, deit, evit = build("dvt_deit_small"), build("deit_small"), build("evit_deit_small")
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
    for mode in engine_modes(dvt.kernels.model_precision, device):
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

    batch, precision = images.shape[0], dvt.kernels.precision
    label = framework_label("mindspore", precision)

    def row(model: str, run: Callable[[], None], macs_per_image: float) -> Measurement:
        return Measurement(model, label, batch, run, macs_per_image=macs_per_image, precision=precision)

    measurements = [row(_engine_label(mode), engine_run(mode), expected) for mode in engines]
    measurements += [row("dvt_deit_small full cascade", cascade_run, macs[-1]),
                     row("deit_small", single_run(deit), count(deit, size)[0]),
                     row("evit_deit_small", single_run(evit), count(evit, size)[0])]
    return dict(measurements=measurements, engines=engines, thresholds=thresholds, counts=counts, macs=macs,
                expected_macs=expected, precision=precision)


def _speedup_row(label: str, num: Measurement, den: Measurement, theoretical: float, target: float,
                 target_of_: str) -> dict:
    realized = num.images_per_s / den.images_per_s
    per_round = [d / n for n, d in zip(num.round_medians, den.round_medians)]
    checked = realized / theoretical if target_of_ == "realized/theoretical" else realized
    return dict(label=label, theoretical=theoretical, realized=realized, round_min=min(per_round),
                round_max=max(per_round), realized_over_theoretical=realized / theoretical, target=target,
                target_of=target_of_, met=checked >= target)


def early_exit_ratios(m: Dict[str, Measurement], macs: Sequence[float], expected: float) -> List[dict]:
    """Theoretical (MACs) and realized (images/s) speedups of each engine measured, and EViT over DeiT."""
    target = target_of("early_exit", "realized_over_theoretical")
    deit, evit, cascade = m["deit_small"], m["evit_deit_small"], m["dvt_deit_small full cascade"]
    rows = []
    for mode in ("dynamic", "buckets"):
        engine = m.get(_engine_label(mode))
        if engine is None:
            continue
        rows.append(_speedup_row(f"engine ({mode}) / full cascade", engine, cascade, macs[-1] / expected,
                                 target, "realized/theoretical"))
        rows.append(_speedup_row(f"engine ({mode}) / deit_small", engine, deit, deit.macs_per_image / expected,
                                 target, "realized/theoretical"))
    rows.append(_speedup_row("evit_deit_small / deit_small", evit, deit, deit.macs_per_image / evit.macs_per_image,
                             target_of("early_exit", "evit_over_deit"), "realized"))
    return rows


def print_early_exit_report(env: dict, gemms: Sequence[Measurement], info: dict, ratio_rows: List[dict]) -> None:
    n = int(sum(info["counts"]))
    peaks = gemm_peaks(gemms)
    print_header(env, gemms)
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
    if "dynamic" not in info["engines"]:
        print(f"{'engine dynamic':>26}: {NO_DYNAMIC_REASON}")
    print()
    print("| model | precision | batch | median s/call | best s/call | images/s | GMACs/img | MFU | calls "
          "| cores busy |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for m in info["measurements"]:
        print(f"| {m.model} | {m.precision} | {m.batch} | {m.median_s:.2f} | {min(m.times):.2f} | "
              f"{m.images_per_s:.2f} | {m.macs_per_image / 1e9:.3f} | {100 * mfu(m, peaks):.1f}% | {len(m.times)} "
              f"| {statistics.median(m.cpu_over_wall):.2f} |")
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
    """Run the suite, print its report and (with ``--json``) write it."""
    rng = np.random.default_rng(args.exit_seed)
    images = rng.standard_normal((args.exit_batch, 3, args.image_size, args.image_size), dtype=np.float32)
    info = early_exit_measurements(args, images, device)
    measurements = info["measurements"]
    gemms = gemm_measurements(args.gemm_size, info["precision"], device)
    loads = run_interleaved(list(gemms) + measurements, args)

    ratio_rows = early_exit_ratios({m.model: m for m in measurements}, info["macs"], info["expected_macs"])
    env = header("early_exit", device, args)
    env["images"] = (f"{args.exit_batch} x 3 x {args.image_size} x {args.image_size}, standard normal, seed "
                     f"{args.exit_seed}; random weights")
    env["calls"] = (f"engines, deit_small, evit_deit_small: all {args.exit_batch} images in one call; full cascade: "
                    f"calls of {args.exit_cascade_chunk} images")
    env.update(run_lines(args, loads, "call"))
    print_early_exit_report(env, gemms, info, ratio_rows)
    if args.json:
        peaks = gemm_peaks(gemms)
        payload = dict(
            environment=env, gemm_peak_flops=peaks["fp32"], bf16_gemm_peak_flops=peaks.get("bf16"),
            thresholds=[float(t) for t in info["thresholds"]], exit_counts=[int(c) for c in info["counts"]],
            macs_per_exit=info["macs"], expected_macs=info["expected_macs"], ratios=ratio_rows,
            no_dynamic_engine=None if "dynamic" in info["engines"] else NO_DYNAMIC_REASON,
            engines={mode: dict(first_call_s=e["first_call_s"], compiled_graphs=e["engine"].compiled_graphs(),
                                stage_batches=[{str(b): c for b, c in s.items()} for s in e["engine"].stage_batches],
                                max_logit_diff=e["max_logit_diff"]) for mode, e in info["engines"].items()},
            results=[dict(m.result(), mfu=mfu(m, peaks)) for m in measurements])
        write_results(args, "early_exit", payload)
    return 0
