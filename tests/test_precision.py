"""The ``precision`` option: bf16 on CPU against fp32 (logits), its refusals and fallbacks, the config key,
and the GPU/Ascend mixed-precision mapping. Top-1 agreement and the budgeted curve of a trained model are in
test_bf16_end_to_end.py."""
import json
import logging

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor

from dvt_ms import create_model
from dvt_ms.config import COMMON, EVAL, TRAIN, ConfigError, resolve_config
from dvt_ms.kernels import PRECISIONS, KernelChoice, choice

pytestmark = pytest.mark.skipif(not (KernelChoice.resolve("auto", "CPU").available and choice.cpu_supports_bf16()),
                                reason="needs the fused CPU kernels and a CPU with AVX512-BF16 or AMX")

TINY = dict(embed_dim=48, depth=2, num_heads=3, mlp_ratio=2.0)
#: bf16 logits differ from fp32 by at most this fraction of the largest fp32 logit (bfloat16 keeps 8
#: significant bits, a relative rounding of 2^-9 per operand; through two blocks per stage and the
#: reuse paths the tiny models below stay under 1.5%)
LOGIT_BOUND = 0.05


def copy_weights(src, dst) -> None:
    weights = {p.name: ms.Parameter(Tensor(p.asnumpy()), name=p.name) for p in src.get_parameters()}
    assert ms.load_param_into_net(dst, weights) == ([], [])


def logits(net, images: np.ndarray):
    return [o.asnumpy() for o in net(Tensor(images))]


def test_bf16_logits_close_to_fp32():
    fp32 = create_model("dvt_deit_small", cpu_kernels="on", num_classes=10, **TINY)
    bf16 = create_model("dvt_deit_small", cpu_kernels="on", precision="bf16", num_classes=10, **TINY)
    assert (fp32.kernels.precision, bf16.kernels.precision) == ("fp32", "bf16")
    assert "bf16" in bf16.kernels.describe()
    copy_weights(fp32, bf16)
    images = np.random.default_rng(0).standard_normal((2, 3, 224, 224)).astype(np.float32)
    for k, (a, b) in enumerate(zip(logits(fp32, images), logits(bf16, images))):
        scale = float(np.abs(a).max())
        difference = float(np.abs(a - b).max())
        assert difference <= LOGIT_BOUND * scale, (k, difference, scale)
        assert difference > 0, "bf16 gave the fp32 logits exactly: its products did not run in bfloat16"


def test_bf16_stock_graphs_report_fp32():
    net = create_model("deit_small", cpu_kernels="on", precision="bf16", num_classes=10, **TINY)
    with net.kernels.stock():
        assert net.kernels.precision == "fp32" and net.kernels.model_precision == "bf16"
    assert net.kernels.precision == "bf16"


def test_fp16_refused_on_cpu():
    with pytest.raises(ValueError, match="fp16 with the fused CPU kernels .* cpu_kernels off to check"):
        create_model("deit_small", cpu_kernels="auto", precision="fp16", **TINY)
    with pytest.raises(ValueError, match="precision must be one of"):
        KernelChoice.resolve("auto", "CPU", precision="int8")


def test_bf16_needs_the_kernels():
    with pytest.raises(ValueError, match="cpu_kernels is off"):
        KernelChoice.resolve("off", "CPU", precision="bf16")


def test_bf16_without_cpu_support_falls_back_under_auto(monkeypatch, caplog):
    monkeypatch.setattr(choice, "cpu_supports_bf16", lambda: False)
    with caplog.at_level(logging.WARNING, logger="dvt_ms.kernels.choice"):
        net = create_model("deit_small", cpu_kernels="auto", precision="bf16", **TINY)
    assert net.kernels.precision == "fp32" and net.kernels.fused
    assert "falling back to fp32" in caplog.text
    with pytest.raises(ValueError, match="bfloat16 dot products"):
        create_model("deit_small", cpu_kernels="on", precision="bf16", **TINY)


def test_bf16_gemm_backends_agree(monkeypatch):
    """Both oneDNN paths (matmul primitive and gemm_bf16bf16f32) give the same products."""
    from dvt_ms.layers import Linear

    x = Tensor(np.random.default_rng(1).standard_normal((3, 50, 40)).astype(np.float32))
    layer = Linear(40, 24, kernels=KernelChoice.resolve("on", "CPU", precision="bf16"))
    reference = x.asnumpy() @ layer.weight.asnumpy().T + layer.bias.asnumpy()
    for backend in ("matmul", "gemm"):
        monkeypatch.setenv("DVT_MS_BF16_GEMM", backend)
        out = layer(x).asnumpy()
        error = np.abs(out - reference).max() / np.abs(reference).max()
        assert 0 < error < 1e-2, (backend, error)


def _relative(out, reference) -> float:
    return float(np.abs(out - reference).max() / np.abs(reference).max())


def _gelu(x: np.ndarray) -> np.ndarray:
    from math import erf

    return x * 0.5 * (1.0 + np.vectorize(erf)(x / np.sqrt(2.0)))


def _float(t: Tensor) -> np.ndarray:
    return t.astype(ms.float32).asnumpy()


@pytest.mark.parametrize("backend", ["matmul", "gemm"])
def test_bf16_activations_and_epilogues(monkeypatch, backend):
    """The bf16 ops that hand bfloat16 activations from kernel to kernel give bfloat16 where asked, and bias,
    GELU and residual applied inside the products (epilogues) agree with float32 numpy, on both oneDNN paths."""
    from dvt_ms.kernels import ops as fused_ops

    monkeypatch.setenv("DVT_MS_BF16_GEMM", backend)
    rng = np.random.default_rng(2)
    x, w, b = (rng.standard_normal(shape).astype(np.float32) for shape in ((2, 37, 40), (48, 40), (48,)))
    wh, bh = rng.standard_normal((64, 48)).astype(np.float32), rng.standard_normal(64).astype(np.float32)
    w2, b2, residual = (rng.standard_normal(shape).astype(np.float32) for shape in ((40, 64), (40,), (2, 37, 40)))
    pre = x @ w.T + b
    narrow = fused_ops.linear_op("bf16", narrow=True)(Tensor(x), Tensor(w), Tensor(b))
    assert narrow.dtype == ms.bfloat16
    assert 0 < _relative(_float(narrow), pre) < 1e-2
    hidden = fused_ops.linear_gelu_op("bf16")(narrow, Tensor(wh), Tensor(bh))
    assert hidden.dtype == ms.bfloat16
    hidden_reference = _gelu(_float(narrow) @ wh.T + bh)
    assert _relative(_float(hidden), hidden_reference) < 1e-2
    out = fused_ops.linear_residual_op("bf16")(hidden, Tensor(w2), Tensor(b2), Tensor(residual))
    assert out.dtype == ms.float32
    assert _relative(out.asnumpy(), _float(hidden) @ w2.T + b2 + residual) < 1e-2
    y, mean, rstd = fused_ops.layer_norm_op("bf16", narrow=True)(Tensor(x), Tensor(w[0]), Tensor(b[:40]),
                                                                 Tensor(np.array([1e-6], np.float32)))
    assert (y.dtype, mean.dtype, rstd.dtype) == (ms.bfloat16, ms.float32, ms.float32)
    normed = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-6) * w[0] + b[:40]
    assert _relative(_float(y), normed) < 1e-2
    maps = rng.standard_normal((2, 40, 30)).astype(np.float32)  # DVT relation reuse: [B, channels, tokens]
    mixed = fused_ops.channel_mix_gelu_op("bf16")(Tensor(maps), Tensor(w2.T.copy()), Tensor(bh))  # bias per row
    assert mixed.dtype == ms.bfloat16
    assert _relative(_float(mixed), _gelu(np.einsum("oi,bil->bol", w2.T, maps) + bh[:, None])) < 1e-2
    probs = fused_ops.softmax_op("bf16", narrow=True)(Tensor(pre))
    expected = np.exp(pre - pre.max(-1, keepdims=True))
    assert probs.dtype == ms.bfloat16
    assert _relative(_float(probs), expected / expected.sum(-1, keepdims=True)) < 1e-2


def test_bf16_gelu_epilogue_gradient():
    """The fc1 + bias + GELU product's gradient (recomputing the pre-activation) against numpy."""
    from mindspore import nn, ops

    from dvt_ms.kernels import ops as fused_ops

    rng = np.random.default_rng(3)
    x, w, b, g = (rng.standard_normal(shape).astype(np.float32) for shape in ((2, 9, 32), (64, 32), (64,), (2, 9, 64)))
    op = fused_ops.linear_gelu_op("bf16")

    class Loss(nn.Cell):
        def construct(self, x, w, b):
            return (ops.cast(op(ops.cast(x, ms.bfloat16), w, b), ms.float32) * Tensor(g)).sum()

    dx, dw, db = ms.grad(Loss(), grad_position=(0, 1, 2))(Tensor(x), Tensor(w), Tensor(b))
    pre = x @ w.T + b
    dpre = g * (0.5 * (1.0 + np.vectorize(__import__("math").erf)(pre / np.sqrt(2.0)))
                + pre * np.exp(-0.5 * pre ** 2) / np.sqrt(2.0 * np.pi))
    for got, expected in ((dx, dpre @ w), (dw, dpre.reshape(-1, 64).T @ x.reshape(-1, 32)), (db, dpre.sum((0, 1)))):
        assert got.dtype == ms.float32
        assert _relative(got.asnumpy(), expected) < 2e-2


@pytest.mark.parametrize("backend", ["matmul", "gemm"])
def test_bf16_product_gradients_take_bfloat16_activations(monkeypatch, backend):
    """The bf16 products' gradient kernels read bfloat16 activations and output gradients as they are and write
    bfloat16 gradients for bfloat16 inputs: a dense layer with a narrow output, and attention (scores, softmax,
    mix, with the transposed products of its gradient), against numpy, on both oneDNN paths."""
    from mindspore import nn, ops

    from dvt_ms.kernels import ops as fused_ops

    monkeypatch.setenv("DVT_MS_BF16_GEMM", backend)
    rng = np.random.default_rng(5)
    x, w, b, g = (rng.standard_normal(shape).astype(np.float32) for shape in ((2, 9, 32), (48, 32), (48,), (2, 9, 48)))
    q, k, v, g2 = (rng.standard_normal((2, 3, 11, 16)).astype(np.float32) for _ in range(4))
    linear = fused_ops.linear_op("bf16", narrow=True)
    scores, softmax = fused_ops.attention_scores_op("bf16"), fused_ops.softmax_op("bf16", narrow=True)
    mix = fused_ops.attention_mix_op("bf16")
    bf16 = lambda t: ops.cast(t, ms.bfloat16)  # noqa: E731
    seen = {}

    class Loss(nn.Cell):
        def construct(self, x, w, b, q, k, v):
            y = linear(bf16(x), w, b)
            out = mix(softmax(scores(bf16(q), bf16(k))), bf16(v))
            return (ops.cast(y, ms.float32) * Tensor(g)).sum() + (ops.cast(out, ms.float32) * Tensor(g2)).sum()

    grads = ms.grad(Loss(), grad_position=(0, 1, 2, 3, 4, 5))(*(Tensor(t) for t in (x, w, b, q, k, v)))
    x, q, k, v = (_float(Tensor(t).astype(ms.bfloat16)).astype(np.float64) for t in (x, q, k, v))
    logits = q @ k.swapaxes(-1, -2)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    dprobs = g2 @ v.swapaxes(-1, -2)
    dlogits = probs * (dprobs - (dprobs * probs).sum(-1, keepdims=True))
    expected = (g @ w, g.reshape(-1, 48).T @ x.reshape(-1, 32), g.sum((0, 1)), dlogits @ k,
                dlogits.swapaxes(-1, -2) @ q, probs.swapaxes(-1, -2) @ g2)
    for name, got, want in zip(("dx", "dw", "db", "dq", "dk", "dv"), grads, expected):
        seen[name] = _relative(got.asnumpy(), want)
    assert all(0 < error < 2e-2 for error in seen.values()), seen


def test_bf16_evit_gradients_close_to_fp32():
    """EViT ranks tokens by the attention probabilities, so its blocks keep them float32 in bf16 (MindSpore's CPU
    ops cannot sum bfloat16 gradients); a bf16 training graph compiles and its gradients follow fp32's."""
    from mindspore import nn

    kwargs = dict(cpu_kernels="on", num_classes=10, embed_dim=48, depth=3, num_heads=3, mlp_ratio=2.0,
                  keep_rate=0.7, drop_loc=[1], fuse_token=True, image_size=64)
    fp32 = create_model("evit_deit_small", precision="fp32", **kwargs)
    bf16 = create_model("evit_deit_small", precision="bf16", **kwargs)
    copy_weights(fp32, bf16)
    images = Tensor(np.random.default_rng(4).standard_normal((2, 3, 64, 64)).astype(np.float32))

    class Loss(nn.Cell):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def construct(self, x):
            return (self.net(x) ** 2).sum()

    grads = []
    for net in (fp32, bf16):
        net.set_train(True)
        grads.append(ms.grad(Loss(net), grad_position=None, weights=net.trainable_params())(images))
    for a, b in zip(*grads):
        assert b.dtype == ms.float32
        scale = np.abs(a.asnumpy()).max()
        if scale > 0:
            assert np.abs(a.asnumpy() - b.asnumpy()).max() <= 0.1 * scale


def test_accelerator_precisions():
    """With MindSpore's ops the model carries its precision into the products; bf16 on GPU is refused."""
    choice_gpu = KernelChoice.resolve("auto", "GPU", precision="fp16")
    assert (choice_gpu.precision, choice_gpu.fused, choice_gpu.product_dtype) == ("fp16", False, ms.float16)
    assert KernelChoice.resolve("auto", "Ascend", precision="bf16").product_dtype == ms.bfloat16
    assert KernelChoice.resolve("auto", "Ascend").product_dtype is None
    with pytest.raises(ValueError, match="bf16 on GPU: MindSpore 2.10's GPU kernels have no bfloat16"):
        KernelChoice.resolve("auto", "GPU", precision="bf16")
    check = KernelChoice.resolve("off", "CPU", precision="fp16")
    assert (check.precision, check.available, check.product_dtype) == ("fp16", False, ms.float16)


def test_precision_config_key(tmp_path):
    assert COMMON["precision"].choices == PRECISIONS
    config = resolve_config(COMMON + EVAL, ["--checkpoint", "x.ckpt", "--precision", "bf16"])
    assert config.precision == "bf16"
    with pytest.raises(ConfigError, match="precision"):
        resolve_config(COMMON + EVAL, ["--checkpoint", "x.ckpt", "--precision", "fp8"])
    with pytest.raises(ConfigError, match=r"--predictions: 'probs.csv': the predictions file must end in .npz"):
        resolve_config(COMMON + EVAL, ["--checkpoint", "x.ckpt", "--predictions", "probs.csv"])
    train = ["--model", "deit_small", "--data_dir", str(tmp_path)]
    assert resolve_config(COMMON + TRAIN, train + ["--precision", "bf16"]).precision == "bf16"
    with pytest.raises(ConfigError, match="--amp_level, --precision: precision fp16 with amp_level auto on CPU"):
        resolve_config(COMMON + TRAIN, train + ["--precision", "fp16", "--amp_level", "auto"])


def test_engine_runs_a_bf16_model_in_bf16(tmp_path):
    from dvt_ms.export import export_cascade
    from dvt_ms.infer import AdaptiveClassifier

    net = create_model("dvt_deit_small", cpu_kernels="on", precision="bf16", num_classes=10, image_size=64, **TINY)
    net.set_train(False)
    images = np.random.default_rng(2).standard_normal((6, 3, 64, 64)).astype(np.float32)
    full = np.stack(logits(net, images))
    probs = np.exp(full - full.max(-1, keepdims=True))
    confidence = (probs / probs.sum(-1, keepdims=True)).max(-1)
    thresholds = [float(np.median(confidence[0])), float(np.median(confidence[1])), -1e8]
    engine = AdaptiveClassifier(net, thresholds, precision="bf16", buckets=(8,))
    assert engine.precision == "bf16"
    result = engine(images, return_logits=True)
    expected_exits = np.array([next(k for k in range(3) if confidence[k, i] >= thresholds[k]) for i in range(6)])
    assert np.array_equal(result.exits, expected_exits)
    taken = full[result.exits, np.arange(6)]
    assert np.abs(result.logits - taken).max() <= 1e-3 * np.abs(taken).max()
    with pytest.raises(ValueError, match="the model was built for 'bf16'"):
        AdaptiveClassifier(net, thresholds, precision="fp32")
    with pytest.raises(ValueError, match="shape_mode 'dynamic' runs on MindSpore's float32 CPU ops"):
        AdaptiveClassifier(net, thresholds, shape_mode="dynamic")
    manifest = json.loads(export_cascade(net, tmp_path).read_text())
    assert manifest["precision"] == {"files": "fp32", "model": "bf16"}
