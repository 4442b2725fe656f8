"""Dynamic Vision Transformer: a cascade of ViTs over more and more tokens, each with its own exit."""
from typing import Sequence, Tuple

from mindspore import Tensor, nn

from .tokenizers import Tokenizer
from .vision_transformer import ReuseSource, VisionTransformer


class DynamicVisionTransformer(nn.Cell):
    """A cascade of :class:`VisionTransformer` stages, one per tokenizer in ``tokenizers``.

    Every stage after the first reuses the previous stage's final tokens (``feature_reuse``) and its
    attention logits from every layer (``relation_reuse``). Grid sizes and channel counts of the reuse
    modules come from the stages themselves. ``construct`` returns every exit's logits as a tuple.
    """

    def __init__(self, tokenizers: Sequence[Tokenizer], *, feature_reuse: bool = True,
                 relation_reuse: bool = True, reuse_feature_dim: int = 48, reuse_hidden_dim: int = 128,
                 **stage_kwargs):
        super().__init__()
        if len(tokenizers) < 1:
            raise ValueError("a DVT cascade needs at least one stage")
        self.feature_reuse = feature_reuse
        self.relation_reuse = relation_reuse
        stages = []
        reuse = None
        for tokenizer in tokenizers:
            stage = VisionTransformer(tokenizer=tokenizer, reuse=reuse, **stage_kwargs)
            stages.append(stage)
            reuse = ReuseSource(grid_size=stage.grid_size, embed_dim=stage.embed_dim,
                                relation_channels=stage.depth * stage.num_heads,
                                feature_reuse=feature_reuse, relation_reuse=relation_reuse,
                                feature_dim=reuse_feature_dim, hidden_dim=reuse_hidden_dim)
        self.stages = nn.CellList(stages)
        self.num_exits = len(stages)

    def construct(self, x: Tensor) -> Tuple[Tensor, ...]:
        outputs = []
        tokens = None
        relations = None
        for stage in self.stages:
            logits, tokens, relations, _ = stage.forward_stage(
                x, tokens if self.feature_reuse else None, relations if self.relation_reuse else None,
                None, self.relation_reuse)
            outputs.append(logits)
        return tuple(outputs)
