"""Training checkpoints (save, keep-k, best, atomicity, strict resume, exact continuation) and metrics."""
import json

import mindspore as ms
import numpy as np
import pytest
from mindspore import Parameter, Tensor, nn

from dvt_ms import create_model
from dvt_ms.checkpoint import CheckpointError, CheckpointMismatchError, save_checkpoint
from dvt_ms.checkpoint import loader as loader_module
from dvt_ms.plots import PlotUnavailable
from dvt_ms.train import metrics as metrics_module
from dvt_ms.train.checkpoints import CheckpointManager
from dvt_ms.train.ema import ModelEMA
from dvt_ms.train.loss import MultiExitLoss
from dvt_ms.train.metrics import MetricsLogger, plot_metrics, read_metrics
from dvt_ms.train.optim import create_optimizer, optimizer_state_params
from dvt_ms.train.schedule import cosine_lr
from dvt_ms.train.step import TrainStep

TINY = dict(embed_dim=64, depth=2, num_heads=2, mlp_ratio=2.0, num_classes=10)


pytestmark = pytest.mark.usefixtures("module_in_tmp_cwd")


class _Small(nn.Cell):
    def __init__(self, width: int = 4):
        super().__init__()
        self.fc = nn.Dense(width, 3)
        self.frozen = Parameter(Tensor(np.arange(3, dtype=np.float32)), name="frozen", requires_grad=False)

    def construct(self, x):
        return self.fc(x)


def _parts(width: int = 4):
    net = _Small(width)
    optimizer = create_optimizer(net, lr=1e-3)
    return net, optimizer, ModelEMA(net, 0.9)


def _files(folder):
    return sorted(p.name for p in folder.iterdir())


# ---------------------------------------------------------------------------------- save / prune
def test_keep_last_and_best(tmp_path):
    net, optimizer, ema = _parts()
    manager = CheckpointManager(tmp_path, keep_last=2)
    for epoch, metric in enumerate([0.1, 0.5, 0.3, 0.6, 0.2]):
        manager.save(net, optimizer, ema, epoch, global_step=10 * epoch, metric=metric,
                     extra={"config": {"model": "small", "lr": 1e-3}})
    assert _files(tmp_path) == ["best.ckpt", "epoch_0003.ckpt", "epoch_0004.ckpt"]  # no temp files left
    best = manager.read_metadata(tmp_path / "best.ckpt")
    assert (best["epoch"], best["metric"], best["best_epoch"]) == (3, 0.6, 3)
    last = manager.read_metadata(tmp_path / "epoch_0004.ckpt")
    assert (last["global_step"], last["best_metric"], last["config"]["model"]) == (40, 0.6, "small")
    assert manager.latest() == tmp_path / "epoch_0004.ckpt"

    other = tmp_path / "rank1"
    assert CheckpointManager(other, rank=1).save(net, optimizer, ema, 0, 0, metric=1.0) is None
    assert not other.exists()
    with pytest.raises(ValueError, match="reserved key"):
        manager.save(net, optimizer, ema, 5, 50, extra={"epoch": 3})
    with pytest.raises(ValueError, match="metric"):
        manager.save(net, optimizer, ema, 5, 50, metric=float("nan"))


def test_failed_save_keeps_the_existing_file(tmp_path, monkeypatch):
    net, optimizer, ema = _parts()
    manager = CheckpointManager(tmp_path, keep_last=3)
    path = manager.save(net, optimizer, ema, 1, 10, metric=0.5)
    original = path.read_bytes()
    best = (tmp_path / "best.ckpt").read_bytes()
    real_save = loader_module.ms.save_checkpoint

    def crash(save_obj, name, *args, **kwargs):
        real_save(save_obj, name, *args, **kwargs)
        with open(name, "r+b") as handle:        # a half-written file, then the crash
            handle.truncate(100)
        raise OSError("disk full")

    monkeypatch.setattr(loader_module.ms, "save_checkpoint", crash)
    net.fc.weight.set_data(Tensor(np.zeros((3, 4), np.float32)))
    with pytest.raises(OSError, match="disk full"):
        manager.save(net, optimizer, ema, 1, 10, metric=0.9)
    monkeypatch.undo()
    assert path.read_bytes() == original and (tmp_path / "best.ckpt").read_bytes() == best
    assert _files(tmp_path) == ["best.ckpt", "epoch_0001.ckpt"]
    assert manager.best_metric == 0.5


def test_latest_skips_temporary_and_corrupt_files(tmp_path):
    net, optimizer, ema = _parts()
    manager = CheckpointManager(tmp_path, keep_last=None)
    assert manager.latest() is None and manager.resume("auto", net, optimizer, ema) is None
    manager.save(net, optimizer, ema, 4, 40)
    (tmp_path / ".epoch_0009.abc123.tmp.ckpt").write_bytes(b"partial")
    good = (tmp_path / "epoch_0004.ckpt").read_bytes()
    (tmp_path / "epoch_0005.ckpt").write_bytes(good[: len(good) // 2])   # torn copy
    assert manager.latest() == tmp_path / "epoch_0004.ckpt"
    assert manager.resume("auto", net, optimizer, ema)["epoch"] == 4


def test_resume_is_strict_and_all_or_nothing(tmp_path):
    net, optimizer, ema = _parts()
    manager = CheckpointManager(tmp_path)
    path = manager.save(net, optimizer, None, 0, 0)
    plain = save_checkpoint(net, tmp_path / "weights.ckpt")

    other, other_optimizer, other_ema = _parts(width=6)
    before = other.fc.weight.asnumpy().copy()
    with pytest.raises(CheckpointMismatchError, match=r"fc.weight: checkpoint \(3, 4\) vs model \(3, 6\)"):
        manager.resume(path, other, other_optimizer)
    np.testing.assert_array_equal(other.fc.weight.asnumpy(), before)

    fresh, fresh_optimizer, fresh_ema = _parts()
    before = fresh.fc.weight.asnumpy().copy()
    with pytest.raises(CheckpointError, match="no EMA weights"):
        manager.resume(path, fresh, fresh_optimizer, fresh_ema)
    np.testing.assert_array_equal(fresh.fc.weight.asnumpy(), before)
    sgd = create_optimizer(fresh, name="sgd")
    with pytest.raises(CheckpointMismatchError, match="Momentum vs AdamW"):
        manager.resume(path, fresh, sgd)
    with pytest.raises(CheckpointError, match="not a training checkpoint"):
        manager.resume(plain, fresh, fresh_optimizer)
    assert manager.resume(path, fresh, fresh_optimizer)["epoch"] == 0
    np.testing.assert_array_equal(fresh.fc.weight.asnumpy(), net.fc.weight.asnumpy())


def test_a_checkpoint_written_after_a_resume_resumes_again(tmp_path):
    """Scalar optimizer state (``adam_updates``) keeps its shape through any number of resumes."""
    net, optimizer, ema = _parts()
    shapes = {p.name: tuple(p.shape) for p in optimizer_state_params(optimizer)}
    assert shapes["adam_updates"] == ()
    manager = CheckpointManager(tmp_path, keep_last=None)
    manager.save(net, optimizer, ema, epoch=1)
    for epoch in (2, 3):  # resume a fresh model from the last file, save the next epoch, again
        net, optimizer, ema = _parts()
        assert manager.resume("auto", net, optimizer, ema)["epoch"] == epoch - 1
        assert {p.name: tuple(p.shape) for p in optimizer_state_params(optimizer)} == shapes
        manager.save(net, optimizer, ema, epoch=epoch)
    saved = ms.load_checkpoint(str(tmp_path / "epoch_0003.ckpt"))
    assert tuple(saved["optimizer.adam_updates"].shape) == ()


def test_integer_values_for_a_float_parameter_are_refused(tmp_path):
    net = _Small()
    weights = {"fc.weight": np.ones((3, 4), np.int64), "fc.bias": np.zeros(3, np.float32),
               "frozen": np.zeros(3, np.float32)}
    path = tmp_path / "ints.ckpt"
    save_checkpoint([{"name": k, "data": Tensor(v)} for k, v in weights.items()], path)
    before = net.fc.weight.asnumpy().copy()
    with pytest.raises(CheckpointError, match=r"ints.ckpt: fc.weight holds int64 values .* Float32"):
        loader_module.load_checkpoint(net, path)
    np.testing.assert_array_equal(net.fc.weight.asnumpy(), before)


# --------------------------------------------------------------------------- exact continuation
def _batches(count, start=0):
    for k in range(start, start + count):
        rng = np.random.default_rng(100 + k)
        yield (Tensor(rng.standard_normal((2, 3, 224, 224)).astype(np.float32)),
               Tensor(rng.integers(0, 10, 2).astype(np.int32)))


def _dvt_training(seed):
    ms.set_seed(seed)
    net = create_model("dvt_deit_small", **TINY)
    optimizer = create_optimizer(net, lr=cosine_lr(1e-3, 2, warmup_epochs=1, cooldown_epochs=0, epochs=4))
    ema = ModelEMA(net, 0.9)
    return net, optimizer, ema, TrainStep(net, MultiExitLoss(), optimizer, ema=ema, clip_grad_norm=1.0)


def test_resume_continues_exactly(tmp_path):
    net, optimizer, ema, step = _dvt_training(seed=0)
    for images, targets in _batches(3):
        step(images, targets)
    manager = CheckpointManager(tmp_path)
    manager.save(net, optimizer, ema, epoch=1, global_step=step.global_step, metric=0.25,
                 extra={"lr": float(optimizer.get_lr().asnumpy())})
    for images, targets in _batches(2, start=3):
        step(images, targets)

    net2, optimizer2, ema2, step2 = _dvt_training(seed=1)           # different initial weights
    meta = CheckpointManager(tmp_path).resume("auto", net2, optimizer2, ema2)
    assert (meta["epoch"], meta["global_step"], step2.global_step) == (1, 3, 3)
    assert float(optimizer2.get_lr().asnumpy()) == meta["lr"]
    for images, targets in _batches(2, start=3):
        step2(images, targets)

    assert step2.global_step == step.global_step == 5 and ema2.updates == ema.updates == 5
    for a, b in zip(net.get_parameters(), net2.get_parameters()):
        np.testing.assert_allclose(a.asnumpy(), b.asnumpy(), atol=1e-6, err_msg=a.name)
    for a, b in zip(optimizer_state_params(optimizer), optimizer_state_params(optimizer2)):
        np.testing.assert_allclose(a.asnumpy(), b.asnumpy(), atol=1e-6, err_msg=a.name)
    ema_a, ema_b = ema.state(), ema2.state()
    for name in ema_a:
        np.testing.assert_allclose(ema_a[name], ema_b[name], atol=1e-6, err_msg=name)


# ------------------------------------------------------------------------------------- metrics
def test_metrics_jsonl_and_plot(tmp_path, monkeypatch, caplog):
    log = MetricsLogger(tmp_path)
    for epoch in range(3):
        log.log_epoch(epoch, train_loss=[3.0 - epoch, 2.5 - epoch, 2.0 - epoch], lr=np.float32(1e-3),
                      val_top1=[10.0 + epoch, 20.0 + epoch, 30.0 + epoch], val_top5=[50.0, 60.0, 70.0],
                      images_per_sec=100.0, epoch_time=12.5, skipped_images=0)
    with caplog.at_level("WARNING"):
        log.log_epoch(2, train_loss=[float("nan"), 0.5, 0.4], lr=1e-4)   # epoch 2 again (after a resume)
    assert "train_loss[0]" in caplog.text
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 4 and json.loads(lines[-1])["train_loss"][0] is None
    with open(tmp_path / "metrics.jsonl", "a") as handle:
        handle.write('{"epoch": 3, "train_lo')                           # torn last line
    records = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["epoch"] for r in records] == [0, 1, 2] and records[2]["lr"] == 1e-4
    assert MetricsLogger(tmp_path / "r1", rank=1).log({"epoch": 0}) is None
    with pytest.raises(ValueError, match="'epoch'"):
        log.log({"loss": 1.0})

    png = plot_metrics(tmp_path / "metrics.jsonl", tmp_path / "plots" / "curves.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    monkeypatch.setattr(metrics_module, "matplotlib_available", lambda: False)
    with pytest.raises(PlotUnavailable, match="pip install matplotlib"):
        plot_metrics(tmp_path / "metrics.jsonl", tmp_path / "other.png")


def test_checkpoints_and_metrics_follow_the_umask(tmp_path):
    import os
    import stat

    old = os.umask(0o022)
    try:
        net, optimizer, ema = _parts()
        manager = CheckpointManager(tmp_path)
        path = manager.save(net, optimizer, ema, epoch=1, metric=0.5)
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
        assert stat.S_IMODE((tmp_path / "best.ckpt").stat().st_mode) == 0o644
        log = MetricsLogger(tmp_path)
        for epoch in (1, 2, 2):
            log.log({"epoch": epoch})
        os.chmod(log.path, 0o640)
        log.drop_after(1)  # what a resume after epoch 1 does
        assert [r["epoch"] for r in read_metrics(log.path)] == [1]
        assert stat.S_IMODE(log.path.stat().st_mode) == 0o640
        before = log.path.stat().st_mtime_ns, log.path.stat().st_ino
        log.drop_after(1)  # nothing to drop: not rewritten
        assert (log.path.stat().st_mtime_ns, log.path.stat().st_ino) == before
    finally:
        os.umask(old)


def test_step_checkpoints_are_the_newest_until_an_epoch_file_follows(tmp_path):
    net, optimizer, ema = _parts()
    manager = CheckpointManager(tmp_path, keep_last=2)
    manager.save(net, optimizer, ema, epoch=1, global_step=0, metric=0.5)
    first = manager.save(net, optimizer, ema, epoch=1, global_step=0, epoch_step=2,
                         extra={"partial_epoch": {"sums": [2, 1.0]}})
    second = manager.save(net, optimizer, ema, epoch=1, global_step=0, epoch_step=3)
    assert second.name == "epoch_0002_step_000003.ckpt" and not first.exists()  # the older step file is superseded
    assert manager.latest() == second
    meta = CheckpointManager(tmp_path).resume("auto", *_parts())
    assert (meta["epoch"], meta["epoch_step"]) == (1, 3)
    assert CheckpointManager.read_metadata(second)["best_metric"] == 0.5  # a step file keeps the best so far
    manager.save(net, optimizer, ema, epoch=2, global_step=0, metric=0.4)
    assert _files(tmp_path) == ["best.ckpt", "epoch_0001.ckpt", "epoch_0002.ckpt"]
    with pytest.raises(ValueError, match="no metric"):
        manager.save(net, optimizer, ema, epoch=2, epoch_step=1, metric=0.3)
