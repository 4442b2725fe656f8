"""Tests of dvt_ms.budget: the budgeted batch classification evaluation of DVT."""
import math

import numpy as np
import pytest

from dvt_ms.budget import (
    LAST_THRESHOLD,
    UNSET_THRESHOLD,
    budget_curve,
    evaluate,
    exit_assignment,
    exit_fractions,
    fit_thresholds,
)


# --------------------------------------------------------------------------------------------------
# slow per-sample reference, written step by step from the description of the algorithm
# --------------------------------------------------------------------------------------------------
def loop_fit(probs, fractions):
    n_exits, n_samples = probs.shape[0], probs.shape[1]
    conf = np.zeros((n_exits, n_samples), dtype=np.float32)
    for k in range(n_exits):
        for i in range(n_samples):
            conf[k, i] = np.max(probs[k, i])
    T = [np.float32(1e8)] * n_exits
    filtered = [0] * n_samples
    for k in range(n_exits - 1):
        out_n = math.floor(float(np.float32(np.float32(n_samples) * np.float32(fractions[k]))))
        order = sorted(range(n_samples), key=lambda i: -float(conf[k, i]))
        count = 0
        for i in order:
            if filtered[i] == 0:
                count += 1
                if count == out_n:
                    T[k] = conf[k, i]
                    break
        for i in range(n_samples):
            if conf[k, i] >= T[k]:
                filtered[i] += 1
    T[n_exits - 1] = np.float32(-1e8)
    return np.array(T, dtype=np.float32)


def loop_evaluate(probs, targets, flops, T):
    n_exits, n_samples = probs.shape[0], probs.shape[1]
    exits = [-1] * n_samples
    correct = 0
    counts = [0] * n_exits
    for i in range(n_samples):
        for k in range(n_exits):
            if np.float32(np.max(probs[k, i])) >= np.float32(T[k]):
                if int(np.argmax(probs[k, i])) == int(targets[i]):
                    correct += 1
                counts[k] += 1
                exits[i] = k
                break
    expected = 0.0
    for k in range(n_exits):
        expected += counts[k] / n_samples * float(flops[k])
    return correct * 100.0 / n_samples, expected, np.array(exits)


def random_case(rng, n_exits, n_samples, n_classes=5, levels=None):
    """Softmax-like probabilities; with ``levels`` the logits are coarse so confidences tie often."""
    logits = rng.normal(size=(n_exits, n_samples, n_classes)) * 2.0
    if levels is not None:
        logits = np.round(logits * levels / 4.0) * 4.0 / levels
    e = np.exp(logits - logits.max(axis=2, keepdims=True))
    probs = (e / e.sum(axis=2, keepdims=True)).astype(np.float32)
    targets = rng.integers(0, n_classes, size=n_samples)
    flops = np.cumsum(rng.uniform(0.5, 2.0, size=n_exits))
    return probs, targets, flops


# --------------------------------------------------------------------------------------------------
# the official outputs
# --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def visible(reference_dir):
    with np.load(reference_dir / "budget_visible.npz") as data:
        return {key: data[key] for key in data.files}


def test_reference_fitted(visible):
    res = budget_curve(
        visible["train_probs"],
        visible["train_targets"],
        visible["test_probs"],
        visible["test_targets"],
        visible["flops"],
    )
    assert res["thresholds"].dtype == np.float32
    assert res["thresholds"].shape == visible["thresholds"].shape == (59, 3)
    assert np.array_equal(res["thresholds"], visible["thresholds"])
    assert np.array_equal(res["accuracy"], visible["budget_acc"])
    np.testing.assert_allclose(res["flops"], visible["budget_flops"], rtol=0, atol=1e-4)
    assert np.array_equal(res["p"], np.arange(1, 60))


def test_reference_saved_thresholds(visible):
    res = budget_curve(
        None, None, visible["test_probs"], visible["test_targets"], visible["flops"],
        thresholds=visible["thresholds"],
    )
    assert np.array_equal(res["thresholds"], visible["thresholds"])
    assert np.array_equal(res["accuracy"], visible["budget_acc"])
    np.testing.assert_allclose(res["flops"], visible["budget_flops"], rtol=0, atol=1e-4)


def test_reference_single_step(visible):
    fr = exit_fractions(7, 3)
    t = fit_thresholds(visible["train_probs"], visible["train_targets"], fr)
    assert np.array_equal(t, visible["thresholds"][6])
    acc, fl = evaluate(visible["test_probs"], visible["test_targets"], visible["flops"], t)
    assert acc == visible["budget_acc"][6]
    assert abs(fl - visible["budget_flops"][6]) < 1e-4


# --------------------------------------------------------------------------------------------------
# the float32 exit fractions
# --------------------------------------------------------------------------------------------------
def test_fractions_match_float64():
    """The float32 fractions match the float64 computation to float32 rounding (relative 1e-5: the exponent
    k * log(q) reaches 30, and exp multiplies its rounding error by it). Machine-independent, unlike a
    comparison with torch's float32 exp/log, whose last bits differ between CPUs; the official code's own
    float32 results are checked end to end against budget_visible.npz above."""
    for n in range(1, 11):
        k = np.arange(1, n + 1, dtype=np.float64)
        for p in range(1, 60):
            w = np.exp(np.log(float(np.float32(p / 20))) * k)
            exact = (w / w.sum()).astype(np.float32)
            np.testing.assert_allclose(exit_fractions(p, n), exact, rtol=1e-5, atol=0)


def test_fractions_basic():
    for n in (1, 2, 3, 4):
        fr = exit_fractions(20, n)  # q = 1: uniform
        assert np.array_equal(fr, np.full(n, 1.0 / n, dtype=np.float32))
    fr = exit_fractions(1, 3)  # q = 0.05: almost all at the first exit
    assert fr[0] > 0.9 and np.all(np.diff(fr) < 0)
    fr = exit_fractions(59, 3)  # q > 1: most at the last exit
    assert np.all(np.diff(fr) > 0)
    assert abs(float(fr.sum()) - 1.0) < 1e-6
    assert exit_fractions(2.5, 3).dtype == np.float32  # non-integer p is allowed


# --------------------------------------------------------------------------------------------------
# vectorized versus the per-sample loop
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n_exits", [2, 3, 4])
@pytest.mark.parametrize("n_samples", [1, 7, 37, 101, 250])
@pytest.mark.parametrize("levels", [None, 1, 3])
def test_cross_check_random(n_exits, n_samples, levels):
    rng = np.random.default_rng(1000 * n_exits + n_samples + (levels or 0))
    probs, targets, flops = random_case(rng, n_exits, n_samples, levels=levels)
    for p in (1, 2, 5, 13, 20, 33, 47, 59):
        fr = exit_fractions(p, n_exits)
        t_ref = loop_fit(probs, fr)
        t = fit_thresholds(probs, targets, fr)
        assert t.dtype == np.float32
        assert np.array_equal(t, t_ref), (p, t, t_ref)
        acc_ref, fl_ref, exits_ref = loop_evaluate(probs, targets, flops, t_ref)
        acc, fl = evaluate(probs, targets, flops, t)
        assert acc == acc_ref
        assert abs(fl - fl_ref) < 1e-9
        assert np.array_equal(exit_assignment(probs, t), exits_ref)


@pytest.mark.parametrize("n_exits", [2, 3, 4])
def test_cross_check_budget_curve(n_exits):
    rng = np.random.default_rng(7 + n_exits)
    train = random_case(rng, n_exits, 61, levels=2)
    test = random_case(rng, n_exits, 43, levels=2)
    flops = test[2]
    res = budget_curve(train[0], train[1], test[0], test[1], flops)
    for i, p in enumerate(range(1, 60)):
        t_ref = loop_fit(train[0], exit_fractions(p, n_exits))
        assert np.array_equal(res["thresholds"][i], t_ref)
        acc_ref, fl_ref, _ = loop_evaluate(test[0], test[1], flops, t_ref)
        assert res["accuracy"][i] == acc_ref
        assert abs(res["flops"][i] - fl_ref) < 1e-9


def test_degenerate_out_n_zero():
    rng = np.random.default_rng(3)
    probs, targets, flops = random_case(rng, 3, 9)
    fr = exit_fractions(1, 3)  # 9 * fr[1] < 1, so no sample is sent to exit 2 on purpose
    assert math.floor(float(np.float32(9) * fr[1])) == 0
    t = fit_thresholds(probs, targets, fr)
    assert np.array_equal(t, loop_fit(probs, fr))
    assert t[1] == UNSET_THRESHOLD and t[2] == LAST_THRESHOLD
    # every fraction rounding down to zero: everything goes to the last exit
    fr0 = np.array([0.0, 0.0, 1.0], dtype=np.float32)
    t0 = fit_thresholds(probs, targets, fr0)
    assert np.array_equal(t0, np.array([1e8, 1e8, -1e8], dtype=np.float32))
    assert np.array_equal(exit_assignment(probs, t0), np.full(9, 2))
    assert evaluate(probs, targets, flops, t0)[1] == pytest.approx(flops[2])


def test_integer_landing_fractions():
    # exact products: N * fraction is an integer with no rounding at all
    rng = np.random.default_rng(11)
    probs, targets, flops = random_case(rng, 3, 8, levels=2)
    for fr in ([0.5, 0.25, 0.25], [0.25, 0.5, 0.25], [0.125, 0.875, 0.0], [1.0, 0.0, 0.0]):
        fr = np.array(fr, dtype=np.float32)
        assert np.array_equal(fit_thresholds(probs, targets, fr), loop_fit(probs, fr))
    # steps p and sizes N for which float32(N * fraction) is exactly an integer, although the
    # fraction itself is not a short binary number: floor must not lose one sample there
    found = 0
    for n_exits in (2, 3, 4):
        for p in range(1, 60):
            fr = exit_fractions(p, n_exits)
            for n_samples in range(2, 120):
                prods = np.float32(n_samples) * fr[:-1]
                exact_frac = np.array([float(f) * n_samples for f in fr[:-1]])
                hit = (prods == np.round(prods)) & (exact_frac != np.round(exact_frac))
                if hit.any() and found < 12:
                    found += 1
                    probs, targets, _ = random_case(rng, n_exits, n_samples)
                    t = fit_thresholds(probs, targets, fr)
                    assert np.array_equal(t, loop_fit(probs, fr)), (p, n_samples, n_exits)
                    # the integer count lands exactly: exit 0 takes that many distinct samples
                    k = int(np.argmax(hit))
                    if k == 0:
                        conf0 = probs[0].max(axis=1)
                        assert np.count_nonzero(conf0 >= t[0]) == int(prods[0])
    assert found >= 5


def test_all_ties_and_unreachable_count():
    # all confidences equal: exit 0 takes everything, so the count at exit 1 is never reached
    probs = np.full((3, 10, 4), 0.25, dtype=np.float32)
    targets = np.zeros(10, dtype=np.int64)
    fr = np.array([0.3, 0.3, 0.4], dtype=np.float32)
    t = fit_thresholds(probs, targets, fr)
    assert np.array_equal(t, loop_fit(probs, fr))
    assert t[0] == np.float32(0.25) and t[1] == UNSET_THRESHOLD
    acc, fl = evaluate(probs, targets, [1.0, 2.0, 3.0], t)
    assert acc == 100.0  # argmax takes the first maximum, class 0
    assert fl == pytest.approx(1.0)


def test_no_exit_taken_counts_as_wrong_and_free():
    rng = np.random.default_rng(5)
    probs, targets, flops = random_case(rng, 2, 30)
    t = np.array([0.9, 0.95], dtype=np.float32)  # not the usual -1e8 for the last exit
    acc_ref, fl_ref, exits_ref = loop_evaluate(probs, targets, flops, t)
    assert (exits_ref == -1).any()
    assert np.array_equal(exit_assignment(probs, t), exits_ref)
    acc, fl = evaluate(probs, targets, flops, t)
    assert acc == acc_ref and abs(fl - fl_ref) < 1e-12


def test_threshold_comparison_is_float32():
    # a float64 threshold just above a float32 confidence rounds onto it, as in the reference
    probs = np.zeros((2, 1, 2), dtype=np.float32)
    probs[:, 0] = [0.7, 0.3]
    t = np.array([float(np.float32(0.7)) + 1e-12, -1e8])
    assert exit_assignment(probs, t)[0] == 0


def test_vectorized_speed():
    import time

    rng = np.random.default_rng(0)
    probs, targets, flops = random_case(rng, 3, 20000, n_classes=10)
    start = time.perf_counter()
    budget_curve(probs, targets, probs, targets, flops, steps=range(1, 11))
    assert time.perf_counter() - start < 3.0


# --------------------------------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------------------------------
def test_errors():
    rng = np.random.default_rng(0)
    probs, targets, flops = random_case(rng, 3, 10)
    fr = exit_fractions(5, 3)
    t = fit_thresholds(probs, targets, fr)

    with pytest.raises(ValueError, match=r"probs must be 3-D.*\(3, 10\)"):
        fit_thresholds(probs[..., 0], targets, fr)
    with pytest.raises(ValueError, match=r"targets has length 9.*N=10"):
        evaluate(probs, targets[:9], flops, t)
    with pytest.raises(ValueError, match=r"targets must be 1-D"):
        evaluate(probs, targets[:, None], flops, t)
    with pytest.raises(ValueError, match=r"flops has length 2.*n_exits=3"):
        evaluate(probs, targets, flops[:2], t)
    with pytest.raises(ValueError, match=r"thresholds has length 4.*n_exits=3"):
        evaluate(probs, targets, flops, np.zeros(4))
    with pytest.raises(ValueError, match=r"thresholds has length 2"):
        exit_assignment(probs, t[:2])
    with pytest.raises(ValueError, match=r"fractions has length 2"):
        fit_thresholds(probs, targets, fr[:2])
    for bad_p in (0, -1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match=r"p must be finite and > 0"):
            exit_fractions(bad_p, 3)
    with pytest.raises(ValueError, match=r"n_exits must be >= 1, got 0"):
        exit_fractions(5, 0)
    with pytest.raises(TypeError, match=r"n_exits must be an int"):
        exit_fractions(5, 2.0)
    nan_probs = probs.copy()
    nan_probs[1, 4, 2] = np.nan
    with pytest.raises(ValueError, match=r"probs contains NaN.*\(1, 4, 2\)"):
        fit_thresholds(nan_probs, targets, fr)
    with pytest.raises(ValueError, match=r"probs contains NaN"):
        evaluate(nan_probs, targets, flops, t)
    with pytest.raises(ValueError, match=r"test_probs must be 3-D"):
        budget_curve(probs, targets, probs[0], targets, flops)
    with pytest.raises(ValueError, match=r"train_probs has 2 exits but test_probs has 3"):
        budget_curve(probs[:2], targets, probs, targets, flops)
    with pytest.raises(ValueError, match=r"thresholds must have shape.*\(59, 3\).*\(58, 3\)"):
        budget_curve(None, None, probs, targets, flops, thresholds=np.zeros((58, 3)))
    with pytest.raises(ValueError, match=r"steps must not be empty"):
        budget_curve(probs, targets, probs, targets, flops, steps=[])
    with pytest.raises(ValueError, match=r"p must be finite and > 0, got 0"):
        budget_curve(probs, targets, probs, targets, flops, steps=[0, 1])
