"""Evaluation of single- and multi-exit models: anytime accuracy and budgeted batch classification.

The network runs once over a dataset; every exit's softmax output is kept as ``probs [n_exits, N, C]``
(float32, as the budgeted evaluation of :mod:`dvt_ms.budget` needs). From these come the per-exit top-1
and top-5 accuracy ("anytime classification") and the accuracy/cost curve of the early-exit cascade
("budgeted batch classification") for budget steps p = 1..59.

Costs. ``dvt_ms.flops.count`` gives multiply-accumulates per image; they are reported as GMACs (1e9
MACs), which is what papers on DeiT/T2T-ViT/DVT call "GFLOPs". The ``flops`` stored in an official DVT
checkpoint are kept as stored, in their own units, and reported separately.
"""
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import mindspore as ms

from .budget import budget_curve, exit_assignment
from .flops import count
from .models import model_image_size

logger = logging.getLogger(__name__)

__all__ = [
    "BUDGET_STEPS", "Predictions", "exit_gmacs", "softmax", "pad_batch", "exit_logits", "collect_predictions",
    "topk_accuracy", "topk_counts", "anytime_results", "stored_flops", "stored_thresholds", "saved_results",
    "fit_subset_indices", "budget_results",
]

#: The budget steps p of the official evaluation.
BUDGET_STEPS = tuple(range(1, 60))


@dataclass
class Predictions:
    """Softmax outputs of every exit over a dataset, with the labels and what was skipped."""

    probs: np.ndarray  # [n_exits, N, C] float32
    targets: np.ndarray  # [N] int64
    num_files: int = 0
    skipped: int = 0
    skipped_files: List[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------------------
# the model
# --------------------------------------------------------------------------------------------------


def exit_gmacs(net) -> List[float]:
    """Cumulative GMACs (1e9 multiply-accumulates) per image at each exit."""
    return [m / 1e9 for m in count(net, model_image_size(net))]


# --------------------------------------------------------------------------------------------------
# running the network
# --------------------------------------------------------------------------------------------------
def softmax(logits: np.ndarray) -> np.ndarray:
    """Float32 softmax over the last axis."""
    z = np.asarray(logits, dtype=np.float32)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)


def pad_batch(images: np.ndarray, batch_size: Optional[int]) -> Tuple[np.ndarray, int]:
    """``(images zero-padded to batch_size rows, real row count)``, so a graph-mode network compiles one shape."""
    count = images.shape[0]
    if batch_size and count < batch_size:
        images = np.concatenate([images, np.zeros((batch_size - count,) + images.shape[1:], images.dtype)])
    return images, count


def exit_logits(net, images: np.ndarray, batch_size: Optional[int] = None) -> List[np.ndarray]:
    """Logits of every exit for a batch ``[B, 3, H, W]`` as numpy arrays.

    With ``batch_size``, a smaller batch runs zero-padded (see :func:`pad_batch`) and the padding rows
    are dropped from the outputs.
    """
    images, count = pad_batch(images, batch_size)
    out = net(ms.Tensor(np.ascontiguousarray(images, dtype=np.float32)))
    outputs = out if isinstance(out, (tuple, list)) else (out,)
    return [o.asnumpy()[:count].astype(np.float32, copy=False) for o in outputs]


def collect_predictions(net, data, batch_size: Optional[int] = None) -> Predictions:
    """Run ``net`` over ``data`` (an :class:`~dvt_ms.data.EvalDataset` or batches ``(images, labels)``).

    Batches smaller than ``batch_size`` are padded with zeros so that a graph-mode network is compiled
    for one shape only; the padding rows are dropped from the outputs.
    """
    batch_size = batch_size or getattr(data, "batch_size", None)
    probs: List[List[np.ndarray]] = []
    targets: List[np.ndarray] = []
    done = 0
    for images, labels in data:
        outputs = exit_logits(net, images, batch_size)
        if not probs:
            probs = [[] for _ in outputs]
        for k, logits in enumerate(outputs):
            probs[k].append(softmax(logits))
        targets.append(np.asarray(labels, dtype=np.int64))
        done += images.shape[0]
        if len(targets) % 50 == 0:
            logger.info("evaluated %d images", done)
    if not targets:
        where = getattr(getattr(data, "info", None), "root", "the dataset")
        raise ValueError(f"{where}: no readable images to evaluate")
    result = Predictions(np.stack([np.concatenate(p) for p in probs]), np.concatenate(targets))
    result.num_files = getattr(data, "num_files", result.targets.shape[0])
    result.skipped = getattr(data, "skipped", 0)
    result.skipped_files = list(getattr(data, "skipped_files", []))
    return result


# --------------------------------------------------------------------------------------------------
# anytime classification
# --------------------------------------------------------------------------------------------------
def topk_accuracy(probs: np.ndarray, targets: np.ndarray, k: int) -> np.ndarray:
    """Top-``k`` accuracy in percent per exit of ``probs [n_exits, N, C]`` (see :func:`topk_counts`)."""
    n = np.asarray(targets).shape[0]
    if n == 0:
        raise ValueError("no targets to score")
    return topk_counts(probs, targets, k) * 100.0 / n


def topk_counts(probs: np.ndarray, targets: np.ndarray, k: int) -> np.ndarray:
    """Per exit of ``probs [n_exits, N, C]`` (probabilities or logits), how many targets are in the top ``k``.

    The target counts as found if fewer than ``k`` classes rank above it, ties ranked by class index
    (so top-1 agrees with ``argmax``).
    """
    probs = np.asarray(probs, dtype=np.float32)
    targets = np.asarray(targets, dtype=np.int64)
    if probs.ndim != 3 or probs.shape[1] != targets.shape[0]:
        raise ValueError(f"probs {probs.shape} and targets {targets.shape} do not match")
    if not 1 <= k <= probs.shape[2]:
        raise ValueError(f"k must be in [1, {probs.shape[2]}], got {k}")
    if targets.size and (targets.min() < 0 or targets.max() >= probs.shape[2]):
        raise ValueError(f"targets must be in [0, {probs.shape[2]}), got range "
                         f"[{targets.min()}, {targets.max()}]")
    n = targets.shape[0]
    classes = np.arange(probs.shape[2])
    result = np.empty(probs.shape[0])
    for e in range(probs.shape[0]):
        p = probs[e]
        pt = p[np.arange(n), targets][:, None]
        rank = (p > pt).sum(axis=1) + ((p == pt) & (classes[None, :] < targets[:, None])).sum(axis=1)
        result[e] = np.count_nonzero(rank < k)
    return result


def anytime_results(probs: np.ndarray, targets: np.ndarray, gmacs: Sequence[float],
                    names: Optional[Sequence[str]] = None) -> List[Dict[str, Any]]:
    """Per-exit ``{exit, tokens, top1, top5, gmacs}``; ``top5`` is None with fewer than 5 classes."""
    top1 = topk_accuracy(probs, targets, 1)
    top5 = topk_accuracy(probs, targets, 5) if probs.shape[2] >= 5 else [None] * probs.shape[0]
    if len(gmacs) != probs.shape[0]:
        raise ValueError(f"{len(gmacs)} GMACs values for {probs.shape[0]} exits")
    rows = []
    for k in range(probs.shape[0]):
        rows.append({"exit": k + 1, "tokens": None if names is None else names[k], "top1": float(top1[k]),
                     "top5": None if top5[k] is None else float(top5[k]), "gmacs": float(gmacs[k])})
    return rows


# --------------------------------------------------------------------------------------------------
# results stored in official checkpoints
# --------------------------------------------------------------------------------------------------
def _numbers(value: Any, key: str, checkpoint: Union[str, Path], shape: Optional[Tuple] = None) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{checkpoint}: metadata {key!r} is not numeric: {str(value)[:80]}") from None
    if shape is not None and arr.shape != shape:
        raise ValueError(f"{checkpoint}: metadata {key!r} has shape {list(arr.shape)}, expected {list(shape)}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{checkpoint}: metadata {key!r} contains NaN or Inf")
    return arr


def stored_flops(metadata: Mapping[str, Any], checkpoint: Union[str, Path], n_exits: int) -> Optional[np.ndarray]:
    """The checkpoint's per-exit ``flops`` (units as stored), or None if it has none."""
    if metadata.get("flops") is None:
        return None
    return _numbers(metadata["flops"], "flops", checkpoint, (n_exits,))


def stored_thresholds(metadata: Mapping[str, Any], checkpoint: Union[str, Path], n_exits: int) -> np.ndarray:
    """The checkpoint's ``dynamic_threshold`` ``[59, n_exits]`` (one row per budget step p = 1..59)."""
    if metadata.get("dynamic_threshold") is None:
        raise ValueError(f"{checkpoint} holds no 'dynamic_threshold' (metadata keys: "
                         f"{', '.join(sorted(metadata)) or 'none'}); use --mode fit to fit thresholds")
    table = np.asarray(metadata["dynamic_threshold"])
    arr = _numbers(table, "dynamic_threshold", checkpoint, (len(BUDGET_STEPS), n_exits))
    return arr.astype(np.float32)


def saved_results(metadata: Mapping[str, Any], checkpoint: Union[str, Path]) -> Dict[str, Any]:
    """The evaluation results an official DVT checkpoint stores, checked for shape.

    Returns ``flops`` (per exit, units as stored), ``anytime_classification`` (top-1 % per exit) and
    ``budgeted_batch_classification`` as ``{flops: [...], accuracy: [...]}``.
    """
    keys = ("flops", "anytime_classification", "budgeted_batch_classification")
    missing = [k for k in keys if metadata.get(k) is None]
    if missing:
        raise ValueError(f"{checkpoint} holds no stored results: missing {', '.join(missing)} (metadata keys: "
                         f"{', '.join(sorted(metadata)) or 'none'}); evaluate it with --mode anytime, "
                         "saved-thresholds or fit instead")
    flops = _numbers(metadata["flops"], "flops", checkpoint)
    if flops.ndim != 1 or flops.size < 1:
        raise ValueError(f"{checkpoint}: metadata 'flops' must be a list per exit, got shape {list(flops.shape)}")
    anytime = _numbers(metadata["anytime_classification"], "anytime_classification", checkpoint,
                       flops.shape)
    budget = metadata["budgeted_batch_classification"]
    if not isinstance(budget, (list, tuple, np.ndarray)) or len(budget) != 2:
        raise ValueError(f"{checkpoint}: metadata 'budgeted_batch_classification' must be "
                         "[flops_list, accuracy_list]")
    budget_flops = _numbers(budget[0], "budgeted_batch_classification[0]", checkpoint)
    budget_acc = _numbers(budget[1], "budgeted_batch_classification[1]", checkpoint, budget_flops.shape)
    return {
        "flops": flops.tolist(),
        "anytime_classification": anytime.tolist(),
        "budgeted_batch_classification": {"flops": budget_flops.tolist(), "accuracy": budget_acc.tolist()},
    }


# --------------------------------------------------------------------------------------------------
# budgeted batch classification
# --------------------------------------------------------------------------------------------------
def fit_subset_indices(num_images: int, fit_samples: int, seed: int) -> np.ndarray:
    """Sorted indices of ``min(fit_samples, num_images)`` images drawn without replacement with ``seed``."""
    if num_images < 1:
        raise ValueError("no images to draw the fit subset from")
    if fit_samples >= num_images:
        return np.arange(num_images)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(num_images, size=fit_samples, replace=False))


def budget_results(test_probs: np.ndarray, test_targets: np.ndarray, gmacs: Sequence[float],
                   thresholds: Optional[np.ndarray] = None, train_probs: Optional[np.ndarray] = None,
                   train_targets: Optional[np.ndarray] = None,
                   flops_stored: Optional[Sequence[float]] = None,
                   steps: Sequence[int] = BUDGET_STEPS) -> List[Dict[str, Any]]:
    """Budgeted batch classification curve, one dict per step ``p``.

    Thresholds are ``thresholds [n_steps, n_exits]`` when given, else fitted on the train outputs. Each
    point has ``p``, ``thresholds``, ``accuracy`` (top-1 %), ``gmacs`` (expected per image),
    ``exit_counts`` (test images leaving at each exit) and, with ``flops_stored``, ``flops_stored``
    (expected cost in the stored units).
    """
    curve = budget_curve(train_probs, train_targets, test_probs, test_targets, np.asarray(gmacs, np.float64),
                         steps=steps, thresholds=thresholds)
    n_exits = test_probs.shape[0]
    points = []
    for i, p in enumerate(curve["p"]):
        exits = exit_assignment(test_probs, curve["thresholds"][i])
        counts = np.bincount(exits[exits >= 0], minlength=n_exits)
        point = {"p": int(p), "thresholds": [float(t) for t in curve["thresholds"][i]],
                 "accuracy": float(curve["accuracy"][i]), "gmacs": float(curve["flops"][i]),
                 "exit_counts": [int(c) for c in counts]}
        if flops_stored is not None:
            n = test_probs.shape[1]
            point["flops_stored"] = float(sum(counts[k] / n * float(flops_stored[k]) for k in range(n_exits)))
        points.append(point)
    return points

