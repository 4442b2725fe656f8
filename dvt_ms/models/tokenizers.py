"""How a backbone turns an image into tokens: plain patches (DeiT) or tokens-to-token (T2T-ViT)."""
from dataclasses import dataclass
from typing import Tuple, Union

from mindspore import nn

from ..layers import PatchEmbed, TokensToToken


@dataclass(frozen=True)
class PatchTokenizer:
    """Non-overlapping ``patch_size`` patches after ``padding`` zeros on each side."""

    patch_size: int = 16
    padding: int = 0

    def build(self, image_size: int, embed_dim: int, token_dim: int) -> nn.Cell:
        return PatchEmbed(image_size, self.patch_size, embed_dim, padding=self.padding)


@dataclass(frozen=True)
class T2TTokenizer:
    """Performer tokens-to-token module; ``unfolds`` holds ``(kernel, stride, padding)`` per soft split."""

    unfolds: Tuple[Tuple[int, int, int], ...] = ((7, 4, 2), (3, 2, 1), (3, 2, 1))

    def build(self, image_size: int, embed_dim: int, token_dim: int) -> nn.Cell:
        return TokensToToken(image_size, self.unfolds, embed_dim, token_dim=token_dim)


Tokenizer = Union[PatchTokenizer, T2TTokenizer]
