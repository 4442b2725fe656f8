"""The ``precision`` option: bf16 on CPU against fp32 (logits, top-1 agreement, the budgeted curve), its
refusals and fallbacks, the config key, and the GPU/Ascend mixed-precision mapping."""
import logging

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor, nn

from dvt_ms import create_model
from dvt_ms.budget import budget_curve
from dvt_ms.config import COMMON, EVAL, TRAIN, ConfigError, resolve_config
from dvt_ms.kernels import PRECISIONS, KernelChoice, choice
from dvt_ms.kernels.precision import AMP_LEVEL, amp_settings

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


def _train_tiny(classes: int, size: int, steps: int, rng) -> tuple:
    """A tiny DVT trained on prototype-plus-noise images until its exits are confident."""
    net = create_model("dvt_deit_small", cpu_kernels="on", num_classes=classes, image_size=size, **TINY)
    protos = rng.standard_normal((classes, 3, size, size)).astype(np.float32)

    def draw(n):
        y = rng.integers(0, classes, n)
        x = 0.5 * protos[y] + rng.standard_normal((n, 3, size, size)).astype(np.float32)
        return x.astype(np.float32), y.astype(np.int32)

    optimizer = nn.Adam(net.trainable_params(), learning_rate=1e-3)
    loss_fn = nn.CrossEntropyLoss()

    def forward(x, y):
        return sum(loss_fn(o, y) for o in net(x))

    grad_fn = ms.value_and_grad(forward, None, optimizer.parameters)

    @ms.jit
    def step(x, y):
        loss, grads = grad_fn(x, y)
        optimizer(grads)
        return loss

    net.set_train(True)
    for _ in range(steps):
        x, y = draw(16)
        step(Tensor(x), Tensor(y))
    net.set_train(False)
    return net, draw


def _probs(net, images: np.ndarray) -> np.ndarray:
    out = []
    for start in range(0, len(images), 100):
        out.append(np.stack(logits(net, images[start:start + 100])))
    z = np.concatenate(out, axis=1)
    z = np.exp(z - z.max(-1, keepdims=True))
    return z / z.sum(-1, keepdims=True)


def test_bf16_agrees_with_fp32_on_a_trained_model():
    rng = np.random.default_rng(0)
    fp32, draw = _train_tiny(classes=8, size=64, steps=40, rng=rng)
    bf16 = create_model("dvt_deit_small", cpu_kernels="on", precision="bf16", num_classes=8, image_size=64,
                        **TINY)
    copy_weights(fp32, bf16)
    bf16.set_train(False)
    (train_x, train_y), (test_x, test_y) = draw(200), draw(400)
    p32, p16 = _probs(fp32, test_x), _probs(bf16, test_x)
    accuracy = (p32.argmax(-1) == test_y).mean(axis=1)
    assert accuracy.min() > 0.5, f"the model did not learn (accuracy per exit {accuracy})"
    agreement = (p32.argmax(-1) == p16.argmax(-1)).mean(axis=1)
    assert (agreement >= 0.995).all(), f"top-1 agreement per exit {agreement}"
    flops = [1.0, 2.0, 3.0]
    curve32 = budget_curve(_probs(fp32, train_x), train_y, p32, test_y, flops, steps=range(1, 40))
    curve16 = budget_curve(_probs(bf16, train_x), train_y, p16, test_y, flops, steps=range(1, 40))
    moved = np.abs(np.asarray(curve32["accuracy"]) - np.asarray(curve16["accuracy"])).max()
    assert moved <= 0.5, f"the budgeted curve moved by {moved} points"


def test_fp16_refused_on_cpu():
    with pytest.raises(ValueError, match="fp16 is not supported on CPU"):
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


def test_amp_mapping():
    assert amp_settings("fp32", "GPU") is None and amp_settings("bf16", "CPU") is None
    assert amp_settings("fp16", "Ascend") == {"amp_level": AMP_LEVEL, "dtype": ms.float16}
    assert amp_settings("bf16", "GPU") == {"amp_level": AMP_LEVEL, "dtype": ms.bfloat16}
    # O1 converts the dense layers and matrix products; LayerNorm and Softmax are not on its list
    from mindspore.train import amp

    white = {cls.__name__ for cls in amp.AMP_WHITE_LIST}
    assert AMP_LEVEL == "O1" and {"Dense", "MatMul", "BatchMatMul"} <= white
    assert not {"LayerNorm", "Softmax"} & white
    choice_gpu = KernelChoice.resolve("auto", "GPU", precision="fp16")
    assert (choice_gpu.precision, choice_gpu.fused) == ("fp16", False)


def test_precision_config_key(tmp_path):
    assert COMMON["precision"].choices == PRECISIONS
    config = resolve_config(COMMON + EVAL, ["--checkpoint", "x.ckpt", "--precision", "bf16"])
    assert config.precision == "bf16"
    with pytest.raises(ConfigError, match="precision"):
        resolve_config(COMMON + EVAL, ["--checkpoint", "x.ckpt", "--precision", "fp8"])
    with pytest.raises(ConfigError, match="training runs in fp32"):
        resolve_config(COMMON + TRAIN, ["--model", "deit_small", "--data_dir", str(tmp_path), "--precision",
                                        "bf16"])
