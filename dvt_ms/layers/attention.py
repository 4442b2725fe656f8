"""Multi-head self-attention that exposes its pre-softmax logits (for DVT relation reuse)."""
from typing import Optional, Tuple

from mindspore import Tensor, nn, ops
from mindspore.common import dtype as mstype

from ..kernels import STOCK, KernelChoice, UsesKernels
from ..kernels import ops as fused_ops
from .linear import Linear
from .products import low_precision_product


class Attention(UsesKernels, nn.Cell):
    """Self-attention over ``[B, N, C]`` tokens.

    ``construct`` returns ``(output, logits, probs)``: ``logits`` are the scaled scores plus any reused
    relation bias (what the next DVT stage reuses) and ``probs`` their softmax (what EViT ranks by).
    With ``residual``, ``output`` is ``residual`` plus the attention (added inside the projection).
    ``x`` may be a fused kernels' activation (:class:`~dvt_ms.layers.norm.LayerNorm` with ``narrow=True``).
    On the fused kernels q, k, v, the probabilities and the heads' output travel in the activation dtype
    (bfloat16 in a bf16 model); the logits and the softmax's arithmetic are float32, and ``probs`` is returned
    as float32. ``float32_probs``: the caller reads ``probs`` (EViT ranks tokens by them), so they stay
    float32 throughout (MindSpore's CPU ops cannot sum bfloat16 gradients).
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = False,
                 qk_scale: Optional[float] = None, kernels: KernelChoice = STOCK, float32_probs: bool = False):
        super().__init__()
        self.kernels = kernels
        if dim % num_heads:
            raise ValueError(f"embed_dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = qk_scale if qk_scale is not None else self.head_dim ** -0.5
        self.qkv = Linear(dim, dim * 3, has_bias=qkv_bias, kernels=kernels)
        self.proj = Linear(dim, dim, kernels=kernels)
        self.scores = ops.BatchMatMul(transpose_b=True)
        # not ops.matmul: its gradient adds explicit transposes of probs and v, BatchMatMul's uses flags
        self.weighted_sum = ops.BatchMatMul()
        self.unstack = ops.Unstack(axis=0)
        self.narrow_probs = kernels.available and kernels.kernel_precision != "fp32" and not float32_probs
        if kernels.available:
            self.fused_to_heads = fused_ops.qkv_to_heads_op(num_heads)
            self.fused_scale = Tensor([self.scale], mstype.float32)
            self.fused_scores = fused_ops.attention_scores_op(kernels.kernel_precision)
            self.fused_scores_bias = fused_ops.attention_scores_op(kernels.kernel_precision, bias=True)
            self.fused_softmax = fused_ops.softmax_op(kernels.kernel_precision, narrow=self.narrow_probs)
            self.fused_mix = fused_ops.attention_mix_op(kernels.kernel_precision)
            self.fused_to_tokens = fused_ops.heads_to_tokens_op()

    def construct(self, x: Tensor, relation_bias: Optional[Tensor] = None,
                  residual: Optional[Tensor] = None) -> Tuple[Tensor, Tensor, Tensor]:
        if self.fused:
            q, k, v = self.fused_to_heads(self.qkv.narrow(x), self.fused_scale)
            if relation_bias is None:
                logits = self.fused_scores(q, k)
            else:  # added inside the product
                logits = self.fused_scores_bias(q, k, relation_bias)
            probs = self.fused_softmax(logits)
            out = self._project(self.fused_to_tokens(self.fused_mix(probs, v)), residual)
            if self.narrow_probs:  # dropped from the graphs that do not read it
                probs = ops.cast(probs, mstype.float32)
            return out, logits, probs
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).transpose(2, 0, 3, 1, 4)
        q, k, v = self.unstack(qkv)
        low = self.product_dtype
        logits = low_precision_product(self.scores, q * self.scale, k, low)
        if relation_bias is not None:
            logits = logits + relation_bias
        probs = ops.softmax(logits, axis=-1)
        out = low_precision_product(self.weighted_sum, probs, v, low).transpose(0, 2, 1, 3).reshape(b, n, c)
        return self._project(out, residual), logits, probs

    def _project(self, heads: Tensor, residual: Optional[Tensor]) -> Tensor:
        return self.proj(heads) if residual is None else self.proj.add_to(heads, residual)
