"""EViT token reorganization: keep the image tokens the class token attends to most."""
import math
from typing import Optional, Tuple

from mindspore import Tensor, ops


def kept_token_count(keep_rate: float, num_image_tokens: int) -> int:
    """Number of image tokens EViT keeps: ``ceil(keep_rate * num_image_tokens)``."""
    return math.ceil(keep_rate * num_image_tokens)


def select_tokens(attn_probs: Tensor, keep: int, fuse: bool) -> Tuple[Tensor, Optional[Tensor]]:
    """The ``keep`` image tokens ranked highest by class-token attention (averaged over heads).

    ``attn_probs`` is ``[B, H, N, N]`` with the class token first. Returns the kept indices ``[B, keep]``
    (into the image tokens, most attended first) and, with ``fuse``, the fusion weights ``[B, N - 1]``: the
    class-token attention of every token not kept, 0 for the kept ones (``None`` without ``fuse``).
    """
    cls_attn = attn_probs[:, :, 0, 1:].mean(axis=1)
    _, kept_idx = ops.topk(cls_attn, keep, dim=1, largest=True, sorted=True)
    if not fuse:
        return kept_idx, None
    one, zero = Tensor(1.0, cls_attn.dtype), Tensor(0.0, cls_attn.dtype)
    kept_mask = ops.one_hot(kept_idx, cls_attn.shape[1], one, zero).sum(axis=1)
    return kept_idx, cls_attn * (1.0 - kept_mask)


def apply_selection(x: Tensor, kept_idx: Tensor, weights: Optional[Tensor]) -> Tensor:
    """Rows of ``x`` ``[B, N, C]`` after a reorganization: row 0, the kept rows, then (with ``weights``)
    one fused row, the weighted sum of the image rows."""
    # narrow, a gather per batch row and a batched product: MindSpore's CPU StridedSlice (x[:, 1:]), a gather
    # through a broadcast index and a reduction over axis 1 took 2x as long, forward and backward
    image_rows = ops.narrow(x, 1, 1, x.shape[1] - 1)
    parts = [ops.narrow(x, 1, 0, 1), ops.gather(image_rows, kept_idx, 1, batch_dims=1)]
    if weights is not None:
        parts.append(ops.bmm(ops.cast(weights, x.dtype).expand_dims(1), image_rows))
    return ops.concat(parts, axis=1)


Selection = Tuple[Tensor, Optional[Tensor]]  # (kept_idx [B, keep], fusion weights [B, N - 1] or None)


def follow_rows(x: Tensor, selections: Tuple[Selection, ...]) -> Tensor:
    """Rows of a full-grid per-token input ``[B, N, C]`` after the reorganizations so far.

    A stage that prunes and also reuses an earlier stage's inputs (given on its full grid) applies its
    selections to them: each kept token keeps its own row, and the fused token gets the same weighted sum
    of rows as its features.
    """
    for kept_idx, weights in selections:
        x = apply_selection(x, kept_idx, weights)
    return x


def _follow_axis2(x: Tensor, kept_idx: Tensor, weights: Optional[Tensor]) -> Tensor:
    b, h, n, m = x.shape
    rows = apply_selection(x.transpose(0, 2, 1, 3).reshape(b, n, h * m), kept_idx, weights)
    return rows.reshape(b, -1, h, m).transpose(0, 2, 1, 3)


def follow_rows_and_columns(x: Tensor, selections: Tuple[Selection, ...]) -> Tensor:
    """A full-grid pairwise input ``[B, H, N, N]`` (attention biases) after the reorganizations so far:
    rows and columns both follow the tokens, as in :func:`follow_rows`."""
    for kept_idx, weights in selections:
        x = _follow_axis2(x, kept_idx, weights)
        x = _follow_axis2(x.swapaxes(2, 3), kept_idx, weights).swapaxes(2, 3)
    return x


def resolve_keep_count(block_rate: float, call_rate: Optional[float], num_image_tokens: int) -> int:
    """Image tokens a block keeps, or 0 when it does not reorganize (EViT's rules).

    A block reorganizes only if its own keep rate is below 1; a keep rate given at call time (the
    training schedule) replaces it. Keeping every token means no reorganization at all.
    """
    if block_rate >= 1:
        return 0
    rate = block_rate if call_rate is None else call_rate
    if rate >= 1:
        return 0
    keep = kept_token_count(rate, num_image_tokens)
    return 0 if keep >= num_image_tokens else keep
