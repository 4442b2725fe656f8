"""One configurable Vision Transformer: DeiT, T2T-ViT, EViT and every DVT stage are instances of it."""
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np
from mindspore import Parameter, Tensor, nn, ops
from mindspore.common.initializer import TruncatedNormal, initializer

from ..layers import Block, FeatureReuse, LayerNorm, Linear, RelationReuse
from .tokenizers import PatchTokenizer, Tokenizer


def sinusoid_position_table(num_positions: int, dim: int) -> np.ndarray:
    """Fixed sine/cosine position table ``[1, num_positions, dim]`` (sin on even, cos on odd channels)."""
    positions = np.arange(num_positions, dtype=np.float64)[:, None]
    rates = np.power(10000.0, 2 * (np.arange(dim) // 2) / dim)[None, :]
    table = positions / rates
    table[:, 0::2] = np.sin(table[:, 0::2])
    table[:, 1::2] = np.cos(table[:, 1::2])
    return table[None].astype(np.float32)


@dataclass(frozen=True)
class ReuseSource:
    """What a DVT stage knows about the stage it reuses from."""

    grid_size: int
    embed_dim: int
    relation_channels: int  # depth * num_heads of that stage
    feature_reuse: bool
    relation_reuse: bool
    feature_dim: int = 48
    hidden_dim: int = 128


class VisionTransformer(nn.Cell):
    """Class-token ViT with a pluggable tokenizer, optional EViT keep rates and optional DVT reuse.

    ``construct(x)`` returns logits (and EViT's kept indices with ``return_indices=True``).
    ``forward_stage`` is what a DVT cascade calls: it also returns the final tokens (before the final
    norm) and every layer's attention logits stacked as ``[B, depth * num_heads, N, N]``.
    """

    def __init__(self, *, tokenizer: Tokenizer = PatchTokenizer(), image_size: int = 224,
                 num_classes: int = 1000, embed_dim: int = 384, depth: int = 12, num_heads: int = 6,
                 mlp_ratio: float = 4.0, qkv_bias: bool = True, qk_scale: Optional[float] = None,
                 norm_eps: float = 1e-6, drop_path_rate: float = 0.0, sinusoid_pos_embed: bool = False,
                 token_dim: int = 64, keep_rate: Sequence[float] = (), fuse_token: bool = False,
                 reuse: Optional[ReuseSource] = None):
        super().__init__()
        keep_rate = tuple(keep_rate) or (1.0,) * depth
        if len(keep_rate) != depth:
            raise ValueError(f"keep_rate has {len(keep_rate)} entries but depth is {depth}")
        if reuse is not None and min(keep_rate) < 1:
            raise ValueError("EViT token reorganization cannot be combined with DVT reuse")
        self.num_classes = num_classes
        self.embed_dim = embed_dim
        self.depth = depth
        self.num_heads = num_heads
        self.image_size = image_size
        self.keep_rate = keep_rate

        self.tokenizer = tokenizer.build(image_size, embed_dim, token_dim)
        self.grid_size = self.tokenizer.grid_size
        num_tokens = self.grid_size ** 2 + 1
        self.cls_token = Parameter(initializer(TruncatedNormal(0.02), (1, 1, embed_dim)), name="cls_token")
        if sinusoid_pos_embed:
            self.pos_embed = Parameter(Tensor(sinusoid_position_table(num_tokens, embed_dim)),
                                       name="pos_embed", requires_grad=False)
        else:
            self.pos_embed = Parameter(initializer(TruncatedNormal(0.02), (1, num_tokens, embed_dim)),
                                       name="pos_embed")

        use_features = reuse is not None and reuse.feature_reuse
        feature_dim = reuse.feature_dim if use_features else 0
        drop_rates = np.linspace(0, drop_path_rate, depth) if depth > 1 else [drop_path_rate]
        blocks = []
        for i in range(depth):
            feature_reuse = None
            if use_features:
                feature_reuse = FeatureReuse(reuse.embed_dim, reuse.hidden_dim, reuse.feature_dim,
                                             reuse.grid_size, self.grid_size, norm_eps)
            blocks.append(Block(embed_dim, num_heads, mlp_ratio, qkv_bias=qkv_bias, qk_scale=qk_scale,
                                norm_eps=norm_eps, drop_path=float(drop_rates[i]),
                                feature_reuse=feature_reuse, feature_reuse_dim=feature_dim,
                                keep_rate=keep_rate[i], fuse_token=fuse_token))
        self.blocks = nn.CellList(blocks)
        self.relation_reuse = None
        if reuse is not None and reuse.relation_reuse:
            self.relation_reuse = RelationReuse(reuse.relation_channels, depth * num_heads,
                                                reuse.grid_size, self.grid_size)
        self.norm = LayerNorm((embed_dim,), epsilon=norm_eps)
        self.head = Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        self._init_weights()

    def _init_weights(self) -> None:
        for _, cell in self.cells_and_names():
            if isinstance(cell, nn.Dense):
                cell.weight.set_data(initializer(TruncatedNormal(0.02), cell.weight.shape))
                if cell.has_bias:
                    cell.bias.set_data(initializer("zeros", cell.bias.shape))

    def forward_stage(self, x: Tensor, reused_tokens: Optional[Tensor] = None,
                      reused_relations: Optional[Tensor] = None, keep_rate: Optional[float] = None,
                      collect_relations: bool = True) -> Tuple[Tensor, Tensor, Optional[Tensor], List[Tensor]]:
        """Return ``(logits, tokens_before_norm, attention_logits_or_None, kept_indices)``."""
        tokens = self.tokenizer(x)
        cls = ops.broadcast_to(self.cls_token, (tokens.shape[0], 1, self.embed_dim))
        x = ops.concat((cls, tokens), axis=1) + self.pos_embed
        layer_biases = None
        if self.relation_reuse is not None and reused_relations is not None:
            layer_biases = ops.split(self.relation_reuse(reused_relations), self.num_heads, axis=1)
        relations = []
        kept = []
        for i, block in enumerate(self.blocks):
            layer_bias = None if layer_biases is None else layer_biases[i]
            x, logits, kept_idx = block(x, reused_tokens, layer_bias, keep_rate)
            if collect_relations:
                relations.append(logits)
            if kept_idx is not None:
                kept.append(kept_idx)
        logits = self.head(self.norm(x)[:, 0])
        stacked = ops.concat(relations, axis=1) if collect_relations else None
        return logits, x, stacked, kept

    def construct(self, x: Tensor, keep_rate: Optional[float] = None, return_indices: bool = False):
        logits, _, _, kept = self.forward_stage(x, keep_rate=keep_rate, collect_relations=False)
        if return_indices:
            return logits, tuple(kept)
        return logits
