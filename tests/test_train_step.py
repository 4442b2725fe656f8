"""Multi-exit loss, EMA, and the compiled training step (finite check, gradient sync, clipping, AMP)."""
import mindspore as ms
import numpy as np
import pytest
from mindspore import Parameter, Tensor, nn, ops
from mindspore.amp import DynamicLossScaler, StaticLossScaler

from dvt_ms import create_model
from dvt_ms.train import step as step_module
from dvt_ms.train.ema import ModelEMA
from dvt_ms.train.loss import MultiExitLoss, check_targets
from dvt_ms.train.optim import create_optimizer, optimizer_state_params
from dvt_ms.train.step import NonFiniteError, TrainStep, build_grad_sync, create_loss_scaler

TINY = dict(embed_dim=64, depth=2, num_heads=2, mlp_ratio=2.0, num_classes=10)


pytestmark = pytest.mark.usefixtures("module_in_tmp_cwd")


class _Linear(nn.Cell):
    """A small classifier for the step-logic tests (compiles in about a second)."""

    def __init__(self, num_classes: int = 5):
        super().__init__()
        self.fc = nn.Dense(12, num_classes)
        self.num_classes = num_classes
        self.frozen = Parameter(Tensor(np.ones(3, np.float32)), name="frozen", requires_grad=False)

    def construct(self, x):
        return self.fc(x.reshape((x.shape[0], -1)))


def _images(rng, batch=4, shape=(3, 2, 2)):
    return Tensor(rng.standard_normal((batch,) + shape).astype(np.float32))


def _snapshot(*holders):
    out = {}
    for index, params in enumerate(holders):
        out.update({f"{index}/{p.name}": p.asnumpy().copy() for p in params})
    return out


def _log_softmax(x):
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


# ------------------------------------------------------------------------------------------ loss
def test_multi_exit_loss_matches_numpy():
    rng = np.random.default_rng(0)
    logits = [rng.standard_normal((4, 6)).astype(np.float32) for _ in range(3)]
    labels = np.array([0, 5, 2, 2], np.int32)
    smoothing, weights = 0.1, (0.5, 1.0, 2.0)
    hard = np.full((4, 6), smoothing / 6, np.float32)
    hard[np.arange(4), labels] += 1 - smoothing
    soft = rng.random((4, 6)).astype(np.float32)
    soft /= soft.sum(axis=1, keepdims=True)

    def ce(z, t):
        return float(-(t * _log_softmax(z.astype(np.float64))).sum(axis=1).mean())

    loss_fn = MultiExitLoss(weights=weights, label_smoothing=smoothing)
    for targets, dense in ((Tensor(labels), hard), (Tensor(soft), soft)):
        total, per_exit = loss_fn(tuple(Tensor(z) for z in logits), targets)
        expected = [ce(z, dense) for z in logits]
        np.testing.assert_allclose(per_exit.asnumpy(), expected, rtol=1e-5)
        assert float(total.asnumpy()) == pytest.approx(sum(w * e for w, e in zip(weights, expected)), rel=1e-5)
    single = MultiExitLoss(label_smoothing=0.0, return_per_exit=False)(Tensor(logits[0]), Tensor(labels))
    one_hot = np.eye(6, dtype=np.float32)[labels]
    assert float(single.asnumpy()) == pytest.approx(ce(logits[0], one_hot), rel=1e-5)
    with pytest.raises(ValueError, match="2 exit weight"):
        MultiExitLoss(weights=(1.0, 1.0))(tuple(Tensor(z) for z in logits), Tensor(labels))
    with pytest.raises(ValueError, match="label_smoothing"):
        MultiExitLoss(label_smoothing=1.0)


def test_check_targets_names_the_problem():
    check_targets(np.array([0, 9]), 10, 2)
    with pytest.raises(ValueError, match="label 10"):
        check_targets(np.array([0, 10]), 10)
    with pytest.raises(ValueError, match="batch size"):
        check_targets(np.array([0, 1, 2]), 10, 2)
    with pytest.raises(ValueError, match="NaN"):
        check_targets(np.array([[np.nan, 1.0]], np.float32), 2)
    with pytest.raises(ValueError, match="integers"):
        check_targets(np.array([0.0, 1.0]), 10)


# ------------------------------------------------------------------------------------------- EMA
def test_ema_math_after_two_updates():
    net = _Linear()
    decay = 0.9
    p0 = {p.name: p.asnumpy().copy() for p in net.get_parameters()}
    ema = ModelEMA(net, decay)
    values = []
    for k in (1, 2):
        for p in net.get_parameters():
            p.set_data(Tensor(p0[p.name] + k))
        values.append({n: v + k for n, v in p0.items()})
        ema.update()
    state = ema.state()
    for name in ("fc.weight", "fc.bias"):
        expected = decay * (decay * p0[name] + (1 - decay) * values[0][name]) + (1 - decay) * values[1][name]
        np.testing.assert_allclose(state[name], expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(state["frozen"], values[1]["frozen"])  # frozen: copied
    assert ema.updates == 2

    other = _Linear()
    ema.copy_to(other)
    np.testing.assert_array_equal(other.fc.weight.asnumpy(), state["fc.weight"])
    current = net.fc.weight.asnumpy().copy()
    with ema.swapped(net):
        np.testing.assert_array_equal(net.fc.weight.asnumpy(), state["fc.weight"])
    np.testing.assert_array_equal(net.fc.weight.asnumpy(), current)

    fresh = ModelEMA(_Linear(), decay)
    fresh.load(state, updates=2)
    np.testing.assert_array_equal(fresh.state()["fc.weight"], state["fc.weight"])
    with pytest.raises(ValueError, match=r"1 missing key\(s\):\n    fc.bias"):
        fresh.load({k: v for k, v in state.items() if k != "fc.bias"})
    with pytest.raises(ValueError, match="decay"):
        ModelEMA(net, 1.0)


# ------------------------------------------------------------------------------- DVT train step
@pytest.fixture(scope="module")
def dvt_run():
    ms.set_seed(0)
    net = create_model("dvt_deit_small", **TINY)
    optimizer = create_optimizer(net, lr=1e-3)
    ema = ModelEMA(net, 0.9)
    step = TrainStep(net, MultiExitLoss(), optimizer, ema=ema, clip_grad_norm=5.0)
    rng = np.random.default_rng(0)
    images = _images(rng, 2, (3, 224, 224))
    targets = Tensor(np.array([1, 7], np.int32))
    outputs = [step(images, targets) for _ in range(5)]
    return dict(net=net, optimizer=optimizer, ema=ema, step=step, images=images, targets=targets,
                outputs=outputs)


def test_training_steps_reduce_the_loss(dvt_run):
    outputs = dvt_run["outputs"]
    assert [o.step for o in outputs] == [0, 1, 2, 3, 4]
    assert all(o.applied and o.finite and len(o.exit_losses) == 3 for o in outputs)
    assert outputs[-1].loss < 0.8 * outputs[0].loss
    assert all(last < first for first, last in zip(outputs[0].exit_losses, outputs[-1].exit_losses))
    assert outputs[0].loss == pytest.approx(sum(outputs[0].exit_losses), rel=1e-5)
    assert all(o.grad_norm is not None and o.grad_norm > 0 for o in outputs)
    assert dvt_run["step"].global_step == 5 and dvt_run["ema"].updates == 5


def test_nan_input_skips_the_update(dvt_run):
    net, optimizer, ema, step = dvt_run["net"], dvt_run["optimizer"], dvt_run["ema"], dvt_run["step"]
    bad = dvt_run["images"].asnumpy().copy()
    bad[0, 1, 100, 100] = np.nan
    before = _snapshot(net.get_parameters(), optimizer_state_params(optimizer))
    ema_before = ema.state()
    start = step.global_step
    with pytest.raises(NonFiniteError, match=f"non-finite loss at global step {start}"):
        step(Tensor(bad), dvt_run["targets"])
    step.raise_on_nonfinite = False
    try:
        output = step(Tensor(bad), dvt_run["targets"])
    finally:
        step.raise_on_nonfinite = True
    assert not output.loss_finite and not output.applied and output.step == start + 1
    after = _snapshot(net.get_parameters(), optimizer_state_params(optimizer))
    changed = [k for k in before if not np.array_equal(before[k], after[k], equal_nan=True)]
    assert changed == ["1/global_step"]                      # only the schedule position moved
    assert all(np.array_equal(v, ema.state()[k]) for k, v in ema_before.items())
    assert ema.updates == 5


# ---------------------------------------------------------------------------- data parallel sync
class _FakeReducer(nn.Cell):
    """Stands in for DistributedGradReducer; poisons the gradients so the test sees they are used."""

    created = []

    def __init__(self, parameters, mean=None, degree=None):
        super().__init__(auto_prefix=False)
        _FakeReducer.created.append(dict(parameters=list(parameters), mean=mean, degree=degree))
        self.minus_one = Tensor(-1.0, ms.float32)

    def construct(self, grads):
        # sqrt(-1): a NaN constant (Tensor(np.nan)) does not survive graph compilation in MindSpore 2.10
        return tuple([ops.sqrt(g * 0 + self.minus_one) for g in grads])


class _FakeAllReduce(nn.Cell):
    def __init__(self, op=None):
        super().__init__()
        self.op = op

    def construct(self, x):
        return x


@pytest.fixture
def data_parallel(monkeypatch):
    _FakeReducer.created.clear()
    monkeypatch.setattr(step_module, "DistributedGradReducer", _FakeReducer)
    monkeypatch.setattr(step_module, "AllReduce", _FakeAllReduce)
    ms.set_auto_parallel_context(parallel_mode=ms.ParallelMode.DATA_PARALLEL)
    yield
    ms.reset_auto_parallel_context()


def test_data_parallel_always_reduces_gradients(data_parallel):
    net = _Linear()
    optimizer = create_optimizer(net, lr=0.1)
    step = TrainStep(net, MultiExitLoss(), optimizer, raise_on_nonfinite=False)
    assert len(_FakeReducer.created) == 1
    created = _FakeReducer.created[0]
    assert [p.name for p in created["parameters"]] == [p.name for p in optimizer.parameters]
    assert created["mean"] is True                       # averaged even though gradients_mean is False
    before = net.fc.weight.asnumpy().copy()
    output = step(_images(np.random.default_rng(1)), Tensor(np.array([0, 1, 2, 3], np.int32)))
    # the loss is finite but the (reduced) gradients are not: the reducer's output is what the update uses
    assert output.loss_finite and not output.grads_finite and not output.applied
    np.testing.assert_array_equal(net.fc.weight.asnumpy(), before)


def test_grad_sync_by_parallel_mode():
    params = _Linear().trainable_params()
    assert build_grad_sync(params, ms.ParallelMode.STAND_ALONE) is None
    with pytest.raises(ValueError, match="semi_auto_parallel"):
        build_grad_sync(params, ms.ParallelMode.SEMI_AUTO_PARALLEL)


# ------------------------------------------------------------------------ clipping, AMP, loss scale
def test_gradient_clipping_bounds_the_update():
    net = _Linear()
    optimizer = create_optimizer(net, name="sgd", lr=1.0, weight_decay=0.0)
    step = TrainStep(net, MultiExitLoss(label_smoothing=0.0), optimizer, clip_grad_norm=1e-3)
    before = [p.asnumpy().copy() for p in optimizer.parameters]
    output = step(_images(np.random.default_rng(2)) * 10, Tensor(np.array([0, 1, 2, 3], np.int32)))
    assert output.grad_norm > 1e-3
    delta = np.sqrt(sum(((p.asnumpy() - b) ** 2).sum() for p, b in zip(optimizer.parameters, before)))
    assert delta == pytest.approx(1e-3, rel=1e-3)   # first momentum step: update = lr * clipped gradient


def test_amp_is_refused_on_cpu_and_scalers_are_built():
    net = _Linear()
    optimizer = create_optimizer(net)
    with pytest.raises(ValueError, match="'O2' is not supported on CPU"):
        TrainStep(net, MultiExitLoss(), optimizer, amp_level="O2")
    with pytest.raises(ValueError, match="amp_level must be one of"):
        TrainStep(net, MultiExitLoss(), optimizer, amp_level="O4")
    assert create_loss_scaler(None, "O0") is None
    assert isinstance(create_loss_scaler(None, "O2"), DynamicLossScaler)
    assert isinstance(create_loss_scaler(1024, "O0"), StaticLossScaler)
    with pytest.raises(ValueError, match="loss_scale"):
        create_loss_scaler(0.5)


def test_static_loss_scale_gives_the_same_update():
    rng = np.random.default_rng(3)
    images, targets = _images(rng), Tensor(np.array([4, 3, 2, 1], np.int32))
    results = []
    for loss_scale in (None, 1024.0):
        net = _Linear()
        net.fc.weight.set_data(Tensor(np.linspace(-1, 1, 60, dtype=np.float32).reshape(5, 12)))
        net.fc.bias.set_data(Tensor(np.zeros(5, np.float32)))
        # SGD: linear in the gradient (Adam would turn rounding noise in near-zero gradients into +-lr)
        optimizer = create_optimizer(net, name="sgd", lr=0.1, weight_decay=0.0)
        step = TrainStep(net, MultiExitLoss(), optimizer, loss_scale=loss_scale)
        for _ in range(2):
            step(images, targets)
        results.append(net.fc.weight.asnumpy())
    np.testing.assert_allclose(results[0], results[1], atol=1e-6)


def test_dynamic_loss_scale_overflow_is_skipped_not_fatal():
    net = _Linear()
    optimizer = create_optimizer(net, lr=1e-2)
    scaler = DynamicLossScaler(scale_value=2.0 ** 127, scale_factor=2, scale_window=1000)
    step = TrainStep(net, MultiExitLoss(), optimizer, loss_scale=scaler)
    before = net.fc.weight.asnumpy().copy()
    images, targets = _images(np.random.default_rng(4)) * 100, Tensor(np.array([0, 1, 2, 3], np.int32))
    output = step(images, targets)                  # scaled gradients overflow float32
    assert output.overflow and not output.applied and output.loss_scale == 2.0 ** 126
    np.testing.assert_array_equal(net.fc.weight.asnumpy(), before)
    for _ in range(30):
        output = step(images, targets)
        if output.applied:
            break
    assert output.applied and not np.array_equal(net.fc.weight.asnumpy(), before)


def test_evit_keep_rate_is_passed_at_call_time():
    net = create_model("evit_deit_small", **TINY, drop_loc=(1,))
    step = TrainStep(net, MultiExitLoss(), create_optimizer(net, lr=1e-3))
    rng = np.random.default_rng(5)
    output = step(_images(rng, 2, (3, 224, 224)), Tensor(np.array([0, 9], np.int32)), keep_rate=0.5)
    assert output.applied and len(output.exit_losses) == 1
    with pytest.raises(ValueError, match="keep_rate"):
        step(_images(rng, 2, (3, 224, 224)), Tensor(np.array([0, 9], np.int32)), keep_rate=1.5)
    with pytest.raises(ValueError, match="outside"):
        step(_images(rng, 2, (3, 224, 224)), Tensor(np.array([0, 10], np.int32)))


def test_running_past_the_lr_schedule_is_an_error():
    net = _Linear()
    step = TrainStep(net, MultiExitLoss(), create_optimizer(net, lr=np.array([1e-3, 5e-4], np.float32)))
    images, targets = _images(np.random.default_rng(6)), Tensor(np.array([0, 1, 2, 3], np.int32))
    step(images, targets)
    step(images, targets)
    with pytest.raises(ValueError, match="global step 2 is past the end of the lr schedule"):
        step(images, targets)
