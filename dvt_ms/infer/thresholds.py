"""Exit thresholds: checked, fitted to exit fractions, read from a checkpoint's budget table, and summed up."""
from typing import Any, Mapping, Sequence

import numpy as np
from mindspore import Tensor

from ..budget import LAST_THRESHOLD, UNSET_THRESHOLD, fit_thresholds

__all__ = ["check_thresholds", "thresholds_for_fractions", "budget_thresholds", "exit_fraction_summary"]


def check_thresholds(thresholds: Any, n_exits: int) -> np.ndarray:
    """Validate per-exit thresholds: 1-D, ``n_exits`` long, no NaN, and the last exit takes everyone."""
    if isinstance(thresholds, Tensor):
        thresholds = thresholds.asnumpy()
    try:
        arr = np.asarray(thresholds, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"thresholds must be a sequence of numbers, got {thresholds!r}") from None
    if arr.ndim != 1:
        raise ValueError(f"thresholds must be 1-D (one per exit), got shape {arr.shape}")
    if arr.shape[0] != n_exits:
        raise ValueError(f"thresholds has {arr.shape[0]} entries but the model has {n_exits} exits")
    if np.isnan(arr).any():
        raise ValueError(f"thresholds contains NaN at exit {int(np.flatnonzero(np.isnan(arr))[0])}")
    if arr[-1] > 0:
        raise ValueError(f"the last threshold is {arr[-1]:g}; it must be <= 0 so that every sample leaves at "
                         f"the last exit (the official value is {float(LAST_THRESHOLD):g})")
    return arr.astype(np.float32)


def thresholds_for_fractions(probs: Any, fractions: Sequence[float], *, midpoints: bool = True) -> np.ndarray:
    """Thresholds that send ``fractions`` of the samples in ``probs`` ``[n_exits, N, C]`` to each exit.

    The thresholds are those of :func:`dvt_ms.budget.fit_thresholds`: ``floor(N * fractions[k])`` of the
    samples not taken earlier leave at exit ``k``, the rest at the last exit. Such a threshold equals
    the confidence of one sample, which a recomputation can move by an ulp across it. With
    ``midpoints`` each threshold is lowered to halfway between that confidence and the next lower one
    among the samples still in the cascade, which gives the same assignment on ``probs`` with a margin.
    """
    probs = np.asarray(probs, dtype=np.float32)
    fractions = np.asarray(fractions, dtype=np.float64)
    if fractions.ndim != 1 or probs.ndim != 3 or fractions.shape[0] != probs.shape[0]:
        raise ValueError(f"fractions (shape {fractions.shape}) must have one entry per exit of probs "
                         f"[n_exits, N, C] (shape {probs.shape})")
    if (fractions < 0).any() or not np.isclose(fractions.sum(), 1.0, atol=1e-6):
        raise ValueError(f"fractions must be >= 0 and sum to 1, got {fractions.tolist()}")
    thresholds = fit_thresholds(probs, None, fractions.astype(np.float32))
    if not midpoints:
        return thresholds
    conf = probs.max(axis=2)
    taken = np.zeros(conf.shape[1], dtype=bool)
    for k in range(probs.shape[0] - 1):
        if thresholds[k] != UNSET_THRESHOLD:
            below = conf[k][~taken & (conf[k] < thresholds[k])]
            if below.size:
                middle = np.float32((np.float64(thresholds[k]) + np.float64(below.max())) / 2)
                if below.max() < middle <= thresholds[k]:
                    thresholds[k] = middle
        taken |= conf[k] >= thresholds[k]
    return thresholds


def budget_thresholds(metadata: Mapping[str, Any], budget_step: int, n_exits: int,
                      source: str = "the checkpoint") -> np.ndarray:
    """Row ``budget_step`` (1-based, as the official p = 1..59) of the metadata's ``dynamic_threshold``."""
    if "dynamic_threshold" not in metadata:
        raise ValueError(f"{source} has no 'dynamic_threshold' table; pass --thresholds instead")
    table = np.asarray(metadata["dynamic_threshold"], dtype=np.float64)
    if table.ndim != 2 or table.shape[1] != n_exits:
        raise ValueError(f"{source}: 'dynamic_threshold' must have shape [steps, {n_exits}], got {table.shape}")
    if isinstance(budget_step, bool) or not 1 <= int(budget_step) <= table.shape[0] \
            or int(budget_step) != budget_step:
        raise ValueError(f"budget step must be an integer in 1..{table.shape[0]}, got {budget_step!r}")
    try:
        return check_thresholds(table[int(budget_step) - 1], n_exits)
    except ValueError as exc:
        raise ValueError(f"{source}: dynamic_threshold row of budget step {budget_step}: {exc}") from None


def exit_fraction_summary(exits: np.ndarray, n_exits: int) -> str:
    """``"exit 1: 60.0%, exit 2: 25.0%, ..."`` for a log line."""
    counts = np.bincount(np.asarray(exits), minlength=n_exits)
    total = max(int(counts.sum()), 1)
    return ", ".join(f"exit {k + 1}: {100.0 * c / total:.1f}%" for k, c in enumerate(counts))
