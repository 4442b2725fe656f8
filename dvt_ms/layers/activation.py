"""GELU: exact (erf-based) by default, torch's ``approximate='none'``; or the tanh approximation.

MindSpore's ``nn.GELU()`` defaults to the tanh approximation, which is off by about 5e-4. This one uses
``ops.erf``, or the fused CPU kernel when it is active (:mod:`dvt_ms.kernels`). On MindSpore 2.10's CPU
backend ``ops.erf`` costs the same as an Abramowitz-Stegun polynomial in the forward pass and trains a
DeiT-S step about 20% faster, because its gradient is one fused kernel instead of the polynomial's chain
of element-wise ops (BENCHMARKS.md).
"""
from mindspore import Tensor, nn, ops

from ..kernels import STOCK, KernelChoice, UsesKernels
from ..kernels import ops as fused_ops

_INV_SQRT2 = 0.7071067811865476


class GELU(UsesKernels, nn.Cell):
    """GELU(x) = x * Phi(x) with the exact Gaussian CDF, or with ``approximate`` the tanh form of
    MindSpore's ``nn.GELU()`` default (the official MindSpore DVT's; MindSpore's op, no fused kernel)."""

    def __init__(self, kernels: KernelChoice = STOCK, approximate: bool = False):
        super().__init__()
        self.kernels = kernels
        self.approximate = approximate
        if kernels.available and not approximate:
            self.fused_op = fused_ops.gelu_op()

    def construct(self, x: Tensor) -> Tensor:
        if self.approximate:
            return ops.gelu(x, approximate="tanh")
        if self.fused:
            return self.fused_op(x)
        return 0.5 * x * (1.0 + ops.erf(x * _INV_SQRT2))
