"""One configurable Vision Transformer: DeiT, T2T-ViT, EViT and every DVT stage are instances of it."""
from typing import List, Optional, Tuple

import numpy as np
from mindspore import Parameter, Tensor, nn, ops
from mindspore.common.initializer import TruncatedNormal, initializer

from ..kernels import STOCK, KernelChoice
from ..layers import Block, FeatureReuse, LayerNorm, Linear, RelationReuse
from ..layers.token_reorganization import follow_rows_and_columns
from .cascade_spec import CascadeSpec


def sinusoid_position_table(num_positions: int, dim: int) -> np.ndarray:
    """Fixed sine/cosine position table ``[1, num_positions, dim]`` (sin on even, cos on odd channels)."""
    positions = np.arange(num_positions, dtype=np.float64)[:, None]
    rates = np.power(10000.0, 2 * (np.arange(dim) // 2) / dim)[None, :]
    table = positions / rates
    table[:, 0::2] = np.sin(table[:, 0::2])
    table[:, 1::2] = np.cos(table[:, 1::2])
    return table[None].astype(np.float32)


class VisionTransformer(nn.Cell):
    """Class-token ViT for stage ``index`` of ``spec``: its tokenizer, blocks, EViT keep rates and reuse.

    A plain DeiT/T2T-ViT/EViT model is the only stage of a one-stage spec. ``construct(x)`` returns logits
    (and EViT's kept indices with ``return_indices=True``). DVT stages are :class:`~dvt_ms.models.dvt.
    CascadeStage`, which call :meth:`forward_features` with what they reuse.
    """

    def __init__(self, spec: CascadeSpec, index: int = 0, kernels: KernelChoice = STOCK):
        super().__init__()
        stage = spec.stages[index]
        self.spec = spec
        self.index = index
        self.kernels = kernels
        self.num_classes = spec.num_classes
        self.embed_dim = stage.embed_dim
        self.depth = stage.depth
        self.num_heads = stage.num_heads
        self.image_size = spec.image_size
        self.keep_rate = stage.keep_rates
        self.grid_size = spec.grid_size(index)
        self.gives_relations = spec.gives_relations(index)
        self.detach_reused_tokens = stage.detach_reused_tokens
        tanh = stage.gelu == "tanh"

        self.tokenizer = stage.tokenizer.build(spec.image_size, stage.embed_dim, stage.token_dim, kernels)
        num_tokens = spec.num_tokens(index)
        embed_dim = stage.embed_dim
        self.cls_token = Parameter(initializer(TruncatedNormal(0.02), (1, 1, embed_dim)), name="cls_token")
        if stage.sinusoid_pos_embed:
            self.pos_embed = Parameter(Tensor(sinusoid_position_table(num_tokens, embed_dim)),
                                       name="pos_embed", requires_grad=False)
        else:
            self.pos_embed = Parameter(initializer(TruncatedNormal(0.02), (1, num_tokens, embed_dim)),
                                       name="pos_embed")

        features_from, relations_from = stage.features_from, stage.relations_from
        follow = stage.prunes and (features_from is not None or relations_from is not None)
        depth = stage.depth
        drop_rates = np.linspace(0, spec.drop_path_rate, depth) if depth > 1 else [spec.drop_path_rate]
        blocks = []
        for i in range(depth):
            feature_reuse = None
            if features_from is not None:
                feature_reuse = FeatureReuse(spec.stages[features_from].embed_dim, stage.reuse_hidden_dim,
                                             stage.reuse_feature_dim, spec.grid_size(features_from),
                                             self.grid_size, stage.norm_eps, kernels=kernels,
                                             approximate_gelu=tanh, apply_norm=stage.feature_reuse_norm)
            blocks.append(Block(embed_dim, stage.num_heads, stage.mlp_ratio, qkv_bias=stage.qkv_bias,
                                qk_scale=stage.qk_scale, norm_eps=stage.norm_eps, drop_path=float(drop_rates[i]),
                                feature_reuse=feature_reuse,
                                feature_reuse_dim=stage.reuse_feature_dim if feature_reuse else 0,
                                keep_rate=stage.keep_rates[i], fuse_token=stage.fuse_token,
                                follow_tokens=follow, approximate_gelu=tanh, kernels=kernels))
        self.blocks = nn.CellList(blocks)
        self.relation_reuse = None
        if relations_from is not None:
            self.relation_reuse = RelationReuse(spec.stages[relations_from].relation_channels,
                                                stage.relation_channels, spec.grid_size(relations_from),
                                                self.grid_size, self.num_heads, kernels=kernels,
                                                approximate_gelu=tanh)
        self.norm = LayerNorm((embed_dim,), epsilon=stage.norm_eps, kernels=kernels)
        self.head = Linear(embed_dim, spec.num_classes, kernels=kernels) if spec.num_classes > 0 else nn.Identity()
        self._init_weights()

    def _init_weights(self) -> None:
        for _, cell in self.cells_and_names():
            if isinstance(cell, nn.Dense):
                cell.weight.set_data(initializer(TruncatedNormal(0.02), cell.weight.shape))
                if cell.has_bias:
                    cell.bias.set_data(initializer("zeros", cell.bias.shape))

    def forward_features(self, x: Tensor, reused_tokens: Optional[Tensor] = None,
                         reused_relations: Optional[Tensor] = None,
                         keep_rate: Optional[float] = None) -> Tuple[Tensor, Optional[Tensor], List[Tensor]]:
        """``(final tokens before the norm, stacked attention logits or None, kept indices per pruning block)``.

        The logits ``[B, depth * heads, N, N]`` are stacked only if a later stage reuses them.
        """
        if reused_tokens is not None and self.detach_reused_tokens:
            reused_tokens = ops.stop_gradient(reused_tokens)
        tokens = self.tokenizer(x)
        cls = ops.broadcast_to(self.cls_token, (tokens.shape[0], 1, self.embed_dim))
        x = ops.concat((cls, tokens), axis=1) + self.pos_embed
        layer_biases = None
        if self.relation_reuse is not None:
            layer_biases = self.relation_reuse(reused_relations)
        relations = []
        kept = []
        selections = ()  # what the full-grid reused inputs follow in a pruning stage
        for i, block in enumerate(self.blocks):
            layer_bias = None
            if layer_biases is not None:
                layer_bias = follow_rows_and_columns(layer_biases[i], selections)
            x, logits, kept_idx, selections = block(x, reused_tokens, layer_bias, keep_rate, selections)
            if self.gives_relations:
                relations.append(logits)
            if kept_idx is not None:
                kept.append(kept_idx)
        stacked = ops.concat(relations, axis=1) if self.gives_relations else None
        return x, stacked, kept

    def head_logits(self, tokens: Tensor) -> Tensor:
        """Final norm, class token, classifier."""
        return self.head(self.norm(tokens)[:, 0])

    def construct(self, x: Tensor, keep_rate: Optional[float] = None, return_indices: bool = False):
        tokens, _, kept = self.forward_features(x, keep_rate=keep_rate)
        logits = self.head_logits(tokens)
        if return_indices:
            return logits, tuple(kept)
        return logits
