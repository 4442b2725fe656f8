"""How a backbone turns an image into tokens: plain patches (DeiT) or tokens-to-token (T2T-ViT).

A tokenizer is plain data. It knows the token grid it gives for an image size (:meth:`grid_size`), which
is the one place a stage's grid is derived, and it builds its layer (:meth:`build`).
"""
from dataclasses import dataclass
from typing import Tuple, Union

from mindspore import nn

from ..kernels import STOCK, KernelChoice
from ..layers import PatchEmbed, TokensToToken
from ..layers.patch_embed import conv_output_size


@dataclass(frozen=True)
class PatchTokenizer:
    """Non-overlapping ``patch_size`` patches after ``padding`` zeros on each side.

    The patches must tile the padded image exactly, unless ``crop``: then the pixels past the last whole
    patch (right and bottom) are dropped, as a strided convolution does. The registered models crop, as
    the official code does at other resolutions than 224.
    """

    patch_size: int = 16
    padding: int = 0
    crop: bool = False

    def grid_size(self, image_size: int) -> int:
        return conv_output_size(image_size, self.patch_size, self.patch_size, self.padding)

    def check(self, image_size: int) -> None:
        """Raise ``ValueError`` (naming the field) if the patches do not tile the padded image exactly."""
        covered = image_size + 2 * self.padding
        if self.patch_size < 1 or self.padding < 0:
            raise ValueError(f"patch_size must be >= 1 and padding >= 0, got {self.patch_size} and {self.padding}")
        if covered < self.patch_size or (covered % self.patch_size and not self.crop):
            raise ValueError(f"patch_size {self.patch_size} with padding {self.padding} does not tile a "
                             f"{image_size}-pixel image ({covered} = {covered // self.patch_size} x "
                             f"{self.patch_size} + {covered % self.patch_size}); change patch_size, padding or "
                             "image_size, or set crop: true to drop the remainder")

    def build(self, image_size: int, embed_dim: int, token_dim: int, kernels: KernelChoice = STOCK) -> nn.Cell:
        return PatchEmbed(image_size, self.patch_size, embed_dim, padding=self.padding, kernels=kernels)

    def describe(self) -> str:
        return f"patch {self.patch_size}" + (f", padding {self.padding}" if self.padding else "")


@dataclass(frozen=True)
class T2TTokenizer:
    """Performer tokens-to-token module; ``unfolds`` holds ``(kernel, stride, padding)`` per soft split."""

    unfolds: Tuple[Tuple[int, int, int], ...] = ((7, 4, 2), (3, 2, 1), (3, 2, 1))

    def grid_size(self, image_size: int) -> int:
        size = image_size
        for kernel, stride, padding in self.unfolds:
            size = conv_output_size(size, kernel, stride, padding)
        return size

    def check(self, image_size: int) -> None:
        if len(self.unfolds) < 2:
            raise ValueError(f"unfolds needs at least two (kernel, stride, padding) entries, got {list(self.unfolds)}")
        for unfold in self.unfolds:
            if len(unfold) != 3 or any(isinstance(v, bool) or not isinstance(v, int) for v in unfold) \
                    or unfold[0] < 1 or unfold[1] < 1 or unfold[2] < 0:
                raise ValueError(f"unfolds entry {list(unfold)} is not (kernel >= 1, stride >= 1, padding >= 0)")
        if self.grid_size(image_size) < 1:
            raise ValueError(f"unfolds {[list(u) for u in self.unfolds]} leave no tokens at image_size {image_size}")

    def build(self, image_size: int, embed_dim: int, token_dim: int, kernels: KernelChoice = STOCK) -> nn.Cell:
        return TokensToToken(image_size, self.unfolds, embed_dim, token_dim=token_dim, kernels=kernels)

    def describe(self) -> str:
        return "T2T " + " ".join("/".join(map(str, u)) for u in self.unfolds)


Tokenizer = Union[PatchTokenizer, T2TTokenizer]
