"""Every registered model keeps the registry's contract (issue 19; in the manner of timm's tests/test_models.py):
at tiny sizes it builds, gives its spec's exits, runs a training step, has its FLOPs counted, and passes through
the early-exit engine (cascades) or is refused by it by name (single-exit models). The sweep is list_models():
a new model is covered without editing this file. (Mixed precision over the same sweep: test_accelerator_graph.)"""
import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor

from dvt_ms import create_model, list_models
from dvt_ms.flops import count
from dvt_ms.infer import AdaptiveClassifier
from dvt_ms.models import DynamicVisionTransformer, model_spec
from dvt_ms.train import MultiExitLoss, TrainStep, create_optimizer

from .tiny_models import tiny_overrides

BATCH = 2


@pytest.fixture(scope="module", params=list_models())
def built(request):
    name = request.param
    overrides = tiny_overrides(name)
    ms.set_seed(0)
    net = create_model(name, **overrides)
    images = np.random.default_rng(0).standard_normal((BATCH, 3, 64, 64)).astype(np.float32)
    return name, overrides, net, images


def _exits(net, images):
    out = net(Tensor(images))
    return [o.asnumpy() for o in (out if isinstance(out, (tuple, list)) else (out,))]


def test_builds_with_its_specs_exits(built):
    name, overrides, net, images = built
    spec = model_spec(name, **overrides)
    assert net.spec == spec
    net.set_train(False)
    exits = _exits(net, images)
    assert len(exits) == spec.num_exits
    for logits in exits:
        assert logits.shape == (BATCH, spec.num_classes) and logits.dtype == np.float32
        assert np.isfinite(logits).all()


def test_counts_flops(built):
    name, overrides, net, _ = built
    macs = count(net, 64)
    assert len(macs) == net.spec.num_exits
    assert all(m > 0 for m in macs) and macs == sorted(macs)  # cumulative over the exits


def test_runs_a_train_step(built):
    name, overrides, net, images = built
    net.set_train(True)
    before = {p.name: p.asnumpy().copy() for p in net.trainable_params()}
    step = TrainStep(net, MultiExitLoss(label_smoothing=0.0), create_optimizer(net, lr=1e-3))
    out = step(Tensor(images), Tensor(np.arange(BATCH, dtype=np.int32) % net.spec.num_classes))
    net.set_train(False)
    assert out.finite and out.applied and np.isfinite(out.loss)
    assert len(out.exit_losses) == net.spec.num_exits
    changed = [k for k, v in before.items() if not np.array_equal(v, net.parameters_dict()[k].asnumpy())]
    assert changed, "no parameter changed"


def test_passes_through_the_engine(built):
    name, overrides, net, images = built
    net.set_train(False)
    if not isinstance(net, DynamicVisionTransformer):
        with pytest.raises(TypeError, match="DynamicVisionTransformer"):
            AdaptiveClassifier(net, [-1.0])
        return
    n = net.spec.num_exits
    full = _exits(net, images)
    # no confidence reaches 2: every image runs the whole cascade and leaves at the last exit
    result = AdaptiveClassifier(net, [2.0] * (n - 1) + [-1.0])(images, return_logits=True)
    assert result.exits.tolist() == [n - 1] * BATCH
    np.testing.assert_allclose(result.logits, full[-1], rtol=1e-4, atol=1e-4)
    # thresholds of -1 send every image out at the first exit
    first = AdaptiveClassifier(net, [-1.0] * n)(images, return_logits=True)
    assert first.exits.tolist() == [0] * BATCH
    np.testing.assert_allclose(first.logits, full[0], rtol=1e-4, atol=1e-4)
