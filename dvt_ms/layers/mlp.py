"""Two-layer perceptron used by transformer blocks and reuse modules."""
from typing import Optional

from mindspore import Tensor, nn

from ..kernels import STOCK, KernelChoice, UsesKernels
from ..kernels import ops as fused_ops
from .activation import GELU
from .linear import Linear


class Mlp(UsesKernels, nn.Cell):
    """fc1 -> GELU -> fc2; with the fused CPU kernels, fc1's bias and the exact GELU are one kernel, and in bf16
    they are the epilogue of fc1's product, whose bfloat16 output goes straight into fc2."""

    def __init__(self, in_features: int, hidden_features: int, out_features: Optional[int] = None,
                 kernels: KernelChoice = STOCK, approximate_gelu: bool = False):
        super().__init__()
        self.kernels = kernels
        self.fc1 = Linear(in_features, hidden_features, kernels=kernels)
        self.act = GELU(kernels, approximate_gelu)
        self.fc2 = Linear(hidden_features, out_features or in_features, kernels=kernels)
        self.fuse_bias_gelu = not approximate_gelu
        self.gelu_epilogue = kernels.available and self.fuse_bias_gelu and kernels.kernel_precision == "bf16"
        if kernels.available and self.fuse_bias_gelu:
            self.fused_bias_gelu = fused_ops.bias_gelu_op()
            if self.gelu_epilogue:
                self.fused_fc1_gelu = fused_ops.linear_gelu_op(kernels.kernel_precision)

    def construct(self, x: Tensor, residual: Optional[Tensor] = None) -> Tensor:
        """``fc2(GELU(fc1(x)))``, plus ``residual`` if given (added inside fc2's product when fused).
        ``x`` may be a fused kernels' activation (:class:`~dvt_ms.layers.norm.LayerNorm` with ``narrow=True``)."""
        if self.fused and self.fuse_bias_gelu and self.gelu_epilogue:
            hidden = self.fused_fc1_gelu(x, self.fc1.weight, self.fc1.bias)
        elif self.fused and self.fuse_bias_gelu:
            hidden = self.fused_bias_gelu(self.fc1.fused_project(x, self.fc1.weight), self.fc1.bias)
        else:
            hidden = self.act(self.fc1(x))
        if residual is None:
            return self.fc2(hidden)
        return self.fc2.add_to(hidden, residual)
