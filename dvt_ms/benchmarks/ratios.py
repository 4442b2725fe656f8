"""The benchmark's targets (:data:`TARGETS`, one table for every suite) and its throughput ratios."""
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

from .timing import Measurement, find

__all__ = ["TARGETS", "Pair", "target_of", "ratio_row", "ratio_rows", "print_ratio_table"]

#: Minimum ratios per suite and ratio key: ``(batch size, minimum)`` for the throughput ratios of the
#: inference and train suites, a minimum for the early-exit speedups (realized / theoretical for the
#: engines, realized for EViT). A ratio without an entry (or at another batch size) has no target.
TARGETS: Dict[str, Dict[str, Union[float, Tuple[int, float]]]] = {
    "inference": {
        "ms_over_torch": (8, 1.3),
        "dvt_over_deit": (8, 0.5),
        "bf16_ms_over_torch": (8, 1.2),
        "bf16_ms_over_timm": (8, 1.2),
        "bf16_cascade_over_torch_cascade": (8, 1.5),
    },
    "train": {
        "ms_over_torch": (8, 1.0),
        "bf16_ms_over_torch": (8, 1.0),
    },
    "early_exit": {
        "realized_over_theoretical": 0.85,
        "evit_over_deit": 1.4,
    },
}


class Pair(NamedTuple):
    """A ratio: the images/s of the ``numerator`` (model, framework) row over the ``denominator``'s."""

    key: str
    label: str
    numerator: Tuple[str, str]
    denominator: Tuple[str, str]


def target_of(suite: str, key: str, batch: Optional[int] = None) -> Optional[float]:
    """The minimum of ratio ``key`` in ``suite`` (at ``batch`` where the target names one), else ``None``."""
    if suite not in TARGETS:
        raise KeyError(f"no targets for suite {suite!r}; known: {', '.join(TARGETS)}")
    entry = TARGETS[suite].get(key)
    if entry is None or not isinstance(entry, tuple):
        return entry
    target_batch, minimum = entry
    return minimum if batch == target_batch else None


def ratio_row(key: str, label: str, num: Measurement, den: Measurement, target: Optional[float]) -> dict:
    """``num``'s images/s over ``den``'s: overall medians, per-round range and fastest calls, with its target."""
    per_round = [d / n for n, d in zip(num.round_medians, den.round_medians)]
    value = num.images_per_s / den.images_per_s
    return dict(key=key, label=label, batch=num.batch, ratio=value, round_min=min(per_round),
                round_max=max(per_round), best_call_ratio=min(den.times) / min(num.times), target=target,
                met=None if target is None else value >= target)


def ratio_rows(suite: str, measurements: Sequence[Measurement], pairs: Sequence[Pair],
               batch_sizes: Sequence[int]) -> List[dict]:
    """Every pair at every batch size where both of its rows were measured."""
    out = []
    for pair in pairs:
        for batch in batch_sizes:
            a, b = find(measurements, *pair.numerator, batch), find(measurements, *pair.denominator, batch)
            if a is not None and b is not None:
                out.append(ratio_row(pair.key, pair.label, a, b, target_of(suite, pair.key, batch)))
    return out


def print_ratio_table(rows: Sequence[dict], title: str, best_column: str) -> None:
    """Markdown table of throughput ratios with their targets."""
    print(f"| {title} | batch | median | per-round range | {best_column} | target | met (median) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        target = "-" if r["target"] is None else f">= {r['target']}"
        met = "-" if r["met"] is None else ("yes" if r["met"] else "NO")
        print(f"| {r['label']} | {r['batch']} | {r['ratio']:.2f} | {r['round_min']:.2f}-{r['round_max']:.2f} "
              f"| {r['best_call_ratio']:.2f} | {target} | {met} |")
