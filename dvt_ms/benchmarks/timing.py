"""Timed callables (:class:`Measurement`), interleaved rounds and the thread accounting of the benchmark.

Every call is timed on its own; "threads used" is the number of this process's threads that did at least
a quarter of the busiest thread's CPU work during a measurement (from /proc), "cores busy" the process
CPU time over wall time.
"""
import argparse
import logging
import math
import os
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

logger = logging.getLogger("benchmark")

__all__ = ["Measurement", "framework_label", "time_chunk", "prepare", "run_interleaved", "run_lines",
           "find"]


def framework_label(framework: str, precision: str) -> str:
    """The framework column of a row: ``framework`` in fp32, ``"<framework> <precision>"`` otherwise."""
    return framework if precision == "fp32" else f"{framework} {precision}"


@dataclass
class Measurement:
    """One timed callable: a (model, framework, batch) in a precision, or a GEMM."""

    model: str
    framework: str
    batch: int
    run: Callable[[], None]
    macs_per_image: float = 0.0
    flops_per_call: float = 0.0  # GEMM only
    precision: str = "fp32"  # what its matrix products compute in: the peak its MFU is taken against
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

    def result(self) -> dict:
        """The measurement as JSON-ready values (the ``results`` entries of ``--json``)."""
        return dict(model=self.model, framework=self.framework, batch=self.batch, precision=self.precision,
                    first_call_s=self.first_call_s, median_s=self.median_s, images_per_s=self.images_per_s,
                    macs_per_image=self.macs_per_image, times_s=self.times, round_medians_s=self.round_medians,
                    cpu_over_wall=self.cpu_over_wall, threads_used=self.threads_used)


def find(measurements: Sequence[Measurement], model: str, framework: str, batch: int) -> Optional[Measurement]:
    """The measurement of ``(model, framework, batch)``, or ``None``."""
    for m in measurements:
        if (m.model, m.framework, m.batch) == (model, framework, batch):
            return m
    return None


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
    """The compiling first call (timed on its own), then ``warmup`` discarded calls."""
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


def run_lines(args: argparse.Namespace, loads: Tuple[float, float], unit: str) -> Dict[str, str]:
    """The report lines of how the rounds ran: the load average (``loads``, as :func:`run_interleaved`
    returns it) and the timing; ``unit`` is what one timed call is ("call", "step")."""
    per_round = f"{args.iters} {unit}s" if args.iters else f">= {args.seconds:g} s (>= {args.min_iters} {unit}s)"
    return {"load average before/after": f"{loads[0]:.2f} / {loads[1]:.2f}",
            "timing": f"{args.rounds} interleaved rounds x {per_round}, warmup {args.warmup}, median per {unit}"}
