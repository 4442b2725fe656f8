"""Budgeted batch classification, computed bit-for-bit like the official DVT evaluation.

A cascade with ``n_exits`` exits gives each sample a softmax output at every exit. For a budget step
``p``, the exits get a geometric share of the samples (:func:`exit_fractions`). Confidence thresholds
are fitted on a training set so that these shares leave at each exit (:func:`fit_thresholds`). Then the
thresholds are applied to a test set (:func:`evaluate`). Sweeping ``p`` gives the accuracy/FLOPs curve
(:func:`budget_curve`).

Everything here is numpy in, numpy out, and vectorized over samples. The arithmetic is float32 wherever
the official PyTorch code uses float32, because the results depend on it. The exit fractions feed
``floor(N * fraction)``, so an error of one ulp in a fraction can move a threshold by one sample.

Scope of the exactness: the thresholds and the accuracy are reproduced exactly. The expected FLOPs are
summed in float64, which is at least as accurate as the official float32 sum and agrees with it to
float32 rounding.
"""
from __future__ import annotations

import math
from typing import Iterable, Optional, Sequence

import numpy as np

__all__ = [
    "exit_fractions",
    "fit_thresholds",
    "exit_assignment",
    "evaluate",
    "budget_curve",
    "UNSET_THRESHOLD",
    "LAST_THRESHOLD",
]

#: Threshold of an exit that no sample is sent to ("never exit here").
UNSET_THRESHOLD = np.float32(1e8)
#: Threshold of the last exit ("always exit here").
LAST_THRESHOLD = np.float32(-1e8)

# The reference computes log and exp in float32 with PyTorch's CPU kernels. Those are accurate to about
# one ulp but are not always correctly rounded. The helpers below start from the correctly rounded
# result (double precision libm, then rounding to float32). They then apply the deviations of PyTorch's
# kernels that were measured for every input reached by exit_fractions(p, n) with integer p in 1..59
# and n in 1..10. Keys are the float32 bit patterns of the inputs. Values are the offsets in ulps of the
# PyTorch result from the correctly rounded one. Other inputs get the correctly rounded value, which
# can differ from PyTorch's by one ulp.
_LOG_ULP_OFFSETS = {
    0x3EE66666: -1,  # log(0.45)
    0x3F266666: +1,  # log(0.65)
    0x3F400000: -1,  # log(0.75)
    0x3F666666: -1,  # log(0.9)
    0x3FA66666: -1,  # log(1.3)
    0x3FC00000: +1,  # log(1.5)
    0x3FCCCCCD: +1,  # log(1.6)
    0x3FE66666: +1,  # log(1.8)
}
_EXP_ULP_OFFSETS = {
    0xBF4C6B00: +1,  # p=9,  k=1
    0xC002C577: +1,  # p=12, k=4
    0xC089D9BE: -1,  # p=13, k=10
    0x3ED6ACA0: -1,  # p=23, k=3
    0x40B12C69: -1,  # p=37, k=9
    0x40E5B56F: +1,  # p=41, k=10
    0x3FCF991F: +1,  # p=45, k=2
    0x4101BFB3: +1,  # p=45, k=10
}


def _f32_bits(x: np.float32) -> int:
    return int(np.array(x, dtype=np.float32).view(np.uint32))


def _shift_ulps(x: np.float32, offset: int) -> np.float32:
    """Move a finite float32 ``x`` by ``offset`` ulps (same sign convention as its bit pattern)."""
    bits = np.array(x, dtype=np.float32).view(np.int32)
    return np.float32((bits + np.int32(offset)).view(np.float32))


def _logf(x: np.float32) -> np.float32:
    """Natural log in float32, as PyTorch's CPU kernel gives it (see ``_LOG_ULP_OFFSETS``)."""
    x = np.float32(x)
    y = np.float32(math.log(float(x)))
    offset = _LOG_ULP_OFFSETS.get(_f32_bits(x), 0)
    return _shift_ulps(y, offset) if offset else y


def _expf(x: np.float32) -> np.float32:
    """Exponential in float32, as PyTorch's CPU kernel gives it (see ``_EXP_ULP_OFFSETS``)."""
    x = np.float32(x)
    try:
        y = np.float32(math.exp(float(x)))
    except OverflowError:
        return np.float32(np.inf)
    offset = _EXP_ULP_OFFSETS.get(_f32_bits(x), 0)
    return _shift_ulps(y, offset) if offset and np.isfinite(y) and y != 0 else y


def _sum_f32(values: np.ndarray) -> np.float32:
    """Float32 sum of a short vector, adding in the order of PyTorch's CPU ``sum`` (up to 11 values).

    Blocks of 8 values go into 8 running lane sums. The remaining values go in blocks of 4 into 4
    running sums, and any last values into the first of those. The 4 sums are added onto lanes 0..3,
    then the lanes are added left to right. For up to 4 values this is a plain left-to-right sum. For
    12 or more values the order is only approximately PyTorch's.
    """
    values = np.asarray(values, dtype=np.float32)
    n = values.shape[0]
    lanes = [np.float32(0)] * 8
    full = n // 8 * 8
    for i in range(full):
        lanes[i % 8] = np.float32(lanes[i % 8] + values[i])
    rest = values[full:]
    small = [np.float32(0)] * 4
    blocks = rest.shape[0] // 4 * 4
    for j in range(blocks):
        small[j % 4] = np.float32(small[j % 4] + rest[j])
    for x in rest[blocks:]:
        small[0] = np.float32(small[0] + x)
    for j in range(4):
        lanes[j] = np.float32(lanes[j] + small[j])
    total = np.float32(0)
    for x in lanes:
        total = np.float32(total + x)
    return total


# --------------------------------------------------------------------------------------------------
# input validation
# --------------------------------------------------------------------------------------------------
def _check_n_exits(n_exits) -> int:
    if isinstance(n_exits, (bool, np.bool_)) or not isinstance(n_exits, (int, np.integer)):
        raise TypeError(f"n_exits must be an int, got {type(n_exits).__name__} ({n_exits!r})")
    if n_exits < 1:
        raise ValueError(f"n_exits must be >= 1, got {n_exits}")
    return int(n_exits)


def _check_probs(probs, name: str = "probs") -> np.ndarray:
    if probs is None:
        raise ValueError(f"{name} is required")
    arr = np.asarray(probs)
    if arr.ndim != 3:
        raise ValueError(f"{name} must be 3-D [n_exits, N, C], got shape {arr.shape}")
    if arr.shape[0] < 1 or arr.shape[1] < 1 or arr.shape[2] < 1:
        raise ValueError(f"{name} must have n_exits, N and C all >= 1, got shape {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise TypeError(f"{name} must be a real numeric array, got dtype {arr.dtype}")
    arr = arr.astype(np.float32, copy=False)
    if np.isnan(arr).any():
        bad = np.argwhere(np.isnan(arr))[0]
        raise ValueError(f"{name} contains NaN (first at index {tuple(int(i) for i in bad)})")
    return arr


def _check_targets(targets, n_samples: int, name: str = "targets") -> np.ndarray:
    if targets is None:
        raise ValueError(f"{name} is required")
    arr = np.asarray(targets)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D [N], got shape {arr.shape}")
    if arr.shape[0] != n_samples:
        raise ValueError(f"{name} has length {arr.shape[0]}, but probs has N={n_samples} samples")
    if np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise ValueError(f"{name} contains non-finite values")
        return arr.astype(np.int64)  # the reference compares int(target)
    if not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{name} must be integer class labels, got dtype {arr.dtype}")
    return arr.astype(np.int64, copy=False)


def _check_vector(values, n_exits: int, name: str, dtype) -> np.ndarray:
    if values is None:
        raise ValueError(f"{name} is required")
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D [n_exits], got shape {arr.shape}")
    if arr.shape[0] != n_exits:
        raise ValueError(f"{name} has length {arr.shape[0]}, but probs has n_exits={n_exits}")
    arr = arr.astype(dtype)
    if np.isnan(arr).any():
        raise ValueError(f"{name} contains NaN: {arr}")
    return arr


# --------------------------------------------------------------------------------------------------
# the algorithm
# --------------------------------------------------------------------------------------------------
def exit_fractions(p: float, n_exits: int) -> np.ndarray:
    """Share of the samples to leave at each exit for budget step ``p``, as float32 ``[n_exits]``.

    With ``q = float32(p / 20)`` the weights are ``exp(log(q) * k)`` for ``k = 1..n_exits``, all in
    float32. They are divided by their float32 sum. The result is bit-identical to PyTorch's float32
    computation for integer ``p`` in 1..59 and ``n_exits`` up to 10. Elsewhere it may differ by an ulp.
    """
    n_exits = _check_n_exits(n_exits)
    try:
        p_val = float(p)
    except (TypeError, ValueError):
        raise TypeError(f"p must be a real number, got {type(p).__name__} ({p!r})") from None
    if not math.isfinite(p_val) or p_val <= 0:
        raise ValueError(f"p must be finite and > 0, got {p!r}")
    q = np.float32(p_val / 20)
    if q <= 0:
        raise ValueError(f"p={p!r} is too small: p / 20 rounds to 0 in float32")
    log_q = _logf(q)
    ks = np.arange(1, n_exits + 1, dtype=np.float32)
    exponents = ks * log_q  # float32 * float32 -> float32, rounded once per element
    weights = np.array([_expf(x) for x in exponents], dtype=np.float32)
    total = _sum_f32(weights)
    if not np.isfinite(total) or total == 0:
        raise ValueError(f"exit weights for p={p!r}, n_exits={n_exits} over- or underflow float32")
    return (weights / total).astype(np.float32)


def fit_thresholds(probs, targets, fractions) -> np.ndarray:
    """Confidence thresholds (float32 ``[n_exits]``) that send ``fractions`` of the samples to each exit.

    ``probs`` is ``[n_exits, N, C]`` (softmax outputs; cast to float32). ``targets`` is not used by the
    algorithm but is checked for length. For each exit ``k`` but the last, the threshold is the
    confidence of the ``floor(N * fractions[k])``-th most confident sample that no earlier exit has
    taken. It stays at 1e8 if that count is 0 or cannot be reached. The last threshold is -1e8.
    """
    probs = _check_probs(probs)
    n_exits, n_samples, _ = probs.shape
    if targets is not None:
        _check_targets(targets, n_samples)
    fractions = _check_vector(fractions, n_exits, "fractions", np.float32)

    conf = probs.max(axis=2)  # [n_exits, N]
    thresholds = np.full(n_exits, UNSET_THRESHOLD, dtype=np.float32)
    filtered = np.zeros(n_samples, dtype=bool)
    n_f32 = np.float32(n_samples)
    for k in range(n_exits - 1):
        out_n = math.floor(float(np.float32(n_f32 * fractions[k])))
        if out_n > 0:
            order = np.argsort(-conf[k], kind="stable")  # descending confidence
            remaining = ~filtered[order]
            count = np.cumsum(remaining)
            if count[-1] >= out_n:
                # first position where the running count of remaining samples reaches out_n; the
                # count only grows at remaining samples, so this sample is itself remaining
                pos = int(np.searchsorted(count, out_n, side="left"))
                thresholds[k] = conf[k, order[pos]]
        filtered |= conf[k] >= thresholds[k]
    thresholds[-1] = LAST_THRESHOLD
    return thresholds


def exit_assignment(probs, thresholds) -> np.ndarray:
    """Index of the exit each sample leaves at (int64 ``[N]``).

    A sample leaves at the first exit ``k`` with ``max(probs[k]) >= thresholds[k]``, compared in
    float32. A sample that no exit accepts (possible only if the last threshold is not -1e8) gets -1;
    :func:`evaluate` counts it as wrong and as costing nothing, like the reference.
    """
    probs = _check_probs(probs)
    n_exits = probs.shape[0]
    thresholds = _check_vector(thresholds, n_exits, "thresholds", np.float32)
    accepted = probs.max(axis=2) >= thresholds[:, None]  # [n_exits, N]
    first = np.argmax(accepted, axis=0)
    return np.where(accepted.any(axis=0), first, -1).astype(np.int64)


def evaluate(probs, targets, flops, thresholds) -> tuple[float, float]:
    """Top-1 accuracy in percent and expected FLOPs of the early-exit cascade on ``probs``.

    ``accuracy = correct * 100.0 / N``, with a sample counted correct if the argmax at its exit equals
    its target. ``expected_flops = sum_k (count_k / N) * flops[k]``.
    """
    probs = _check_probs(probs)
    n_exits, n_samples, _ = probs.shape
    targets = _check_targets(targets, n_samples)
    flops = _check_vector(flops, n_exits, "flops", np.float64)
    exits = exit_assignment(probs, thresholds)

    taken = exits >= 0
    idx = np.arange(n_samples)
    preds = probs.argmax(axis=2)  # [n_exits, N], first maximum on ties
    correct = int(np.count_nonzero(preds[exits[taken], idx[taken]] == targets[taken]))
    counts = np.bincount(exits[taken], minlength=n_exits)
    accuracy = correct * 100.0 / n_samples
    expected_flops = float(sum((counts[k] / n_samples) * flops[k] for k in range(n_exits)))
    return accuracy, expected_flops


def budget_curve(
    train_probs,
    train_targets,
    test_probs,
    test_targets,
    flops,
    steps: Iterable[float] = range(1, 60),
    thresholds: Optional[Sequence] = None,
) -> dict:
    """Accuracy/FLOPs curve over the budget steps ``p`` in ``steps``.

    Thresholds are fitted on the train set for each step, or, if ``thresholds``
    (``[n_steps, n_exits]``) is given, taken from it ("saved thresholds" mode; the train arguments may
    then be None). Returns a dict with ``p`` ``[n_steps]``, ``thresholds`` ``[n_steps, n_exits]``
    float32, ``accuracy`` ``[n_steps]`` (percent) and ``flops`` ``[n_steps]``.
    """
    steps = list(steps)
    if not steps:
        raise ValueError("steps must not be empty")
    test_probs = _check_probs(test_probs, "test_probs")
    n_exits, n_test, _ = test_probs.shape
    test_targets = _check_targets(test_targets, n_test, "test_targets")
    flops = _check_vector(flops, n_exits, "flops", np.float64)

    if thresholds is None:
        train_probs = _check_probs(train_probs, "train_probs")
        if train_probs.shape[0] != n_exits:
            raise ValueError(
                f"train_probs has {train_probs.shape[0]} exits but test_probs has {n_exits}"
            )
        _check_targets(train_targets, train_probs.shape[1], "train_targets")
        table = np.stack(
            [fit_thresholds(train_probs, None, exit_fractions(p, n_exits)) for p in steps]
        )
    else:
        table = np.asarray(thresholds)
        if table.shape != (len(steps), n_exits):
            raise ValueError(
                f"thresholds must have shape [n_steps, n_exits] = {(len(steps), n_exits)}, "
                f"got {table.shape}"
            )
        table = table.astype(np.float32)
        if np.isnan(table).any():
            raise ValueError("thresholds contains NaN")
        for p in steps:  # the steps are still validated so that p is meaningful
            exit_fractions(p, n_exits)

    accuracy = np.empty(len(steps), dtype=np.float64)
    exp_flops = np.empty(len(steps), dtype=np.float64)
    for i in range(len(steps)):
        accuracy[i], exp_flops[i] = evaluate(test_probs, test_targets, flops, table[i])
    return {
        "p": np.asarray(steps),
        "thresholds": table,
        "accuracy": accuracy,
        "flops": exp_flops,
    }
