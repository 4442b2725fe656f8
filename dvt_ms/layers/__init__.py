"""Building blocks shared by every backbone."""
from .activation import GELU
from .attention import Attention
from .block import Block
from .drop_path import DropPath
from .linear import Linear
from .mlp import Mlp
from .norm import LayerNorm
from .patch_embed import PatchEmbed
from .reuse import FeatureReuse, RelationReuse
from .tokens_to_token import TokenPerformer, TokensToToken

__all__ = [
    "GELU", "Attention", "Block", "DropPath", "LayerNorm", "Linear", "Mlp", "PatchEmbed",
    "FeatureReuse", "RelationReuse", "TokenPerformer", "TokensToToken",
]
