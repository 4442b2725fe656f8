"""The graph GPU and Ascend run, checked on CPU: MindSpore's own ops (``cpu_kernels="off"``) in float16.

**The sweep**: every registered model, the 4-stage cascade of ``configs/dvt_deit_small_four_stage.yaml`` and
DVT x EViT (``dvt_evit_deit_small``, registered), at the training levels O1, O2 and O3
(:mod:`dvt_ms.precision`: O1 is the model's own float16 products, ``create_model(precision="fp16")``;
O2 and O3 are ``mindspore.amp.auto_mixed_precision``). Models whose tiny spec is the same (``deit_tiny``,
``deit_small`` and ``deit_base`` at 32 channels) build the same graph and run as one case named by all of
them. Each case

- gives finite float32 exits within :data:`LOGIT_BOUND` of the same weights in float32, and not bit-identical
  to them: float16 ran (the forward runs op by op, PyNative, to save compiling);
- compiles its training step (forward and backward, ``ms.jit``) and takes steps under dynamic loss scaling:
  a step is applied, then one with a scale float16 cannot hold (2^100) is skipped with the scale halved and
  the weights unchanged.

Then, compiled in graph mode: the user's own ``mindspore.amp.auto_mixed_precision(net, "O1")`` on each family,
the early-exit engine (buckets) and MindIR export in float16 with the exported stages replayed, and the
official MindSpore DVT reference case in float16 against the official code's own float16 run.
Sizes are tiny (depth 1, 2 with EViT pruning, 32 channels, 64-pixel images; the 4-stage cascade keeps its
224-pixel patch grid).
"""
import json
from pathlib import Path

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor, ops

from dvt_ms import create_model, load_checkpoint
from dvt_ms.export import export_cascade
from dvt_ms.infer import AdaptiveClassifier, softmax, thresholds_for_fractions
from dvt_ms.models import list_models, model_family
from dvt_ms.models.tokenizers import T2TTokenizer
from dvt_ms.train import MultiExitLoss, TrainStep, create_optimizer
from dvt_ms.precision import resolve_training_precision
from dvt_ms.train.weights_init import reinit_fan_in
from dvt_ms.utils.yaml_io import load_yaml
from tests.test_export import run_exported
from tests.tiny_models import one_per_tiny_spec, tiny_overrides

ROOT = Path(__file__).resolve().parents[1]
FOUR_STAGE = "four_stage_yaml"
LEVELS = ("O1", "O2", "O3")
#: float16 exits differ from float32 by at most this fraction of the largest |fp32 logit|. float16 keeps 11
#: significant bits (a relative rounding of 2^-11, ~5e-4, per operand); through the tokenizer, one block and the
#: reuse paths with O(1) activations (fan-in weights) the cases stay under 0.5% (O3, which also rounds
#: LayerNorm, softmax and GELU, the most)
LOGIT_BOUND = 0.02
BATCH = 2
#: where the dynamic loss scale starts here (2^16 by default, which overflows these tiny models' float16
#: gradients for a few steps: each a skipped step, as checked, but slow at 224 pixels)
START_SCALE = 2.0 ** 12
#: steps the scale may still overflow before it fits float16
MAX_OVERFLOWS = 4
#: the official MindSpore DVT's own float16 error on its reference case (README of the reference files)
OFFICIAL_FP16_ERROR = 4.9e-3

pytestmark = pytest.mark.usefixtures("module_in_tmp_cwd")  # amp O1's rewrite writes files into the cwd


def _tiny(case: str) -> dict:
    if case == FOUR_STAGE:
        config = load_yaml((ROOT / "configs" / "dvt_deit_small_four_stage.yaml").read_text())
        stages = [dict(s, drop_loc=[0]) if "drop_loc" in s else s for s in config["model_overrides"]["stages"]]
        return dict(embed_dim=32, depth=1, num_heads=2, mlp_ratio=2.0, num_classes=5, stages=stages,
                    reuse_hidden_dim=16, reuse_feature_dim=8)  # pruning moved into the one block
    return tiny_overrides(case)


def _model_name(case: str) -> str:
    return "dvt_deit_small" if case == FOUR_STAGE else case


CASES, CASE_IDS = one_per_tiny_spec(list_models() + [FOUR_STAGE], _model_name, _tiny)
#: one case per model family (deit, evit, t2t, dvt): the model classes whose code amp O1's rewrite reads
FAMILY_CASES = list({model_family(_model_name(case)): case for case in reversed(CASES)}.values())


def build(case: str, precision: str = "fp32"):
    return create_model(_model_name(case), cpu_kernels="off", precision=precision, **_tiny(case))


def copy_weights(src, dst) -> None:
    weights = {p.name: ms.Parameter(Tensor(p.asnumpy()), name=p.name) for p in src.get_parameters()}
    assert ms.load_param_into_net(dst, weights) == ([], [])


def exits(net, images: np.ndarray):
    out = net(Tensor(images))
    return list(out) if isinstance(out, tuple) else [out]


def check_close(got, want) -> float:
    """float32, finite, within :data:`LOGIT_BOUND` of the largest |fp32 logit| and not equal to fp32; returns
    the largest difference."""
    assert [o.dtype for o in got] == [ms.float32] * len(want)
    got = [o.asnumpy() for o in got]
    scale = max(float(np.abs(w).max()) for w in want)
    difference = max(float(np.abs(g - w).max()) for g, w in zip(got, want))
    assert all(np.isfinite(g).all() for g in got)
    assert difference <= LOGIT_BOUND * scale, (difference, scale)
    assert difference > 0, "float16 gave the fp32 exits bit for bit: nothing ran in float16"
    return difference


@pytest.fixture
def pynative():
    """The test runs in PyNative mode (``ms.jit`` functions still compile); graph mode after it."""
    ms.set_context(mode=ms.PYNATIVE_MODE)
    yield
    ms.set_context(mode=ms.GRAPH_MODE)


@pytest.fixture(scope="module")
def references():
    """Per case: the fp32 network and a fixed batch, built once. Fan-in weights make the activations O(1),
    except in T2T models: there the Performer's exp features of O(1) tokens (e^-30) fall below float16's range
    under amp O2/O3, which cast them too, so T2T keeps the official initialization (O1 keeps them float32)."""
    cache = {}

    def get(case):
        if case not in cache:
            ms.set_seed(0)
            net = build(case)
            if not any(isinstance(stage.tokenizer, T2TTokenizer) for stage in net.spec.stages):
                reinit_fan_in(net)
            net.set_train(False)
            size = net.spec.image_size
            cache[case] = (net, np.random.default_rng(0).standard_normal((BATCH, 3, size, size)).astype(np.float32))
        return cache[case]

    return get


def check_skipped(output, before, optimizer, scale) -> None:
    """An overflow under dynamic loss scaling: finite loss, step skipped, scale halved, weights unchanged."""
    assert output.overflow and not output.applied and np.isfinite(output.loss), output
    assert output.loss_scale == scale / 2
    assert all(np.array_equal(b, p.asnumpy()) for b, p in zip(before, optimizer.parameters))


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_float16_sweep(case, level, references, pynative):
    reference, images = references(case)
    precision = resolve_training_precision("fp16", level, "CPU", cpu_kernels="off")
    assert (precision.compute, precision.level) == ("fp16", level)
    net = build(case, precision.model_precision)
    copy_weights(reference, net)
    optimizer = create_optimizer(net, lr=1e-3)
    # O1: the model carries float16 (stepped at amp O0); O2/O3: mindspore.amp on the fp32 model
    step = TrainStep(net, MultiExitLoss(), optimizer, amp_level=precision.amp_level, loss_scale="dynamic",
                     raise_on_nonfinite=False)
    step.net.set_train(False)
    difference = check_close(exits(step.net, images), [o.asnumpy() for o in exits(reference, images)])
    print(f"\n{case} {level}: max |fp16 - fp32| = {difference:.3g}")

    labels = Tensor(np.arange(BATCH, dtype=np.int32) % 5)
    ops.assign(step.loss_scaler.scale_value, Tensor(START_SCALE, ms.float32))
    for _ in range(MAX_OVERFLOWS + 1):
        before = [p.asnumpy().copy() for p in optimizer.parameters]
        output = step(Tensor(images), labels)
        if output.applied:
            break
        check_skipped(output, before, optimizer, output.loss_scale * 2)
    assert output.applied and np.isfinite(output.loss), output
    assert any(not np.array_equal(b, p.asnumpy()) for b, p in zip(before, optimizer.parameters))
    huge = 2.0 ** 100  # a float32 scale whose gradients float16 cannot hold
    ops.assign(step.loss_scaler.scale_value, Tensor(huge, ms.float32))
    before = [p.asnumpy().copy() for p in optimizer.parameters]
    check_skipped(step(Tensor(images), labels), before, optimizer, huge)


@pytest.mark.parametrize("case", FAMILY_CASES)
def test_users_own_amp_o1_compiles_and_runs(case, references):
    """``mindspore.amp.auto_mixed_precision(net, "O1")`` (a source rewrite of the model's classes) on a
    ``cpu_kernels="off"`` model of each family compiles and runs (O2 and O3 are the sweep's)."""
    reference, images = references(case)
    net = build(case)
    copy_weights(reference, net)
    net.set_train(False)
    amp_net = ms.amp.auto_mixed_precision(net, "O1", ms.float16)
    got = [o.asnumpy() for o in exits(amp_net, images)]
    want = [o.asnumpy() for o in exits(reference, images)]
    assert all(np.isfinite(g).all() for g in got)
    scale = max(float(np.abs(w).max()) for w in want)
    assert max(float(np.abs(g - w).max()) for g, w in zip(got, want)) <= LOGIT_BOUND * scale


@pytest.fixture(scope="module")
def dvt_fp16():
    """A tiny DVT in fp32 and the same weights built in fp16 on MindSpore's ops (graph mode)."""
    ms.set_seed(0)
    fp32 = build("dvt_deit_small")
    reinit_fan_in(fp32)
    fp16 = build("dvt_deit_small", "fp16")
    copy_weights(fp32, fp16)
    for net in (fp32, fp16):
        net.set_train(False)
    images = np.random.default_rng(3).standard_normal((6, 3, 64, 64)).astype(np.float32)
    return fp32, fp16, images


def test_engine_and_export_in_float16(dvt_fp16, tmp_path):
    fp32, fp16, images = dvt_fp16
    assert fp16.kernels.describe().startswith("MindSpore ops, fp16 mixed precision")
    full = exits(fp16, images)
    check_close(full, [o.asnumpy() for o in exits(fp32, images)])  # compiled: the DVT graph in float16
    full = [o.asnumpy() for o in full]
    thresholds = thresholds_for_fractions(np.stack([softmax(o) for o in full]), [2 / 6, 2 / 6, 2 / 6])
    engine = AdaptiveClassifier(fp16, thresholds, buckets=[2, 4])
    assert engine.precision == "fp16"
    result = engine(images, return_logits=True)
    assert result.exit_counts(3).tolist() == [2, 2, 2]
    scale = max(float(np.abs(o).max()) for o in full)
    for i, k in enumerate(result.exits):  # the stage graphs at bucket sizes give the full cascade's logits
        np.testing.assert_allclose(result.logits[i], full[k][i], rtol=0, atol=1e-3 * scale)

    manifest_path = export_cascade(fp16, tmp_path / "export")
    manifest = json.loads(manifest_path.read_text())
    assert manifest["precision"] == {"files": "fp16", "model": "fp16"}
    cells = [ms.nn.GraphCell(ms.load(str(manifest_path.parent / s["file"]))) for s in manifest["stages"]]
    replayed, predictions, logits = run_exported(manifest, cells, images, thresholds)
    np.testing.assert_array_equal(replayed, result.exits)
    np.testing.assert_array_equal(predictions, result.predictions)
    np.testing.assert_allclose(logits, result.logits, rtol=0, atol=1e-3 * scale)


@pytest.mark.parametrize("level", ["O1", "O3"])
def test_official_reference_case_in_float16(reference_dir, level):
    """The official MindSpore DVT's tiny case: this project's float16 graph against the official code's own
    ``to_float(float16)`` run, within twice the official float16 error (O3 is the official Ascend setting)."""
    official = np.load(reference_dir / "dvtms_official_tiny_fp16.npz")
    sizes = dict(embed_dim=64, depth=2, num_heads=2, mlp_ratio=2.0, num_classes=10)
    precision = resolve_training_precision("fp16", level, "CPU", cpu_kernels="off")
    net = create_model("dvt_mindspore_deit_small", cpu_kernels="off", precision=precision.model_precision, **sizes)
    load_checkpoint(net, reference_dir / "dvtms_official_tiny.ckpt")
    if precision.amp_level != "O0":
        net = ms.amp.auto_mixed_precision(net, precision.amp_level, ms.float16)
    net.set_train(False)
    got = exits(net, official["input"])
    check_close(got, [official["exit0_fp32"], official["exit1_fp32"]])
    for k, out in enumerate(got):
        error = float(np.abs(out.asnumpy() - official[f"exit{k}"]).max())
        print(f"\nofficial case {level} exit {k}: max |ours - official fp16| = {error:.3g}")
        assert error <= 2 * OFFICIAL_FP16_ERROR, (k, error)
