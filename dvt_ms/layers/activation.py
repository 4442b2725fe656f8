"""Exact (erf-based) GELU built from fast element-wise ops.

MindSpore's ``nn.GELU()`` defaults to the tanh approximation (off by ~5e-4 from torch's exact GELU) and
the CPU ``Erf`` kernel is slow, so erf is evaluated with the Abramowitz-Stegun 7.1.26 rational
approximation (absolute error below 1.5e-7), which is differentiable and vectorizes well.
"""
from mindspore import Tensor, nn, ops

_P = 0.3275911
_A1, _A2, _A3, _A4, _A5 = 0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429
_INV_SQRT2 = 0.7071067811865476


def erf_of_abs(ax: Tensor) -> Tensor:
    """``erf(|x|)`` given ``ax = |x|``, with absolute error below 1.5e-7."""
    t = 1.0 / (1.0 + _P * ax)
    poly = t * (_A1 + t * (_A2 + t * (_A3 + t * (_A4 + t * _A5))))
    return 1.0 - poly * ops.exp(-ax * ax)


def erf(x: Tensor) -> Tensor:
    """Error function with absolute error below 1.5e-7."""
    ax = ops.abs(x)
    return x / ops.maximum(ax, 1e-30) * erf_of_abs(ax)


class GELU(nn.Cell):
    """GELU(x) = x * Phi(x), with the exact Gaussian CDF (torch's default ``approximate='none'``).

    Written as ``0.5 * (x + |x| * erf(|x| / sqrt(2)))``, which needs no (slow) sign op.
    """

    def construct(self, x: Tensor) -> Tensor:
        ax = ops.abs(x)
        return 0.5 * (x + ax * erf_of_abs(ax * _INV_SQRT2))
