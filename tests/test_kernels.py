"""The fused CPU kernels (dvt_ms.kernels): each op and whole models against MindSpore's own ops, forward and
backward; NaN/Inf handling; dtype and dynamic-shape guards; the build, its cache key and its fallback."""
import math
import subprocess
import sys
import textwrap

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor, nn, ops

from dvt_ms import create_model, kernels, list_models
from dvt_ms.kernels import STOCK, KernelChoice, UsesKernels, build
from dvt_ms.kernels import ops as kernel_ops
from dvt_ms.layers.reuse import RelationReuse
from tests.script_loader import script_env
from tests.tiny_models import one_per_tiny_spec, tiny_overrides

needs_kernels = pytest.mark.skipif(not KernelChoice.resolve("auto", "CPU").available,
                                   reason="the fused CPU kernels cannot be built here")


def fused_choice() -> KernelChoice:
    return KernelChoice.resolve("on", "CPU")

TINY = dict(embed_dim=48, depth=2, num_heads=3, mlp_ratio=2.0, num_classes=10)
MODEL_CASES, MODEL_CASE_IDS = one_per_tiny_spec(list_models())
RNG = np.random.default_rng(0)


def tensor(*shape, scale=1.0):
    return Tensor((RNG.standard_normal(shape) * scale).astype(np.float32))


def fused_and_stock(build):
    """The same cell built with and without the kernels (``build(kernels)``), sharing one set of weights."""
    fused = build(fused_choice())
    stock = build(STOCK)
    weights = {p.name: ms.Parameter(Tensor(p.asnumpy()), name=p.name) for p in fused.get_parameters()}
    assert ms.load_param_into_net(stock, weights) == ([], [])
    return fused, stock


class Probe(nn.Cell):
    """``sum(f(*inputs) * weight)`` for a fixed random weight, so gradients are generic."""

    def __init__(self, cell, weight):
        super().__init__()
        self.cell = cell
        self.weight = weight

    def construct(self, *inputs):
        out = self.cell(*inputs)
        if isinstance(out, tuple):
            out = out[0]
        return (out * self.weight).sum()


def fused_layers(net):
    return sum(bool(getattr(cell, "fused", False)) for _, cell in net.cells_and_names())


def outputs_and_grads(cell, inputs, weight):
    probe = Probe(cell, weight)
    grad_fn = ms.value_and_grad(probe, tuple(range(len(inputs))), probe.trainable_params())
    _, (input_grads, param_grads) = grad_fn(*inputs)
    input_grads = (input_grads,) if isinstance(input_grads, Tensor) else input_grads
    out = cell(*inputs)
    out = out[0] if isinstance(out, tuple) else out
    return [out.asnumpy()] + [g.asnumpy() for g in input_grads] + [g.asnumpy() for g in param_grads]


def assert_same(fused_values, stock_values, atol):
    assert len(fused_values) == len(stock_values)
    for i, (a, b) in enumerate(zip(fused_values, stock_values)):
        assert a.shape == b.shape, i
        scale = max(1.0, float(np.abs(b).max()))
        np.testing.assert_allclose(a, b, rtol=0, atol=atol * scale, err_msg=f"value {i}")


# ---- single layers, shapes below and above the threading threshold, widths that are not multiples of 16
class SoftmaxCell(UsesKernels, nn.Cell):
    def __init__(self, kernels=STOCK):
        super().__init__()
        self.kernels = kernels
        if kernels.available:
            self.op = kernel_ops.softmax_op()

    def construct(self, x):
        return self.op(x) if self.fused else ops.softmax(x, axis=-1)


@needs_kernels
@pytest.mark.parametrize("shape", [(2, 3, 5, 7), (8, 6, 197, 197)])
def test_softmax_matches_mindspore(shape):
    fused, stock = fused_and_stock(SoftmaxCell)
    x, w = tensor(*shape, scale=3.0), tensor(*shape)
    assert_same(outputs_and_grads(fused, [x], w), outputs_and_grads(stock, [x], w), 2e-6)


@needs_kernels
@pytest.mark.parametrize("shape", [(3, 37, 19), (8, 197, 384)])
def test_layer_norm_matches_mindspore(shape):
    from dvt_ms.layers import LayerNorm

    def build(kernels):
        norm = LayerNorm((shape[-1],), epsilon=1e-6, kernels=kernels)
        norm.gamma.set_data(tensor(shape[-1]))
        norm.beta.set_data(tensor(shape[-1]))
        return norm

    fused, stock = fused_and_stock(build)
    assert fused.fused and not stock.fused
    x, w = tensor(*shape, scale=2.0) + 3.0, tensor(*shape)
    assert_same(outputs_and_grads(fused, [x], w), outputs_and_grads(stock, [x], w), 1e-5)


@needs_kernels
@pytest.mark.parametrize("shape,hidden", [((3, 5, 7), 13), ((8, 197, 96), 384)])
def test_mlp_linear_and_gelu_match_mindspore(shape, hidden):
    from dvt_ms.layers import Mlp

    fused, stock = fused_and_stock(lambda kernels: Mlp(shape[-1], hidden, shape[-1], kernels=kernels))
    assert fused.fused and fused.fc2.fused and fused.act.fused
    x, w = tensor(*shape, scale=2.0), tensor(*shape)
    assert_same(outputs_and_grads(fused, [x], w), outputs_and_grads(stock, [x], w), 1e-5)


@needs_kernels
def test_residual_sums_inside_the_products_match_mindspore():
    """``Mlp(x, residual)`` and ``Attention(x, bias, residual)``: the sum is taken inside fc2 / proj."""
    from dvt_ms.layers import Attention, Mlp

    fused, stock = fused_and_stock(lambda kernels: Mlp(40, 96, 40, kernels=kernels))
    x, residual, w = tensor(2, 37, 40), tensor(2, 37, 40), tensor(2, 37, 40)
    assert_same(outputs_and_grads(fused, [x, residual], w), outputs_and_grads(stock, [x, residual], w), 1e-5)
    np.testing.assert_allclose(fused(x, residual).asnumpy(), (fused(x) + residual).asnumpy(), atol=1e-5)
    fused, stock = fused_and_stock(lambda kernels: Attention(48, 3, kernels=kernels))
    x, relation, residual, w = tensor(2, 11, 48), tensor(2, 3, 11, 11), tensor(2, 11, 48), tensor(2, 11, 48)
    assert_same(outputs_and_grads(fused, [x, relation, residual], w),
                outputs_and_grads(stock, [x, relation, residual], w), 1e-5)


@needs_kernels
def test_gelu_layer_matches_mindspore():
    from dvt_ms.layers import GELU

    fused, stock = fused_and_stock(GELU)
    x, w = tensor(4, 5, 6001, scale=4.0), tensor(4, 5, 6001)
    assert_same(outputs_and_grads(fused, [x], w), outputs_and_grads(stock, [x], w), 1e-6)


@needs_kernels
@pytest.mark.parametrize("heads,tokens,bias", [(3, 5, True), (6, 197, False)])
def test_attention_matches_mindspore(heads, tokens, bias):
    from dvt_ms.layers import Attention

    dim = heads * 16
    fused, stock = fused_and_stock(lambda kernels: Attention(dim, heads, qkv_bias=bias, kernels=kernels))
    x, relation = tensor(2, tokens, dim), tensor(2, heads, tokens, tokens)
    w = tensor(2, tokens, dim)
    assert_same(outputs_and_grads(fused, [x, relation], w), outputs_and_grads(stock, [x, relation], w), 1e-5)


@needs_kernels
@pytest.mark.parametrize("src,dst,heads", [(7, 10, 2), (10, 14, 2), (3, 5, 4)])
def test_relation_resampling_matches_the_dense_products(src, dst, heads):
    """DVT's relation resampling R A R^T as sparse separable passes (GridResample) against MindSpore's two dense
    products, values and gradients, and a bfloat16 input against the same values in float32."""
    class AllLayers(nn.Cell):
        """The per-layer relation biases (4 / heads layers), stacked again."""

        def __init__(self, kernels):
            super().__init__()
            self.reuse = RelationReuse(6, 4, src, dst, heads, kernels=kernels)

        def construct(self, x):
            return ops.concat(self.reuse(x), axis=1)

    fused, stock = fused_and_stock(AllLayers)
    n, m = 1 + src * src, 1 + dst * dst
    x, w = tensor(2, 6, n, n), tensor(2, 4, m, m)
    assert_same(outputs_and_grads(fused, [x], w), outputs_and_grads(stock, [x], w), 1e-5)

    op, axis, class_weight = kernel_ops.grid_resample_op(3), fused.reuse.axis, fused.reuse.class_weight
    maps = Tensor(tensor(2, 6, n * n).asnumpy(), ms.bfloat16)
    for narrow, wide in zip(op(maps, axis, class_weight), op(maps.astype(ms.float32), axis, class_weight)):
        assert narrow.shape == (2, 2, m, m)
        np.testing.assert_allclose(narrow.asnumpy(), wide.asnumpy(), rtol=0, atol=1e-6)


@needs_kernels
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_constant_and_trainable_variants_keep_their_own_gradients(precision):
    """A product with a constant weight (DVT's feature resampling matrix) and the same product with a trainable
    weight are distinct ops: in one graph the constant gets a zero gradient and the trainable weight its true one
    (MindSpore keys a custom op's gradient by its kernel's name)."""
    x, fixed, trained, w = tensor(2, 5, 6), tensor(5, 5), tensor(3, 5), tensor(2, 3, 6)
    zeros5, zeros3 = Tensor(np.zeros(5, np.float32)), Tensor(np.zeros(3, np.float32))

    class Products(nn.Cell):
        def __init__(self):
            super().__init__()
            self.mix_constant = kernel_ops.channel_mix_op(constant=True, precision=precision)
            self.mix = kernel_ops.channel_mix_op(precision=precision)

        def construct(self, x, fixed, trained):
            return (self.mix(self.mix_constant(x, fixed, zeros5), trained, zeros3) * w).sum()

    d_fixed, d_trained = (g.asnumpy() for g in ms.grad(Products(), grad_position=(1, 2))(x, fixed, trained))
    assert not d_fixed.any()
    expected = np.einsum("bol,bil->oi", w.asnumpy(), np.einsum("oi,bil->bol", fixed.asnumpy(), x.asnumpy()))
    tolerance = 1e-5 if precision == "fp32" else 3e-2
    assert np.abs(d_trained - expected).max() <= tolerance * np.abs(expected).max(), (d_trained, expected)


@needs_kernels
def test_gelu_is_exact_over_a_wide_range():
    from dvt_ms.layers import GELU

    gelu = GELU(fused_choice())
    x = np.concatenate([np.linspace(-12, 12, 20001), [-100.0, 100.0, 0.0]]).astype(np.float32)
    expected = np.array([v * 0.5 * (1 + math.erf(v / math.sqrt(2))) for v in x.astype(np.float64)])
    error = np.abs(gelu(Tensor(x)).asnumpy() - expected)
    assert (error <= 1e-7 * np.abs(expected) + 3e-7).all(), float(error.max())    # erf to 1.5e-7


@needs_kernels
def test_non_finite_values_propagate_and_are_counted():
    from dvt_ms.layers import GELU, LayerNorm

    choice = fused_choice()
    softmax, gelu, norm = SoftmaxCell(choice), GELU(choice), LayerNorm((8,), kernels=choice)
    count = kernel_ops.non_finite_count_op()
    x = RNG.standard_normal((4, 8)).astype(np.float32)
    x[1, 3], x[2, 0] = np.nan, np.inf
    probs = softmax(Tensor(x)).asnumpy()
    assert np.isnan(probs[1]).all() and np.isnan(probs[2]).all()       # as in torch and MindSpore
    np.testing.assert_allclose(probs[[0, 3]].sum(-1), 1.0, rtol=1e-6)
    assert np.isnan(gelu(Tensor(x)).asnumpy()[1, 3])
    normed = norm(Tensor(x)).asnumpy()
    assert np.isnan(normed[1]).all() and np.isfinite(normed[[0, 3]]).all()
    big = np.zeros(100_003, np.float32)
    big[[0, 7, 50_000, 100_002]] = [np.nan, np.inf, -np.inf, np.nan]
    assert count(Tensor(big)).asnumpy().tolist() == [4.0]
    finite = Tensor(np.full((3, 3), 1e38, np.float32))
    assert count(finite).asnumpy().tolist() == [0.0]
    assert count(finite, Tensor(big), Tensor(x), finite).asnumpy().tolist() == [6.0]


@needs_kernels
def test_large_logits_do_not_overflow():
    softmax = SoftmaxCell(fused_choice())
    x = np.array([[88.0, -88.0, 0.0, 87.0], [-1e4, -1e4 + 1, -1e4, -1e4]], np.float32)
    expected = np.exp(x - x.max(-1, keepdims=True))
    expected /= expected.sum(-1, keepdims=True)
    np.testing.assert_allclose(softmax(Tensor(x)).asnumpy(), expected, rtol=1e-6, atol=1e-30)


@needs_kernels
def test_float16_inputs_are_refused_with_the_kernel_named():
    softmax = SoftmaxCell(fused_choice())
    with pytest.raises(TypeError, match="SoftmaxForward takes float32"):
        softmax(Tensor(np.ones((2, 3), np.float16)))


# ---- whole models: every registered one (list_models()), at tiny sizes
@needs_kernels
@pytest.mark.parametrize("name", MODEL_CASES, ids=MODEL_CASE_IDS)
def test_models_match_mindspore_ops(name):
    overrides = tiny_overrides(name)

    def build(kernels):
        ms.set_seed(3)
        return create_model(name, **overrides, cpu_kernels=kernels)

    fused, stock = fused_and_stock(build)
    assert fused_layers(stock) == 0 and fused_layers(fused) > 0
    size = fused.spec.image_size
    x = tensor(2, 3, size, size)
    with_exits = isinstance(fused(x), tuple)
    w = tensor(2, fused.spec.num_classes)

    class LastExit(nn.Cell):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def construct(self, images):
            out = self.net(images)
            return out[-1] if with_exits else out

    fused_values, stock_values = outputs_and_grads(LastExit(fused), [x], w), outputs_and_grads(LastExit(stock), [x], w)
    names = [p.name for p in LastExit(stock).trainable_params()]
    no_gradient = [n for n, a, b in zip(names, fused_values[2:], stock_values[2:]) if np.any(b) and not np.any(a)]
    assert not no_gradient, f"parameters with a gradient on MindSpore's ops but none on the kernels: {no_gradient}"
    assert_same(fused_values, stock_values, 2e-5)


@needs_kernels
def test_export_uses_mindspore_ops_and_keeps_the_model_fused(tmp_path):
    from dvt_ms.export import export_cascade

    net = create_model("dvt_deit_small", **TINY, cpu_kernels="on")
    manifest = export_cascade(net, tmp_path)
    assert manifest.is_file() and len(list(tmp_path.glob("*.mindir"))) == net.num_exits
    assert net.stages[0].blocks[0].norm1.fused
    with net.kernels.stock():
        assert not net.stages[0].blocks[0].norm1.fused and not net.stages[2].head.fused
    assert net.stages[0].blocks[0].norm1.fused


@needs_kernels
def test_dynamic_and_bucket_engines_share_a_fused_model():
    from dvt_ms.infer import AdaptiveClassifier

    net = create_model("dvt_deit_small", **TINY, cpu_kernels="on")
    layers = fused_layers(net)
    x = tensor(3, 3, 224, 224)
    expected = net(x)[-1].asnumpy()
    thresholds = [2.0, 2.0, -1e8]   # everyone to the last exit
    for mode in ("dynamic", "buckets", "dynamic"):
        result = AdaptiveClassifier(net, thresholds, shape_mode=mode)(x, return_logits=True)
        np.testing.assert_array_equal(result.exits, [2, 2, 2])
        np.testing.assert_allclose(result.logits, expected, rtol=0, atol=1e-5)
        assert fused_layers(net) == layers       # the dynamic engine compiles on stock ops but restores them


# ---- modes, build and fallback
def test_modes_are_validated(monkeypatch):
    with pytest.raises(ValueError, match="cpu_kernels must be one of auto, on, off, got 'fast'"):
        KernelChoice.resolve("fast")
    with pytest.raises(ValueError, match="cpu_kernels must be one of auto, on, off, got 'fast'"):
        create_model("deit_tiny", cpu_kernels="fast")
    monkeypatch.setenv("DVT_MS_CPU_KERNELS", "yes")
    assert KernelChoice.resolve("off").mode == "off"       # an explicit choice beats the environment
    with pytest.raises(ValueError, match="DVT_MS_CPU_KERNELS must be one of auto, on, off, got 'yes'"):
        KernelChoice.resolve()


def test_each_model_holds_and_reports_its_own_choice():
    off = create_model("deit_tiny", **TINY, cpu_kernels="off")
    assert not off.kernels.available and fused_layers(off) == 0
    assert "MindSpore ops" in off.kernels.describe() and "cpu_kernels is off" in repr(off.kernels)
    gpu = KernelChoice.resolve("on", "GPU")       # never fused off the CPU, even when asked for
    assert not gpu.available and "GPU uses MindSpore's ops" in gpu.describe()
    if KernelChoice.resolve("auto", "CPU").available:
        on = create_model("deit_tiny", **TINY, cpu_kernels="on")
        assert on.kernels.fused and fused_layers(on) > 0 and fused_layers(off) == 0   # nothing shared
        assert all(cell.kernels is on.kernels for _, cell in on.cells_and_names() if isinstance(cell, UsesKernels))


def test_the_cache_key_follows_the_source_flags_and_cpu(monkeypatch):
    key = build.library_key()
    monkeypatch.setattr(build, "_cpu_signature", lambda: "another cpu")
    assert build.library_key() != key
    monkeypatch.undo()
    monkeypatch.setattr(build, "FLAGS", build.FLAGS + ("-DOTHER",))
    assert build.library_key() != key


def test_a_mindspore_without_onednn_is_a_build_error(monkeypatch):
    monkeypatch.setattr(build, "ONEDNN", "libdnnl.so.0-missing")
    monkeypatch.setattr(build, "_library", None)
    monkeypatch.setattr(build, "_failed", None)
    with pytest.raises(kernels.KernelBuildError, match=r"lib/libdnnl.so.0-missing not found"):
        build.library_path()


def _run_without_compiler(mode, tmp_path):
    code = textwrap.dedent(f"""
        import logging, sys
        logging.basicConfig(level=logging.WARNING, stream=sys.stdout, format="%(levelname)s %(message)s")
        import numpy as np
        from mindspore import Tensor
        from dvt_ms import create_model
        from dvt_ms.run import configure_device
        configure_device("CPU", "graph", {mode!r})
        net = create_model("deit_small", embed_dim=48, depth=1, num_heads=3, num_classes=4, cpu_kernels={mode!r})
        print("fused layers:", sum(getattr(c, "fused", False) for _, c in net.cells_and_names()))
        print("logits:", net(Tensor(np.zeros((1, 3, 224, 224), np.float32))).shape)
    """)
    env = script_env(CXX=str(tmp_path / "no-such-compiler"), DVT_MS_KERNEL_CACHE=str(tmp_path / "cache"),
                     GLOG_v="3")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)


def test_without_a_compiler_auto_falls_back_with_a_warning(tmp_path):
    result = _run_without_compiler("auto", tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "fused CPU kernels unavailable" in result.stdout and "no-such-compiler" in result.stdout
    assert "fused layers: 0" in result.stdout and "logits: (1, 4)" in result.stdout
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").iterdir())


def test_without_a_compiler_on_is_an_error(tmp_path):
    result = _run_without_compiler("on", tmp_path)
    assert result.returncode != 0
    assert "KernelBuildError" in result.stderr and "no-such-compiler" in result.stderr
    assert "logits:" not in result.stdout
