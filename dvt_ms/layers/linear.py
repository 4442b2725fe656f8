"""Fully connected layer whose bias runs on the fused CPU kernels when they are active."""
from mindspore import Tensor, nn

from ..kernels import cpu_kernels_active


class Linear(nn.Dense):
    """``nn.Dense`` (same ``weight``/``bias`` parameters) over the last axis of any input.

    With the fused CPU kernels, the bias is added by a kernel whose gradient is one column sum (MindSpore's
    ``BiasAddGrad`` is several times slower), and :meth:`project` lets a caller fuse the bias into the
    next op (:class:`~dvt_ms.layers.mlp.Mlp` fuses it into the GELU).
    """

    def __init__(self, in_features: int, out_features: int, has_bias: bool = True):
        super().__init__(in_features, out_features, has_bias=has_bias)
        self.fused = cpu_kernels_active()
        if self.fused:
            from ..kernels.ops import bias_add_op

            self.fused_bias_add = bias_add_op()

    def project(self, x: Tensor) -> Tensor:
        """``x @ weight.T`` without the bias."""
        shape = x.shape
        out = self.matmul(x.reshape(-1, shape[-1]), self.weight)
        return out.reshape(shape[:-1] + (out.shape[-1],))

    def construct(self, x: Tensor) -> Tensor:
        if not self.fused:
            return super().construct(x)
        out = self.project(x)
        return self.fused_bias_add(out, self.bias) if self.has_bias else out
