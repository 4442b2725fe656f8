"""Two-layer perceptron used by transformer blocks and reuse modules."""
from typing import Optional

from mindspore import Tensor, nn

from ..kernels import STOCK, KernelChoice, UsesKernels
from ..kernels import ops as fused_ops
from .activation import GELU
from .linear import Linear


class Mlp(UsesKernels, nn.Cell):
    """fc1 -> GELU -> fc2; with the fused CPU kernels, fc1's bias and the exact GELU are one kernel."""

    def __init__(self, in_features: int, hidden_features: int, out_features: Optional[int] = None,
                 kernels: KernelChoice = STOCK, approximate_gelu: bool = False):
        super().__init__()
        self.kernels = kernels
        self.fc1 = Linear(in_features, hidden_features, kernels=kernels)
        self.act = GELU(kernels, approximate_gelu)
        self.fc2 = Linear(hidden_features, out_features or in_features, kernels=kernels)
        self.fuse_bias_gelu = not approximate_gelu
        if kernels.available and self.fuse_bias_gelu:
            self.fused_bias_gelu = fused_ops.bias_gelu_op()

    def construct(self, x: Tensor, residual: Optional[Tensor] = None) -> Tensor:
        """``fc2(GELU(fc1(x)))``, plus ``residual`` if given (added inside fc2's product when fused)."""
        if self.fused and self.fuse_bias_gelu:
            hidden = self.fused_bias_gelu(self.fc1.fused_project(x, self.fc1.weight), self.fc1.bias)
        else:
            hidden = self.act(self.fc1(x))
        if residual is None:
            return self.fc2(hidden)
        return self.fc2.add_to(hidden, residual)
