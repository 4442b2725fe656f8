"""MindSpore custom operators over the fused CPU kernels of ``cpu_ops.cc``, each with its gradient.

Every op works on float32 over the last axis of its first input (any leading shape).
"""
from functools import lru_cache

from mindspore import ops
from mindspore.common import dtype as mstype

from . import library_path


def _same(x, *_):
    return x


def _element_type(dtype):
    """``Float32`` from ``Float32``, ``Tensor[Float32]`` or ``Ref[Tensor[Float32]]`` (a Parameter)."""
    while hasattr(dtype, "element_type"):
        dtype = dtype.element_type()
    return dtype


def _aot(name: str, out_shape, out_dtype, bprop=None) -> ops.Custom:
    def float32_only(*dtypes):
        if any(_element_type(dtype) != mstype.float32 for dtype in dtypes):
            raise TypeError(f"the fused CPU kernel {name} takes float32 inputs, got {', '.join(map(str, dtypes))}; "
                            "build the model with cpu_kernels 'off' (dvt_ms.kernels) for other dtypes")
        return out_dtype(*dtypes)

    return ops.Custom(f"{library_path()}:{name}", out_shape=out_shape, out_dtype=float32_only, func_type="aot",
                      bprop=bprop)


@lru_cache(maxsize=None)
def layer_norm_op() -> ops.Custom:
    """``(x, gamma, beta, eps[1]) -> (y, mean, rstd)``."""
    backward = _aot("LayerNormBackward", lambda dy, x, g, m, r: (x, g, g), lambda dy, x, g, m, r: (x, g, g))

    def bprop(x, gamma, beta, eps, out, dout):
        dx, dgamma, dbeta = backward(dout[0], x, gamma, out[1], out[2])
        return dx, dgamma, dbeta, ops.zeros_like(eps)

    return _aot("LayerNormForward", lambda x, g, b, e: (x, x[:-1], x[:-1]), lambda x, g, b, e: (x, x, x), bprop)


@lru_cache(maxsize=None)
def bias_gelu_op() -> ops.Custom:
    """``(x, bias) -> GELU(x + bias)`` with the exact GELU."""
    backward = _aot("BiasGeluBackward", lambda dy, x, b: (x, b), lambda dy, x, b: (x, b))

    def bprop(x, bias, out, dout):
        return backward(dout, x, bias)

    return _aot("BiasGeluForward", _same, _same, bprop)


@lru_cache(maxsize=None)
def gelu_op() -> ops.Custom:
    """``x -> GELU(x)`` (exact), element-wise."""
    backward = _aot("GeluBackward", lambda dy, x: x, _same)

    def bprop(x, out, dout):
        return (backward(dout, x),)

    return _aot("GeluForward", _same, _same, bprop)


@lru_cache(maxsize=None)
def bias_add_op() -> ops.Custom:
    """``(x, bias) -> x + bias``; its bias gradient is one column-sum kernel."""
    column_sum = _aot("ColumnSum", lambda dy: dy[-1:], _same)

    def bprop(x, bias, out, dout):
        return dout, column_sum(dout)

    return _aot("BiasAddForward", _same, _same, bprop)


@lru_cache(maxsize=None)
def softmax_op() -> ops.Custom:
    """``x -> softmax(x)``."""
    backward = _aot("SoftmaxBackward", lambda dy, y: dy, _same)

    def bprop(x, out, dout):
        return (backward(dout, out),)

    return _aot("SoftmaxForward", _same, _same, bprop)


@lru_cache(maxsize=None)
def non_finite_count_op() -> ops.Custom:
    """``x -> [count]``: how many elements of ``x`` are NaN or +-Inf (as float32)."""
    return _aot("NonFiniteCount", lambda x: (1,), _same)


@lru_cache(maxsize=None)
def qkv_to_heads_op(num_heads: int) -> ops.Custom:
    """``(qkv [B, N, 3 * H * D], scale[1]) -> (q * scale, k, v)``, each ``[B, H, N, D]``."""
    backward = _aot("HeadsToQkv", lambda dq, dk, dv, s: (dq[0], dq[2], 3 * dq[1] * dq[3]), _same)

    def heads(qkv, scale):
        b, n, width = qkv
        shape = (b, num_heads, n, width // (3 * num_heads))
        return shape, shape, shape

    def bprop(qkv, scale, out, dout):
        return backward(dout[0], dout[1], dout[2], scale), ops.zeros_like(scale)

    return _aot("QkvToHeads", heads, lambda qkv, s: (qkv, qkv, qkv), bprop)


@lru_cache(maxsize=None)
def heads_to_tokens_op() -> ops.Custom:
    """``[B, H, N, D] -> [B, N, H * D]``."""
    backward = _aot("TokensToHeads", lambda dy, x: x, _same)

    def bprop(x, out, dout):
        return (backward(dout, x),)

    return _aot("HeadsToTokens", lambda x: (x[0], x[2], x[1] * x[3]), _same, bprop)
