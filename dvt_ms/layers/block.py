"""The one transformer block behind every backbone (DeiT, T2T-ViT, DVT stages and EViT)."""
from typing import Optional, Tuple

from mindspore import Tensor, nn, ops

from .attention import Attention
from .drop_path import DropPath
from .mlp import Mlp
from .norm import LayerNorm
from .reuse import FeatureReuse
from ..kernels import STOCK, KernelChoice
from .token_reorganization import apply_selection, follow_rows, resolve_keep_count, select_tokens


class Block(nn.Cell):
    """Pre-norm attention + MLP block.

    Optional extras, each off by default:
    - ``feature_reuse``: a :class:`FeatureReuse` whose output is concatenated to the tokens before
      ``norm2`` (DVT feature reuse), so ``norm2``/``mlp`` see ``dim + feature_reuse_dim`` channels;
    - ``keep_rate < 1``: EViT token reorganization after the attention residual. With ``follow_tokens``
      (a pruning stage that reuses an earlier stage's full-grid inputs) the block also adds its selection
      to ``selections``, which those inputs follow (:func:`~dvt_ms.layers.token_reorganization.follow_rows`).

    ``construct`` returns ``(tokens, attention_logits, kept_indices_or_None, selections)``.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = False,
                 qk_scale: Optional[float] = None, norm_eps: float = 1e-6, drop_path: float = 0.0,
                 feature_reuse: Optional[FeatureReuse] = None, feature_reuse_dim: int = 0,
                 keep_rate: float = 1.0, fuse_token: bool = False, follow_tokens: bool = False,
                 approximate_gelu: bool = False, kernels: KernelChoice = STOCK):
        super().__init__()
        if not 0 < keep_rate <= 1:
            raise ValueError(f"keep_rate must be in (0, 1], got {keep_rate}")
        if (feature_reuse is None) != (feature_reuse_dim == 0):
            raise ValueError("feature_reuse and feature_reuse_dim must be given together")
        self.norm1 = LayerNorm((dim,), epsilon=norm_eps, kernels=kernels, narrow=True)
        self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias, qk_scale=qk_scale, kernels=kernels,
                              float32_probs=keep_rate < 1)
        self.drop_path = DropPath(drop_path)
        mlp_in = dim + feature_reuse_dim
        self.norm2 = LayerNorm((mlp_in,), epsilon=norm_eps, kernels=kernels, narrow=True)
        self.mlp = Mlp(mlp_in, int(dim * mlp_ratio), dim, kernels=kernels, approximate_gelu=approximate_gelu)
        self.feature_reuse = feature_reuse
        self.keep_rate = keep_rate
        self.fuse_token = fuse_token
        self.follow_tokens = follow_tokens

    def construct(self, x: Tensor, reused_tokens: Optional[Tensor] = None,
                  relation_bias: Optional[Tensor] = None, keep_rate: Optional[float] = None,
                  selections: tuple = ()) -> Tuple[Tensor, Tensor, Optional[Tensor], tuple]:
        if self.drop_path.active:
            attn_out, logits, probs = self.attn(self.norm1(x), relation_bias)
            x = x + self.drop_path(attn_out)
        else:  # the residual sums are taken inside the projections
            x, logits, probs = self.attn(self.norm1(x), relation_bias, x)
        kept_idx = None
        keep = resolve_keep_count(self.keep_rate, keep_rate, x.shape[1] - 1)
        if keep > 0:
            kept_idx, weights = select_tokens(probs, keep, self.fuse_token)
            if self.follow_tokens:
                selections = selections + ((kept_idx, weights),)
            x = apply_selection(x, kept_idx, weights)
        mlp_in = x
        if self.feature_reuse is not None:
            reused = follow_rows(self.feature_reuse(reused_tokens), selections)
            mlp_in = ops.concat((x, reused), axis=-1)
        if self.drop_path.active:
            x = x + self.drop_path(self.mlp(self.norm2(mlp_in)))
        else:
            x = self.mlp(self.norm2(mlp_in), x)
        return x, logits, kept_idx, selections
