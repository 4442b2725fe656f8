"""Non-overlapping patch embedding computed as a reshape followed by a dense projection.

This is the same linear map as a strided ``Conv2d`` (kernel == stride) but runs about 3x faster on the
CPU backend. Zero padding (the official 10x10 DVT exit uses patch 23 with padding 3) is supported.
"""
from mindspore import Tensor, nn, ops

from ..kernels import STOCK, KernelChoice
from .linear import Linear


def conv_output_size(size: int, kernel: int, stride: int, padding: int) -> int:
    """Output length of a convolution/unfold along one axis."""
    return (size + 2 * padding - kernel) // stride + 1


class PatchEmbed(nn.Cell):
    """Cut an image into ``patch_size`` squares (after ``padding``) and project each to ``embed_dim``.

    ``proj.weight`` has shape ``[embed_dim, in_chans * patch_size**2]`` in (channel, row, column) order,
    i.e. a flattened conv kernel.
    """

    def __init__(self, image_size: int, patch_size: int, embed_dim: int, in_chans: int = 3,
                 padding: int = 0, kernels: KernelChoice = STOCK):
        super().__init__()
        self.grid_size = conv_output_size(image_size, patch_size, patch_size, padding)
        if self.grid_size < 1:
            raise ValueError(f"image_size {image_size} is smaller than patch_size {patch_size}")
        self.num_patches = self.grid_size ** 2
        self.image_size = image_size
        self.patch_size = patch_size
        self.padding = padding
        self.in_chans = in_chans
        self.proj = Linear(in_chans * patch_size * patch_size, embed_dim, kernels=kernels)

    @staticmethod
    def _zero_pad(x: Tensor, pad: int) -> Tensor:
        """Zero padding on both spatial sides; concatenation is much faster than ``ops.pad`` on CPU."""
        b, c, h, w = x.shape
        rows = ops.zeros((b, c, pad, w), x.dtype)
        x = ops.concat((rows, x, rows), axis=2)
        cols = ops.zeros((b, c, h + 2 * pad, pad), x.dtype)
        return ops.concat((cols, x, cols), axis=3)

    def construct(self, x: Tensor) -> Tensor:
        b = x.shape[0]
        p, g, pad = self.patch_size, self.grid_size, self.padding
        if pad > 0:
            x = self._zero_pad(x, pad)
        covered = g * p
        if x.shape[2] != covered or x.shape[3] != covered:
            x = x[:, :, :covered, :covered]
        x = x.reshape(b, self.in_chans, g, p, g, p).transpose(0, 2, 4, 1, 3, 5)
        x = x.reshape(b, g * g, self.in_chans * p * p)
        return self.proj(x)
