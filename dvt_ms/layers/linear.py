"""Fully connected layer that runs on the fused CPU kernels when they are active."""
from mindspore import Tensor, nn, ops

from ..kernels import STOCK, KernelChoice, UsesKernels
from ..kernels import ops as fused_ops
from .products import low_precision_product


class Linear(UsesKernels, nn.Dense):
    """``nn.Dense`` (same ``weight``/``bias`` parameters) over the last axis of any input.

    With the fused CPU kernels, the product runs on MindSpore's bundled oneDNN (in the model's precision, fp32
    or bf16) and the bias
    gradient is one column sum (:mod:`dvt_ms.kernels`); ``fused_project`` (no bias) lets
    :class:`~dvt_ms.layers.mlp.Mlp` fuse the bias into the GELU, :meth:`add_to` adds the layer to a
    residual inside the product, and :meth:`narrow` gives the output in the dtype the fused kernels pass
    activations in (:data:`dvt_ms.kernels.ops.ACTIVATION_DTYPES`), for a consumer that is a fused kernel.
    Inputs may be float32 or, on the fused kernels, such activations. On MindSpore's ops the product runs in
    the model's precision (:func:`~dvt_ms.layers.products.low_precision_product`), through ``nn.Dense``'s
    ``MatMul`` primitive, which ``mindspore.amp`` O1 casts as well.
    """

    def __init__(self, in_features: int, out_features: int, has_bias: bool = True,
                 kernels: KernelChoice = STOCK):
        super().__init__(in_features, out_features, has_bias=has_bias)
        self.kernels = kernels
        if kernels.available:
            self.fused_linear = fused_ops.linear_op(kernels.kernel_precision)
            self.fused_project = fused_ops.project_op(precision=kernels.kernel_precision)
            self.fused_residual = fused_ops.linear_residual_op(kernels.kernel_precision)
            self.fused_linear_narrow = fused_ops.linear_op(kernels.kernel_precision, narrow=True)
            self.fused_project_narrow = fused_ops.project_op(precision=kernels.kernel_precision, narrow=True)

    def construct(self, x: Tensor) -> Tensor:
        if not self.fused:
            shape = x.shape  # the parameters follow the input's dtype (float16 under mindspore.amp O2/O3)
            weight = ops.cast(self.weight, x.dtype)
            low = self.product_dtype
            if low is None:  # a call of the primitive itself, which mindspore.amp O1's rewrite casts
                y = self.matmul(x.reshape(-1, shape[-1]), weight)
            else:
                y = low_precision_product(self.matmul, x.reshape(-1, shape[-1]), weight, low)
            if self.has_bias:
                y = self.bias_add(y, ops.cast(self.bias, y.dtype))
            return y.reshape(shape[:-1] + (self.out_channels,))
        if self.has_bias:
            return self.fused_linear(x, self.weight, self.bias)
        return self.fused_project(x, self.weight)

    def add_to(self, x: Tensor, residual: Tensor) -> Tensor:
        """``residual + self(x)``; one kernel on the fused CPU kernels (no pass over the sum)."""
        if self.fused and self.has_bias:
            return self.fused_residual(x, self.weight, self.bias, residual)
        return residual + self.construct(x)

    def narrow(self, x: Tensor) -> Tensor:
        """``self(x)``, on the fused kernels in their activation dtype (bfloat16 in a bf16 model)."""
        if not self.fused:
            return self.construct(x)
        if self.has_bias:
            return self.fused_linear_narrow(x, self.weight, self.bias)
        return self.fused_project_narrow(x, self.weight)
