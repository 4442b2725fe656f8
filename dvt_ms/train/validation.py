"""Validation during training: per-shard top-k counts, summed over ranks into a :class:`ValResult`, and the
EMA weights swapped in place for it."""
import contextlib
import math
from dataclasses import dataclass
from typing import Iterator, List, Optional

import numpy as np
from mindspore import Tensor, ops

from ..evaluate import exit_logits, topk_counts

__all__ = ["ValResult", "counts_to_result", "ema_weights", "evaluate_shard"]


@dataclass
class ValResult:
    """Validation of one set of weights over the whole ``val`` split (all ranks)."""

    top1: List[float]
    top5: List[Optional[float]]
    num_images: int
    skipped: int


def evaluate_shard(net, data, batch_size: int, num_exits: int) -> np.ndarray:
    """Counts on one data shard: ``[images, skipped, top1 per exit..., top5 per exit...]`` (float64).

    Batches smaller than ``batch_size`` are zero-padded so one graph serves every batch. Top-5 counts
    are 0 when there are fewer than 5 classes.
    """
    net.set_train(False)
    top1 = np.zeros(num_exits)
    top5 = np.zeros(num_exits)
    seen = 0
    for images, labels in data:
        logits = np.stack(exit_logits(net, images, batch_size))
        top1 += topk_counts(logits, labels, 1)
        if logits.shape[2] >= 5:
            top5 += topk_counts(logits, labels, 5)
        seen += images.shape[0]
    return np.concatenate([[seen, getattr(data, "skipped", 0)], top1, top5]).astype(np.float64)


def counts_to_result(counts: np.ndarray, num_exits: int, num_classes: int) -> ValResult:
    """Percentages from summed :func:`evaluate_shard` counts."""
    n = int(counts[0])
    top1 = [100.0 * c / n if n else math.nan for c in counts[2:2 + num_exits]]
    top5 = [100.0 * c / n if n else math.nan for c in counts[2 + num_exits:2 + 2 * num_exits]]
    return ValResult(top1=top1, top5=top5 if num_classes >= 5 else [None] * num_exits, num_images=n,
                     skipped=int(counts[1]))


@contextlib.contextmanager
def ema_weights(net, ema) -> Iterator[None]:
    """``with ema_weights(net, ema):`` the EMA weights are in ``net``; the trained ones are back on exit.

    The values are written *in place* (``ops.assign``). ``Parameter.set_data`` (what
    ``ModelEMA.swapped`` uses) gives the parameter a new buffer, and in MindSpore 2.10 a training graph
    compiled before keeps updating the old one: the training would go on, detached from ``net``.
    """
    params = list(net.get_parameters())
    backup = {p.name: p.asnumpy().copy() for p in params}
    state = ema.state()
    missing = sorted(set(backup) - set(state))
    if missing:
        raise ValueError(f"the EMA has no weights for {', '.join(missing[:5])}")
    try:
        for param in params:
            ops.assign(param, Tensor(state[param.name], param.dtype))
        yield
    finally:
        for param in params:
            ops.assign(param, Tensor(backup[param.name], param.dtype))
