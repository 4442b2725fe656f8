"""Multi-head self-attention that exposes its pre-softmax logits (for DVT relation reuse)."""
from typing import Optional, Tuple

from mindspore import Tensor, nn, ops


class Attention(nn.Cell):
    """Self-attention over ``[B, N, C]`` tokens.

    ``construct`` returns ``(output, logits, probs)``: ``logits`` are the scaled scores plus any reused
    relation bias (what the next DVT stage reuses) and ``probs`` their softmax (what EViT ranks by).
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = False,
                 qk_scale: Optional[float] = None):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed_dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = qk_scale if qk_scale is not None else self.head_dim ** -0.5
        self.qkv = nn.Dense(dim, dim * 3, has_bias=qkv_bias)
        self.proj = nn.Dense(dim, dim)
        self.scores = ops.BatchMatMul(transpose_b=True)
        self.unstack = ops.Unstack(axis=0)

    def construct(self, x: Tensor, relation_bias: Optional[Tensor] = None) -> Tuple[Tensor, Tensor, Tensor]:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).transpose(2, 0, 3, 1, 4)
        q, k, v = self.unstack(qkv)
        logits = self.scores(q * self.scale, k)
        if relation_bias is not None:
            logits = logits + relation_bias
        probs = ops.softmax(logits, axis=-1)
        out = ops.matmul(probs, v).transpose(0, 2, 1, 3).reshape(b, n, c)
        return self.proj(out), logits, probs
