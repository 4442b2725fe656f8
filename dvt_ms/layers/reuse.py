"""DVT reuse modules: what a stage takes from the stage before it."""
from typing import Tuple

import numpy as np
from mindspore import Parameter, Tensor, nn, ops
from mindspore.common.initializer import TruncatedNormal, initializer

from ..kernels import STOCK, KernelChoice, UsesKernels
from ..kernels import ops as fused_ops
from .activation import GELU
from .mlp import Mlp
from .norm import LayerNorm
from .products import low_precision_product
from .resample import axis_resample_matrix, token_resample_matrix


class FeatureReuse(UsesKernels, nn.Cell):
    """Compress an earlier stage's final tokens and resample them onto this stage's grid.

    Input ``[B, 1 + src**2, in_dim]``; output ``[B, 1 + dst**2, out_dim]`` whose class-token slot is zero.
    With ``apply_norm=False`` the LayerNorm is kept (its parameters load) but the MLP reads the tokens
    unnormalized, as the official MindSpore DVT computes.
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, src_grid: int, dst_grid: int,
                 norm_eps: float, kernels: KernelChoice = STOCK, approximate_gelu: bool = False,
                 apply_norm: bool = True):
        super().__init__()
        self.kernels = kernels
        self.apply_norm = apply_norm
        self.norm = LayerNorm((in_dim,), epsilon=norm_eps, kernels=kernels)
        self.mlp = Mlp(in_dim, hidden_dim, out_dim, kernels=kernels, approximate_gelu=approximate_gelu)
        self.resample = Tensor(token_resample_matrix(src_grid, dst_grid, class_token_weight=0.0))
        if kernels.available:
            self.fused_resample = fused_ops.channel_mix_op(constant=True, precision=kernels.kernel_precision)
            self.no_bias = Tensor(np.zeros(self.resample.shape[0], np.float32))

    def construct(self, tokens: Tensor) -> Tensor:
        compressed = self.mlp(self.norm(tokens) if self.apply_norm else tokens)
        if self.fused:
            return self.fused_resample(compressed, self.resample, self.no_bias)
        # the constant follows the tokens' dtype (float16 under mindspore.amp O2/O3)
        return low_precision_product(ops.matmul, ops.cast(self.resample, compressed.dtype), compressed,
                                     self.product_dtype)


class ChannelMix(UsesKernels, nn.Cell):
    """A 1x1 convolution over axis 1 of ``[B, C, M]``, computed as a matrix product.

    In a bf16 model on the fused kernels, ``fused_gelu`` is ``GELU(self(x))`` (exact GELU) as one product
    whose epilogue adds the bias and applies the GELU, with a bfloat16 result for the next product.
    """

    def __init__(self, in_channels: int, out_channels: int, kernels: KernelChoice = STOCK):
        super().__init__()
        self.kernels = kernels
        self.weight = Parameter(initializer(TruncatedNormal(0.02), (out_channels, in_channels)), name="weight")
        self.bias = Parameter(initializer("zeros", (out_channels,)), name="bias")
        self.gelu_epilogue = kernels.available and kernels.kernel_precision == "bf16"
        if kernels.available:
            self.fused_mix = fused_ops.channel_mix_op(precision=kernels.kernel_precision)
        if self.gelu_epilogue:
            self.fused_gelu = fused_ops.channel_mix_gelu_op(kernels.kernel_precision)

    def construct(self, x: Tensor) -> Tensor:
        if self.fused:
            return self.fused_mix(x, self.weight, self.bias)
        mixed = low_precision_product(ops.matmul, ops.cast(self.weight, x.dtype), x, self.product_dtype)
        return mixed + ops.cast(self.bias, mixed.dtype).reshape(-1, 1)


class RelationReuse(UsesKernels, nn.Cell):
    """Mix the previous stage's attention logits across (layer, head) channels and resample them.

    Input ``[B, in_channels, 1 + src**2, 1 + src**2]`` (all layers' logits, layer-major); output one
    ``[B, heads, 1 + dst**2, 1 + dst**2]`` relation bias per layer (``out_channels / heads`` of them). Class-token
    rows and columns are carried over unresampled, image-token rows and columns are resampled on the grid.
    """

    def __init__(self, in_channels: int, out_channels: int, src_grid: int, dst_grid: int, heads: int,
                 expansion: int = 3, kernels: KernelChoice = STOCK, approximate_gelu: bool = False):
        super().__init__()
        if out_channels % heads:
            raise ValueError(f"RelationReuse: out_channels {out_channels} is not a whole number of layers of "
                             f"{heads} heads")
        self.kernels = kernels
        self.fc1 = ChannelMix(in_channels, out_channels * expansion, kernels)
        self.act = GELU(kernels, approximate_gelu)
        self.fc2 = ChannelMix(out_channels * expansion, out_channels, kernels)
        self.resample_t = Tensor(np.ascontiguousarray(token_resample_matrix(src_grid, dst_grid, 1.0).T))
        self.out_channels = out_channels
        self.heads = heads
        self.layers = out_channels // heads
        if kernels.available:  # the same R, as the sparse axis matrix it is made of
            self.axis = Tensor(axis_resample_matrix(src_grid, dst_grid).astype(np.float32))
            self.class_weight = Tensor(np.ones(1, np.float32))
            self.fused_resample = fused_ops.grid_resample_op(self.layers)

    def construct(self, relations: Tensor) -> Tuple[Tensor, ...]:
        b, c, n, _ = relations.shape
        flat = relations.reshape(b, c, n * n)
        if self.fused and self.fc1.gelu_epilogue and not self.act.approximate:
            # bf16: bias + GELU inside fc1's product, whose bfloat16 result goes straight into fc2's
            mixed = self.fc2(self.fc1.fused_gelu(flat, self.fc1.weight, self.fc1.bias))
        else:
            mixed = self.fc2(self.act(self.fc1(flat)))
        if self.fused:
            per_layer = self.fused_resample(mixed, self.axis, self.class_weight)
            return (per_layer,) if self.layers == 1 else per_layer
        dst = self.resample_t.shape[1]
        # A @ R @ A.T as two plain 2-D products (a batched product would copy A once per map):
        # (R.T @ A.T) is (A @ R).T, transposed back, then (A @ R) @ A.T.
        low, resample_t = self.product_dtype, ops.cast(self.resample_t, mixed.dtype)
        maps = mixed.reshape(b * self.out_channels, n, n).transpose(0, 2, 1).reshape(-1, n)
        rows = low_precision_product(ops.matmul, maps, resample_t, low).reshape(-1, n, dst).transpose(0, 2, 1)
        both = low_precision_product(ops.matmul, rows.reshape(-1, n), resample_t, low)
        return ops.split(both.reshape(b, self.out_channels, dst, dst), self.heads, axis=1)
