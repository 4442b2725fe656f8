"""EViT token reorganization: keep the image tokens the class token attends to most."""
import math
from typing import Optional, Tuple

from mindspore import Tensor, ops


def kept_token_count(keep_rate: float, num_image_tokens: int) -> int:
    """Number of image tokens EViT keeps: ``ceil(keep_rate * num_image_tokens)``."""
    return math.ceil(keep_rate * num_image_tokens)


def reorganize_tokens(x: Tensor, attn_probs: Tensor, keep: int, fuse: bool) -> Tuple[Tensor, Tensor]:
    """Keep the ``keep`` image tokens ranked highest by class-token attention (averaged over heads).

    ``x`` is ``[B, N, C]`` with the class token first and ``attn_probs`` ``[B, H, N, N]``. With ``fuse``
    the other image tokens are merged into one extra token, weighted by their attention. Returns the new
    tokens and the kept indices ``[B, keep]`` (into the image tokens, most attended first).
    """
    b, n, c = x.shape
    cls_attn = attn_probs[:, :, 0, 1:].mean(axis=1)
    _, kept_idx = ops.topk(cls_attn, keep, dim=1, largest=True, sorted=True)
    image_tokens = x[:, 1:]
    kept = ops.gather_elements(image_tokens, 1, kept_idx.expand_dims(-1).broadcast_to((b, keep, c)))
    parts = [x[:, :1], kept]
    if fuse:
        kept_mask = ops.one_hot(kept_idx, n - 1, Tensor(1.0, x.dtype), Tensor(0.0, x.dtype)).sum(axis=1)
        weights = cls_attn * (1.0 - kept_mask)
        parts.append((image_tokens * weights.expand_dims(-1)).sum(axis=1, keepdims=True))
    return ops.concat(parts, axis=1), kept_idx


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
