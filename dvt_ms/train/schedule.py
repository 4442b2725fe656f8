"""Per-iteration schedules: the cosine learning rate of DeiT/DVT/EViT and EViT's keep-rate schedule.

Learning rate (:func:`cosine_lr`, :func:`lr_at`), timm's ``CosineLRScheduler`` with one cycle, in epochs
``t = step / steps_per_epoch`` (fractional, so the rate changes every iteration; ``per_epoch=True``
uses ``t = floor(step / steps_per_epoch)``, a staircase like the official scripts' once-per-epoch
``scheduler.step``):

- ``t < warmup_epochs``: linear from ``warmup_lr`` (at ``t = 0``) towards ``base_lr`` (reached at
  ``t = warmup_epochs``);
- ``warmup_epochs <= t < epochs``: ``min_lr + (base_lr - min_lr) * (1 + cos(pi * t / epochs)) / 2``.
  The cosine phase counts from 0, *including* the warmup (timm's default ``warmup_prefix=False``), so
  right after warmup the rate is slightly below ``base_lr`` and it is ``(base_lr + min_lr) / 2`` at
  ``t = epochs / 2``;
- ``epochs <= t < epochs + cooldown_epochs``: ``min_lr`` (cooldown).

The run is ``epochs + cooldown_epochs`` epochs long (DeiT: 300 + 10), and the schedule has that many
epochs of ``steps_per_epoch`` values. The value at step ``k`` depends only on ``k``, so a run resumed at
global step ``k`` continues with exactly the rates of an uninterrupted run.

Keep rate (:func:`evit_keep_rate`): 1 until ``start_epoch``, then a cosine from ``max_rate`` down to
``target`` reached at ``end_epoch``, then ``target`` (EViT: start 10, end 10 + 100 shrink epochs).
Each distinct keep rate is a new graph to compile, see :func:`quantize_keep_rate`.
"""
import math
from typing import List, Optional, Sequence, Tuple

import numpy as np

from ..layers.token_reorganization import kept_token_count

__all__ = ["cosine_lr", "lr_at", "evit_keep_rate", "keep_rate_at_step", "quantize_keep_rate",
           "keep_token_counts", "total_steps"]


def _check_number(key: str, value: float, minimum: float = 0.0) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or value < minimum:
        raise ValueError(f"{key} must be a finite number >= {minimum}, got {value!r}")


def _check_int(key: str, value: int, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{key} must be an integer >= {minimum}, got {value!r}")


def _check_lr_args(base_lr, min_lr, warmup_lr, warmup_epochs, cooldown_epochs, epochs, steps_per_epoch):
    for key, value in (("base_lr", base_lr), ("min_lr", min_lr), ("warmup_lr", warmup_lr)):
        _check_number(key, value)
    _check_int("epochs", epochs, 1)
    _check_int("warmup_epochs", warmup_epochs, 0)
    _check_int("cooldown_epochs", cooldown_epochs, 0)
    _check_int("steps_per_epoch", steps_per_epoch, 1)
    if warmup_epochs > epochs:
        raise ValueError(f"warmup_epochs ({warmup_epochs}) must not exceed epochs ({epochs})")
    if min_lr > base_lr:
        raise ValueError(f"min_lr ({min_lr}) must not exceed base_lr ({base_lr})")


def total_steps(epochs: int, cooldown_epochs: int, steps_per_epoch: int) -> int:
    """Length of the schedule: ``(epochs + cooldown_epochs) * steps_per_epoch``."""
    return (epochs + cooldown_epochs) * steps_per_epoch


def _lr_of_epoch(t: np.ndarray, base_lr: float, min_lr: float, warmup_lr: float, warmup_epochs: int,
                 epochs: int) -> np.ndarray:
    warm = warmup_lr + t * ((base_lr - warmup_lr) / warmup_epochs) if warmup_epochs else t
    cosine = min_lr + 0.5 * (base_lr - min_lr) * (1.0 + np.cos(np.pi * t / epochs))
    lr = np.where(t < warmup_epochs, warm, cosine)
    return np.where(t >= epochs, min_lr, lr)


def cosine_lr(base_lr: float, steps_per_epoch: int, min_lr: float = 1e-5, warmup_lr: float = 1e-6,
              warmup_epochs: int = 20, cooldown_epochs: int = 10, epochs: int = 300,
              per_epoch: bool = False) -> np.ndarray:
    """One learning rate per iteration, ``float32[(epochs + cooldown_epochs) * steps_per_epoch]``.

    The defaults are DVT's recipe (warmup 20 epochs from 1e-6, cosine to 1e-5 over 300 epochs, then 10
    cooldown epochs at 1e-5); see the module docstring for the exact formula.
    """
    _check_lr_args(base_lr, min_lr, warmup_lr, warmup_epochs, cooldown_epochs, epochs, steps_per_epoch)
    steps = np.arange(total_steps(epochs, cooldown_epochs, steps_per_epoch), dtype=np.float64)
    t = np.floor(steps / steps_per_epoch) if per_epoch else steps / steps_per_epoch
    return _lr_of_epoch(t, base_lr, min_lr, warmup_lr, warmup_epochs, epochs).astype(np.float32)


def lr_at(step: int, base_lr: float, steps_per_epoch: int, min_lr: float = 1e-5, warmup_lr: float = 1e-6,
          warmup_epochs: int = 20, cooldown_epochs: int = 10, epochs: int = 300,
          per_epoch: bool = False) -> float:
    """The rate :func:`cosine_lr` gives at global ``step`` (0-based), computed on its own."""
    _check_lr_args(base_lr, min_lr, warmup_lr, warmup_epochs, cooldown_epochs, epochs, steps_per_epoch)
    _check_int("step", step, 0)
    if step >= total_steps(epochs, cooldown_epochs, steps_per_epoch):
        raise ValueError(f"step {step} is past the end of the schedule "
                         f"({total_steps(epochs, cooldown_epochs, steps_per_epoch)} steps)")
    t = float(step // steps_per_epoch) if per_epoch else step / steps_per_epoch
    return float(np.float32(_lr_of_epoch(np.float64(t), base_lr, min_lr, warmup_lr, warmup_epochs, epochs)))


def evit_keep_rate(epoch: float, target: float = 0.7, start_epoch: float = 10, end_epoch: float = 110,
                   max_rate: float = 1.0) -> float:
    """EViT's keep rate at (fractional) ``epoch``.

    ``1`` before ``start_epoch``; ``target + (max_rate - target) * (cos(pi * p) + 1) / 2`` with
    ``p = (epoch - start_epoch) / (end_epoch - start_epoch)`` in between (from ``max_rate`` down to
    ``target``); ``target`` from ``end_epoch`` on. ``end_epoch`` is EViT's ``shrink_start_epoch +
    shrink_epochs``.
    """
    _check_number("epoch", epoch)
    _check_number("start_epoch", start_epoch)
    if not 0 < target <= max_rate <= 1:
        raise ValueError(f"need 0 < target <= max_rate <= 1, got target={target}, max_rate={max_rate}")
    if end_epoch < start_epoch:
        raise ValueError(f"end_epoch ({end_epoch}) must not be before start_epoch ({start_epoch})")
    if epoch < start_epoch:
        return 1.0
    if epoch >= end_epoch:
        return float(target)
    progress = (epoch - start_epoch) / (end_epoch - start_epoch)
    return float(target + (max_rate - target) * (math.cos(math.pi * progress) + 1.0) / 2.0)


def keep_rate_at_step(step: int, steps_per_epoch: int, target: float = 0.7, start_epoch: float = 10,
                      end_epoch: float = 110, max_rate: float = 1.0) -> float:
    """:func:`evit_keep_rate` at global iteration ``step`` (epoch ``step / steps_per_epoch``)."""
    _check_int("step", step, 0)
    _check_int("steps_per_epoch", steps_per_epoch, 1)
    return evit_keep_rate(step / steps_per_epoch, target, start_epoch, end_epoch, max_rate)


def keep_token_counts(rate: float, num_image_tokens: int, num_pruning_blocks: int,
                      fuse_token: bool = True) -> Tuple[int, ...]:
    """Image tokens entering each pruning block's successor: ``ceil(rate * n)`` block after block.

    With ``fuse_token`` each pruning block adds one fused token to what the next one sees. This tuple is
    what fixes the graph's shapes.
    """
    _check_int("num_image_tokens", num_image_tokens, 1)
    _check_int("num_pruning_blocks", num_pruning_blocks, 0)
    counts: List[int] = []
    n = num_image_tokens
    for _ in range(num_pruning_blocks):
        keep = kept_token_count(rate, n)
        if rate >= 1 or keep >= n:  # the blocks' rule: keeping everything means no reorganization
            counts.append(n)
            continue
        counts.append(keep)
        n = keep + (1 if fuse_token else 0)
    return tuple(counts)


def quantize_keep_rate(rate: float, num_image_tokens: int, token_step: int = 1,
                       gears: Optional[Sequence[int]] = None) -> float:
    """Snap ``rate`` to a canonical value so that only a few distinct keep rates (graphs) occur.

    The keep rate given at call time is a compile-time constant (it sets ``topk``'s ``k`` and the token
    count of every later layer), so every distinct float is a separate graph compile, even when two
    rates prune to the same token counts. Every token count after the first pruning block is a function
    of the rate, and the first count is ``k = ceil(rate * N)``. This function

    1. rounds ``k`` *up* to the nearest ``N - j * token_step`` (never keeps fewer tokens than asked);
    2. returns the representative ``(k - 0.5) / N``, for which ``ceil(rate * N) == k`` exactly, or 1.0
       when ``k == N`` (no pruning).

    So there is one rate, and one graph, per first-block token count. EViT's schedule for DeiT-S
    (``N = 196``, target 0.7) passes through 59 counts (196 down to 138) with ``token_step=1``, 16 with
    ``token_step=4``; the representative differs from the scheduled rate by less than
    ``token_step / N``. With ``gears`` (first-block token counts, :func:`dvt_ms.utils.gears.keep_count_gears`:
    the GPU/Ascend compile budget), ``k`` is rounded up to the nearest gear instead.
    """
    _check_int("num_image_tokens", num_image_tokens, 1)
    _check_int("token_step", token_step, 1)
    if not 0 < rate <= 1:
        raise ValueError(f"keep rate must be in (0, 1], got {rate}")
    keep = kept_token_count(rate, num_image_tokens)
    if gears:
        keep = min((g for g in gears if g >= keep), default=num_image_tokens)
    else:
        keep = num_image_tokens - ((num_image_tokens - keep) // token_step) * token_step
    if keep >= num_image_tokens:
        return 1.0
    return (keep - 0.5) / num_image_tokens
