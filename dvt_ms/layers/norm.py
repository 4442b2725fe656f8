"""LayerNorm over the last axis, on the fused CPU kernel when it is active (:mod:`dvt_ms.kernels`)."""
from typing import Tuple

import numpy as np
from mindspore import Tensor, nn

from ..kernels import STOCK, KernelChoice, UsesKernels
from ..kernels import ops as fused_ops


class LayerNorm(UsesKernels, nn.LayerNorm):
    """``nn.LayerNorm`` with the same ``gamma``/``beta`` parameters and a fused CPU forward and backward.

    ``narrow=True`` (for a norm whose consumer is a fused product) gives the output on the fused kernels in
    their activation dtype (bfloat16 in a bf16 model); the mean and variance are float32 either way. It is
    fixed when the layer is built, not a second method, so that ``mindspore.amp``'s wrapping of LayerNorm
    cells (O2/O3) keeps working.
    """

    def __init__(self, normalized_shape: Tuple[int], epsilon: float = 1e-5, kernels: KernelChoice = STOCK,
                 narrow: bool = False):
        super().__init__(normalized_shape, epsilon=epsilon)
        self.kernels = kernels
        if kernels.available:
            self.fused_op = fused_ops.layer_norm_op(kernels.kernel_precision, narrow=True) if narrow else \
                fused_ops.layer_norm_op()
            self.eps = Tensor(np.array([epsilon], np.float32))

    def construct(self, x: Tensor) -> Tensor:
        if self.fused:
            return self.fused_op(x, self.gamma, self.beta, self.eps)[0]
        return super().construct(x)
