"""MindSpore custom operators over the fused CPU kernels of ``cpu_ops.cc``, each with its gradient.

Row-wise ops work over the last axis for any leading shape; dense ops take ``[..., K]`` inputs and ``[N, K]``
weights; attention ops take ``[B, H, tokens, D]`` heads. The matrix-product ops take a ``precision`` (``fp32``,
or ``bf16``: bfloat16 operands, float32 accumulation; see :mod:`dvt_ms.kernels.choice`); their gradients are
computed in the same precision.

Weights, biases, residuals, LayerNorm statistics, attention logits and gradients of float32 tensors are float32.
The activations that travel from one fused kernel to the next (a LayerNorm's output into a product, q/k/v, the
attention probabilities, the attention output, the MLP's hidden layer) are in :data:`ACTIVATION_DTYPES` of
the precision (bfloat16 under ``bf16``) when the op is built with ``narrow=True``: the products round their
operands to bfloat16 anyway, so storing them in bfloat16 halves their bytes at no extra loss. Every op accepts
float32 or bfloat16 inputs; a gradient has the dtype of its input.
"""
from functools import lru_cache

from mindspore import ops
from mindspore.common import dtype as mstype
from mindspore.ops import signature as sig

from . import library_path


def _same(x, *_):
    return x


def _element_type(dtype):
    """``Float32`` from ``Float32``, ``Tensor[Float32]`` or ``Ref[Tensor[Float32]]`` (a Parameter)."""
    while hasattr(dtype, "element_type"):
        dtype = dtype.element_type()
    return dtype


#: the kernel name suffix of each precision of the matrix-product kernels (cpu_ops.cc DVT_PRODUCT_KERNEL)
PRODUCT_SUFFIX = {"fp32": "", "bf16": "Bf16"}


def _product(name: str, precision: str) -> str:
    if precision not in PRODUCT_SUFFIX:
        raise ValueError(f"the fused CPU kernels compute in {' or '.join(PRODUCT_SUFFIX)}, not {precision!r}")
    return name + PRODUCT_SUFFIX[precision]


#: the dtype of the activations that ops built with ``narrow=True`` pass on, per precision
ACTIVATION_DTYPES = {"fp32": mstype.float32, "bf16": mstype.bfloat16}
_INPUT_DTYPES = (mstype.float32, mstype.bfloat16)


def _float32(*_):
    return mstype.float32


def _activation(precision: str, narrow: bool):
    """The out_dtype function of an op whose output is an activation: float32, or the precision's if ``narrow``."""
    if precision not in ACTIVATION_DTYPES:
        raise ValueError(f"the fused CPU kernels compute in {' or '.join(ACTIVATION_DTYPES)}, not {precision!r}")
    dtype = ACTIVATION_DTYPES[precision] if narrow else mstype.float32
    return lambda *_: dtype


def _aot(name: str, out_shape, out_dtype, bprop=None) -> ops.Custom:
    """The kernel ``name`` as an op. MindSpore keys an op's shape inference (in PyNative also its dtype) and, in
    graph mode, its gradient by its function name, so every variant with another output dtype, other inputs or
    another gradient (a constant weight's ``Const...``) has a name of its own (cpu_ops_activations.inc)."""
    def checked(*dtypes):
        if any(_element_type(dtype) not in _INPUT_DTYPES for dtype in dtypes):
            raise TypeError(f"the fused CPU kernel {name} takes float32 or bfloat16 inputs, got "
                            f"{', '.join(map(str, dtypes))}; build the model with cpu_kernels 'off' (dvt_ms.kernels) "
                            "for other dtypes")
        return out_dtype(*dtypes)

    return ops.Custom(f"{library_path()}:{name}", out_shape=out_shape, out_dtype=checked, func_type="aot",
                      bprop=bprop)


@lru_cache(maxsize=None)
def layer_norm_op(precision: str = "fp32", narrow: bool = False) -> ops.Custom:
    """``(x, gamma, beta, eps[1]) -> (y, mean, rstd)``; ``y`` is an activation (see ``narrow``), the statistics
    float32."""
    backward = _aot("LayerNormBackward", lambda dy, x, g, m, r: (x, g, g), lambda dy, x, g, m, r: (x, g, g))
    y_dtype = _activation(precision, narrow)

    def bprop(x, gamma, beta, eps, out, dout):
        dx, dgamma, dbeta = backward(dout[0], x, gamma, out[1], out[2])
        return dx, dgamma, dbeta, ops.zeros_like(eps)

    return _aot("LayerNormForwardNarrow" if narrow else "LayerNormForward", lambda x, g, b, e: (x, x[:-1], x[:-1]),
                lambda x, g, b, e: (y_dtype(), x, x), bprop)


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
    backward = _aot("GeluBackward", lambda dy, x: x, lambda dy, x: x)

    def bprop(x, out, dout):
        return (backward(dout, x),)

    return _aot("GeluForward", _same, _same, bprop)


@lru_cache(maxsize=None)
def softmax_op(precision: str = "fp32", narrow: bool = False) -> ops.Custom:
    """``x -> softmax(x)`` of float32 ``x``, computed in float32; the result is an activation (``narrow``)."""
    backward = _aot("SoftmaxBackward", lambda dy, y: dy, _float32)

    def bprop(x, out, dout):
        return (backward(dout, out),)

    return _aot("SoftmaxForwardNarrow" if narrow else "SoftmaxForward", _same, _activation(precision, narrow), bprop)


@lru_cache(maxsize=None)
def non_finite_count_op() -> ops.Custom:
    """``(*tensors) -> [count]``: how many elements of all the tensors are NaN or +-Inf (as float32)."""
    return _aot("NonFiniteCount", lambda *shapes: (1,), lambda *dtypes: dtypes[0])


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


def _linear_backward(precision: str) -> ops.Custom:
    return _aot(_product("LinearBackward", precision), lambda dy, x, w: (x, w, w[:1]), lambda dy, x, w: (x, w, w))


@lru_cache(maxsize=None)
def linear_op(precision: str = "fp32", narrow: bool = False) -> ops.Custom:
    """``(x [..., K], weight [N, K], bias [N]) -> x @ weight.T + bias`` on oneDNN (an activation: ``narrow``)."""
    backward = _linear_backward(precision)

    def bprop(x, weight, bias, out, dout):
        return backward(dout, x, weight)

    return _aot(_product("LinearForwardNarrow" if narrow else "LinearForward", precision),
                lambda x, w, b: list(x[:-1]) + [w[0]], _activation(precision, narrow), bprop)


@lru_cache(maxsize=None)
def linear_gelu_op(precision: str = "bf16") -> ops.Custom:
    """``(x [..., K], weight [N, K], bias [N]) -> GELU(x @ weight.T + bias)`` (exact GELU) in one product whose
    epilogue applies bias and GELU to the float32 accumulators; the result is a ``narrow`` activation. ``bf16``
    only (fp32 models fuse the bias into :func:`bias_gelu_op` instead). The gradient, one kernel, recomputes the
    pre-activation with one more product rather than keeping it from the forward pass."""
    if precision != "bf16":
        raise ValueError(f"linear_gelu_op is a bf16 kernel, not {precision!r}")
    backward = _aot("LinearGeluBackwardBf16", lambda dy, x, w, b: (x, w, b), lambda dy, x, w, b: (x, w, b))

    def bprop(x, weight, bias, out, dout):
        return backward(dout, x, weight, bias)

    return _aot(_product("LinearGeluForward", precision), lambda x, w, b: list(x[:-1]) + [w[0]],
                _activation(precision, True), bprop)


@lru_cache(maxsize=None)
def linear_residual_op(precision: str = "fp32") -> ops.Custom:
    """``(x [..., K], weight [N, K], bias [N], residual [..., N]) -> residual + x @ weight.T + bias``."""
    backward = _linear_backward(precision)

    def bprop(x, weight, bias, residual, out, dout):
        dx, dweight, dbias = backward(dout, x, weight)
        return dx, dweight, dbias, dout

    return _aot(_product("LinearResidualForward", precision), lambda x, w, b, r: r, lambda x, w, b, r: r, bprop)


@lru_cache(maxsize=None)
def project_op(precision: str = "fp32", narrow: bool = False) -> ops.Custom:
    """``(x [..., K], weight [N, K]) -> x @ weight.T`` on oneDNN (an activation: ``narrow``)."""
    backward = _aot(_product("ProjectBackward", precision), lambda dy, x, w: (x, w), lambda dy, x, w: (x, w))

    def bprop(x, weight, out, dout):
        return backward(dout, x, weight)

    name = "ProjectForwardNarrow" if narrow else "ProjectForward"
    return _aot(_product(name, precision), lambda x, w: list(x[:-1]) + [w[0]], _activation(precision, narrow), bprop)


@lru_cache(maxsize=None)
def attention_scores_op(precision: str = "fp32", bias: bool = False) -> ops.Custom:
    """``(q [B, H, N, D], k [B, H, M, D]) -> q @ k^T [B, H, N, M]`` per (batch, head), float32.

    ``bias``: a third input ``[B, H, N, M]`` (float32; DVT's reused relations) is added inside the product,
    instead of in a pass of its own over the logits.
    """
    backward = _aot(_product("AttentionScoresBackward", precision), lambda dy, q, k: (q, k), lambda dy, q, k: (q, k))

    def bprop(q, k, out, dout):
        return backward(dout, q, k)

    def bprop_bias(q, k, logits_bias, out, dout):
        dq, dk = backward(dout, q, k)
        return dq, dk, dout

    if bias:
        return _aot(_product("AttentionScoresBias", precision), lambda q, k, b: list(q[:-1]) + [k[-2]],
                    lambda q, k, b: mstype.float32, bprop_bias)
    return _aot(_product("AttentionScores", precision), lambda q, k: list(q[:-1]) + [k[-2]],
                lambda q, k: mstype.float32, bprop)


@lru_cache(maxsize=None)
def attention_mix_op(precision: str = "fp32") -> ops.Custom:
    """``(probs [B, H, N, M], v [B, H, M, D]) -> probs @ v [B, H, N, D]`` per (batch, head), in probs' dtype."""
    backward = _aot(_product("AttentionMixBackward", precision), lambda dy, p, v: (p, v), lambda dy, p, v: (p, v))

    def bprop(probs, v, out, dout):
        return backward(dout, probs, v)

    return _aot(_product("AttentionMix", precision), lambda p, v: list(p[:-1]) + [v[-1]], lambda p, v: p, bprop)


@lru_cache(maxsize=None)
def channel_mix_op(constant: bool = False, precision: str = "fp32") -> ops.Custom:
    """``(x [B, I, L], weight [O, I], bias [O]) -> weight @ x[b] + bias`` per batch element, float32.

    ``constant``: ``weight`` and ``bias`` are constants (a resampling matrix), so their gradients are zero.
    """
    backward = _aot(_product("ConstChannelMixBackward" if constant else "ChannelMixBackward", precision),
                    lambda dy, x, w: (x, w, w[:1]), lambda dy, x, w: (x, w, w))

    def bprop(x, weight, bias, out, dout):
        return backward(dout, x, weight)

    name = ("Const" if constant else "") + "ChannelMixForward"
    return _aot(_product(name, precision), lambda x, w, b: [x[0], w[0], x[2]], _float32, bprop)


@lru_cache(maxsize=None)
def channel_mix_gelu_op(precision: str = "bf16") -> ops.Custom:
    """``(x [B, I, L], weight [O, I], bias [O]) -> GELU(weight @ x[b] + bias)`` (exact GELU) with bias and GELU
    in the product's epilogue; the result is a ``narrow`` activation. ``bf16`` only, like
    :func:`linear_gelu_op`, whose gradient it computes the same way."""
    if precision != "bf16":
        raise ValueError(f"channel_mix_gelu_op is a bf16 kernel, not {precision!r}")
    pre_activation = channel_mix_op(precision=precision)
    gelu_backward = _aot("GeluBackward", lambda dy, x: x, lambda dy, x: x)
    backward = _aot(_product("ChannelMixBackward", precision), lambda dy, x, w: (x, w, w[:1]),
                    lambda dy, x, w: (x, w, w))

    def bprop(x, weight, bias, out, dout):
        return backward(gelu_backward(dout, pre_activation(x, weight, bias)), x, weight)

    return _aot(_product("ChannelMixGeluForward", precision), lambda x, w, b: [x[0], w[0], x[2]],
                _activation(precision, True), bprop)


@lru_cache(maxsize=None)
def grid_resample_op(layers: int) -> ops.Custom:
    """``(maps [B, C, n * n], axis [d, s], class_weight[1]) -> layers x [B, C / layers, m, m]``: ``R A R^T`` per map
    ``A [n, n]``, float32, channel ``c`` into output ``c // (C / layers)`` (a relation bias per layer, no split).

    ``n = 1 + s * s`` tokens (the class token, then an ``s x s`` grid, row-major) become ``m = 1 + d * d``: ``R``
    scales the class token by ``class_weight`` and resamples the grid by ``kron(axis, axis)``, in sparse
    separable passes. ``maps`` is float32 or bfloat16. DVT's relation reuse; ``axis`` is a constant.
    """
    if layers < 1:
        raise ValueError(f"grid_resample_op needs at least one output layer, got {layers}")

    def per_layer(maps, axis, class_weight):
        side = 1 + axis[0] * axis[0]
        shape = [maps[0], maps[1] // layers, side, side]
        return shape if layers == 1 else tuple(shape for _ in range(layers))

    def stacked(*shapes):  # (dy_0, ..., dy_{layers-1}, axis^T, class_weight)
        dy, axis_t = shapes[0], shapes[layers]
        return [dy[0], dy[1] * layers, (1 + axis_t[0] * axis_t[0]) ** 2]

    backward = _aot("GridResampleBackward", stacked, _float32)

    def bprop(maps, axis, class_weight, out, dout):
        dy = (dout,) if layers == 1 else dout
        dmaps = backward(*dy, axis.T, class_weight)
        return ops.cast(dmaps, maps.dtype), ops.zeros_like(axis), ops.zeros_like(class_weight)

    return _aot("GridResample", per_layer,
                lambda *_: mstype.float32 if layers == 1 else tuple(mstype.float32 for _ in range(layers)), bprop)


@lru_cache(maxsize=None)
def adamw_update_op(count: int) -> ops.Custom:
    """``(weight_decay[count], hyper[8], *params, *exp_avgs, *exp_avg_sqs, *grads) -> done[1]``: PyTorch's AdamW
    step of ``count`` parameters in one pass, in place.

    Writes the float32 parameters and both moments where they are; gradients are float32 or bfloat16.
    ``weight_decay`` holds each parameter's (0 for none); ``hyper`` is
    ``[lr, beta1, beta2, 1 - beta1, 1 - beta2, lr / c1, c2, eps]`` with the bias corrections ``c1 = 1 - beta1^t`` and
    ``c2 = sqrt(1 - beta2^t)``. The op is declared as writing the parameters and moments (as MindSpore's
    ``AdamWeightDecay`` is), so the graph orders every other read of them before or after it, as written.
    """
    if count < 1:
        raise ValueError(f"adamw_update_op needs at least one parameter, got {count}")

    def checked(*dtypes):
        for index, dtype in enumerate(dtypes[2:2 + 3 * count]):
            if _element_type(dtype) != mstype.float32:
                role = ("parameter", "exp_avg", "exp_avg_sq")[index // count]
                raise TypeError(f"AdamWUpdate updates float32 tensors in place; {role} {index % count} is {dtype}")
        return mstype.float32

    op = _aot("AdamWUpdate", lambda *shapes: (1,), checked)
    read = (sig.make_sig("weight_decay"), sig.make_sig("hyper"))
    written = tuple(sig.make_sig(f"{role}{t}", sig.sig_rw.RW_WRITE)
                    for role in ("param", "exp_avg", "exp_avg_sq") for t in range(count))
    op.set_signatures(read + written + tuple(sig.make_sig(f"grad{t}") for t in range(count)))
    op.add_prim_attr("side_effect_mem", True)
    return op
