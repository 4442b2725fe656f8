"""Multi-exit cross-entropy: the DVT objective (a weighted sum over exits) for hard or soft targets."""
import math
from typing import Optional, Sequence, Tuple, Union

import numpy as np
from mindspore import Tensor, nn, ops
from mindspore.common import dtype as mstype

__all__ = ["MultiExitLoss", "check_targets"]

Logits = Union[Tensor, Tuple[Tensor, ...]]


class MultiExitLoss(nn.Cell):
    """``sum_i weights[i] * CE(logits_i, targets)`` over a model's exits (DVT trains every exit equally).

    ``targets`` are either int class indices ``[B]``, smoothed here with ``label_smoothing``
    (``(1 - s) * one_hot + s / C``, i.e. timm's ``LabelSmoothingCrossEntropy``), or soft targets
    ``[B, C]`` (mixup/cutmix, which already include the smoothing), for which the loss is
    ``mean_b(-sum_c t * log_softmax(logits))``. Logits are cast to float32 first.

    ``logits`` is a tuple (one tensor per exit) or one tensor (a single-exit model). ``weights``
    default to 1 for every exit; when given, their number must match the exits. ``construct`` returns
    ``(total, per_exit)`` with ``per_exit`` a float32 ``[num_exits]`` tensor of unweighted losses, or
    only ``total`` with ``return_per_exit=False``.
    """

    def __init__(self, weights: Optional[Sequence[float]] = None, label_smoothing: float = 0.1,
                 return_per_exit: bool = True):
        super().__init__()
        if not (isinstance(label_smoothing, (int, float)) and 0 <= label_smoothing < 1):
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing!r}")
        if weights is not None:
            weights = tuple(float(w) for w in weights)
            if not weights or not all(math.isfinite(w) and w >= 0 for w in weights):
                raise ValueError(f"exit weights must be finite non-negative numbers, got {weights}")
        self.weights = weights
        self.label_smoothing = float(label_smoothing)
        self.return_per_exit = return_per_exit

    def _cross_entropy(self, logits: Tensor, targets: Tensor) -> Tensor:
        logits = ops.cast(logits, mstype.float32)
        num_classes = logits.shape[-1]
        if targets.ndim == 1:
            on_value = 1.0 - self.label_smoothing + self.label_smoothing / num_classes
            off_value = self.label_smoothing / num_classes
            soft = ops.one_hot(targets, num_classes, Tensor(on_value, mstype.float32),
                               Tensor(off_value, mstype.float32))
        else:
            if targets.shape != logits.shape:
                raise ValueError(f"soft targets must have the logits' shape {logits.shape}, got {targets.shape}")
            soft = ops.cast(targets, mstype.float32)
        return -(soft * ops.log_softmax(logits, axis=-1)).sum(axis=-1).mean()

    def construct(self, logits: Logits, targets: Tensor):
        outputs = logits if isinstance(logits, (tuple, list)) else (logits,)
        weights = self.weights
        if weights is None:
            weights = (1.0,) * len(outputs)
        if len(weights) != len(outputs):
            raise ValueError(f"MultiExitLoss has {len(weights)} exit weight(s) but the model returned "
                             f"{len(outputs)} exit(s)")
        losses = []
        total = 0.0
        for output, weight in zip(outputs, weights):
            loss = self._cross_entropy(output, targets)
            losses.append(loss)
            total = total + weight * loss
        if self.return_per_exit:
            return total, ops.stack(losses)
        return total


def check_targets(targets: Union[Tensor, np.ndarray], num_classes: int, batch_size: Optional[int] = None) -> None:
    """Host-side check of a batch's targets; raises ``ValueError`` naming the problem.

    Int labels must lie in ``[0, num_classes)`` (an out-of-range label would silently become an all-zero
    one-hot row). Soft targets must be ``[B, num_classes]``, finite and non-negative.
    """
    values = targets.asnumpy() if isinstance(targets, Tensor) else np.asarray(targets)
    if batch_size is not None and values.shape[:1] != (batch_size,):
        raise ValueError(f"targets have batch size {values.shape[:1]}, images have {batch_size}")
    if values.ndim == 1:
        if not np.issubdtype(values.dtype, np.integer):
            raise ValueError(f"hard targets must be integers, got dtype {values.dtype}")
        bad = np.flatnonzero((values < 0) | (values >= num_classes))
        if bad.size:
            raise ValueError(f"target label {values[bad[0]]} (batch index {bad[0]}) is outside "
                             f"[0, {num_classes})")
    elif values.ndim == 2:
        if values.shape[1] != num_classes:
            raise ValueError(f"soft targets have {values.shape[1]} classes, the model has {num_classes}")
        if not np.all(np.isfinite(values)) or np.any(values < 0):
            raise ValueError("soft targets contain NaN, Inf or negative values")
    else:
        raise ValueError(f"targets must be [B] class indices or [B, C] soft targets, got shape {values.shape}")
