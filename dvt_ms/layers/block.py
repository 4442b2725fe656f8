"""The one transformer block behind every backbone (DeiT, T2T-ViT, DVT stages and EViT)."""
from typing import Optional, Tuple

from mindspore import Tensor, nn, ops

from .attention import Attention
from .drop_path import DropPath
from .mlp import Mlp
from .norm import LayerNorm
from .reuse import FeatureReuse
from .token_reorganization import reorganize_tokens, resolve_keep_count


class Block(nn.Cell):
    """Pre-norm attention + MLP block.

    Optional extras, each off by default:
    - ``feature_reuse``: a :class:`FeatureReuse` whose output is concatenated to the tokens before
      ``norm2`` (DVT feature reuse), so ``norm2``/``mlp`` see ``dim + feature_reuse_dim`` channels;
    - ``keep_rate < 1``: EViT token reorganization after the attention residual.

    ``construct`` returns ``(tokens, attention_logits, kept_indices_or_None)``.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = False,
                 qk_scale: Optional[float] = None, norm_eps: float = 1e-6, drop_path: float = 0.0,
                 feature_reuse: Optional[FeatureReuse] = None, feature_reuse_dim: int = 0,
                 keep_rate: float = 1.0, fuse_token: bool = False):
        super().__init__()
        if not 0 < keep_rate <= 1:
            raise ValueError(f"keep_rate must be in (0, 1], got {keep_rate}")
        if (feature_reuse is None) != (feature_reuse_dim == 0):
            raise ValueError("feature_reuse and feature_reuse_dim must be given together")
        self.norm1 = LayerNorm((dim,), epsilon=norm_eps)
        self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias, qk_scale=qk_scale)
        self.drop_path = DropPath(drop_path)
        mlp_in = dim + feature_reuse_dim
        self.norm2 = LayerNorm((mlp_in,), epsilon=norm_eps)
        self.mlp = Mlp(mlp_in, int(dim * mlp_ratio), dim)
        self.feature_reuse = feature_reuse
        self.keep_rate = keep_rate
        self.fuse_token = fuse_token

    def construct(self, x: Tensor, reused_tokens: Optional[Tensor] = None,
                  relation_bias: Optional[Tensor] = None,
                  keep_rate: Optional[float] = None) -> Tuple[Tensor, Tensor, Optional[Tensor]]:
        attn_out, logits, probs = self.attn(self.norm1(x), relation_bias)
        x = x + self.drop_path(attn_out)
        kept_idx = None
        keep = resolve_keep_count(self.keep_rate, keep_rate, x.shape[1] - 1)
        if keep > 0:
            x, kept_idx = reorganize_tokens(x, probs, keep, self.fuse_token)
        mlp_in = x
        if self.feature_reuse is not None:
            mlp_in = ops.concat((x, self.feature_reuse(reused_tokens)), axis=-1)
        x = x + self.drop_path(self.mlp(self.norm2(mlp_in)))
        return x, logits, kept_idx
