"""Training precision: the (precision, amp_level, device) table, and a bf16 TrainStep on CPU against fp32."""
import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor
from mindspore.amp import DynamicLossScaler

from dvt_ms import create_model
from dvt_ms.kernels import KernelChoice, choice
from dvt_ms.train import MultiExitLoss, TrainStep, create_optimizer
from dvt_ms.precision import resolve_training_precision
from dvt_ms.train.step import create_loss_scaler


@pytest.mark.parametrize("precision, amp_level, device, expected", [
    # (compute, level, MindSpore amp level, create_model precision)
    ("fp32", "auto", "CPU", ("fp32", "O0", "O0", "fp32")),
    ("bf16", "auto", "CPU", ("bf16", "O2", "O0", "bf16")),
    ("bf16", "O1", "CPU", ("bf16", "O1", "O0", "bf16")),
    ("fp32", "auto", "GPU", ("fp16", "O2", "O2", "fp32")),
    ("fp32", "O0", "Ascend", ("fp32", "O0", "O0", "fp32")),
    ("bf16", "O3", "Ascend", ("bf16", "O3", "O3", "fp32")),
    ("fp16", "O1", "GPU", ("fp16", "O1", "O0", "fp16")),  # O1: the model carries float16 products
    ("fp16", "O2", "Ascend", ("fp16", "O2", "O2", "fp32")),
])
def test_resolution(precision, amp_level, device, expected):
    resolved = resolve_training_precision(precision, amp_level, device)
    assert (resolved.compute, resolved.level, resolved.amp_level, resolved.model_precision) == expected
    assert resolved.loss_scaling == (resolved.compute == "fp16")
    assert ("no loss scaling" in resolved.describe()) == (resolved.compute == "bf16")


@pytest.mark.parametrize("precision, amp_level, device, message", [
    ("fp16", "auto", "CPU", "float16 is not supported with the fused CPU kernels"),
    ("bf16", "O2", "GPU", "bf16 on GPU"),
    ("fp32", "O2", "CPU", "mixed precision on CPU is bfloat16; set precision bf16"),
    ("bf16", "O3", "CPU", "O3 would cast LayerNorm and softmax too"),
    ("bf16", "O0", "GPU", "O0 trains in float32"),
    ("int8", "auto", "CPU", "precision must be one of"),
    ("fp32", "O4", "CPU", "amp_level must be auto or one of"),
])
def test_contradictions_are_refused(precision, amp_level, device, message):
    with pytest.raises(ValueError, match=message):
        resolve_training_precision(precision, amp_level, device)


def test_mindspores_float16_ops_on_cpu_train_at_the_accelerator_levels():
    """``cpu_kernels: off`` with ``precision: fp16``: the GPU/Ascend levels, on MindSpore's float16 CPU kernels."""
    def resolve(precision, level):
        found = resolve_training_precision(precision, level, "CPU", cpu_kernels="off")
        return found.compute, found.level, found.amp_level, found.model_precision

    assert resolve("fp16", "O1") == ("fp16", "O1", "O0", "fp16")  # the model carries float16 products
    assert resolve("fp16", "O2") == ("fp16", "O2", "O2", "fp32")
    assert resolve("fp16", "auto") == ("fp16", "O2", "O2", "fp32")
    assert resolve("fp16", "O3") == ("fp16", "O3", "O3", "fp32")
    assert resolve("fp32", "auto") == ("fp32", "O0", "O0", "fp32")
    assert "checks the GPU/Ascend graph" in resolve_training_precision("fp16", "O2", "CPU", "off").describe()
    with pytest.raises(ValueError, match="set precision fp16 to check the GPU/Ascend float16 graph"):
        resolve("fp32", "O2")
    with pytest.raises(ValueError, match="bf16 is not supported by MindSpore's own ops on CPU"):
        resolve("bf16", "O2")


def test_loss_scaling_is_for_float16_only():
    assert create_loss_scaler(None, "O2", "bf16") is None
    assert isinstance(create_loss_scaler(None, "O2", "fp16"), DynamicLossScaler)


@pytest.mark.skipif(not (KernelChoice.resolve("auto", "CPU").available and choice.cpu_supports_bf16()),
                    reason="needs the fused CPU kernels and a CPU with AVX512-BF16 or AMX")
def test_bf16_train_steps_follow_fp32():
    """Same weights, same batches: bf16 losses track fp32's; master weights and moments stay float32."""
    tiny = dict(embed_dim=48, depth=2, num_heads=3, mlp_ratio=2.0, num_classes=5, image_size=64)
    rng = np.random.default_rng(0)
    batches = [(rng.standard_normal((4, 3, 64, 64)).astype(np.float32), rng.integers(0, 5, 4).astype(np.int32))
               for _ in range(4)]
    losses, updates = {}, {}
    for precision in ("fp32", "bf16"):
        ms.set_seed(0)
        net = create_model("dvt_deit_small", cpu_kernels="on", precision=precision, **tiny)
        initial = {p.name: p.asnumpy().copy() for p in net.trainable_params()}
        optimizer = create_optimizer(net, "adamw", 1e-3, weight_decay=0.05)
        step = TrainStep(net, MultiExitLoss(), optimizer)
        assert step.loss_scaler is None
        losses[precision] = [float(step(Tensor(x), Tensor(y)).loss) for x, y in batches]
        assert {p.dtype for p in optimizer.parameters} == {ms.float32}
        updates[precision] = {p.name: p.asnumpy() - initial[p.name] for p in net.trainable_params()}
    assert losses["fp32"][-1] < losses["fp32"][0]
    np.testing.assert_allclose(losses["bf16"], losses["fp32"], rtol=2e-2)
    assert losses["bf16"] != losses["fp32"], "bf16 reproduced fp32 exactly: the products did not run in bf16"
    # Per element, Adam turns rounding noise into full steps where the true gradient is zero (a key bias and
    # relation reuse's output bias only shift softmax rows), so the updates are compared as a whole...
    flat = {k: np.concatenate([u.ravel() for u in v.values()]) for k, v in updates.items()}
    drift = np.linalg.norm(flat["bf16"] - flat["fp32"]) / np.linalg.norm(flat["fp32"])
    assert drift < 0.15, f"bf16's updates differ from fp32's by {drift:.3f} of their norm"
    # ...and per parameter only for a lost gradient: weight decay alone would move it ~100x less than lr.
    # The last block's feature-reuse biases reach no exit (only the class token does) and stay put in both.
    for name, fp32_update in updates["fp32"].items():
        if not fp32_update.any():
            assert not updates["bf16"][name].any(), f"{name} moved in bf16 only"
            continue
        ratio = np.linalg.norm(updates["bf16"][name]) / np.linalg.norm(fp32_update)
        assert ratio > 0.5, f"{name} moved {ratio:.3f}x as far in bf16 as in fp32: its bf16 gradient is lost"
