"""Stop (SIGTERM/SIGINT), kill and resume, any number of times, reach the uninterrupted run's weights; a NaN
loss stops the run cleanly."""
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from .script_loader import script_env
from .test_train_cli import SCRIPT, base_args, load_train_script, make_image_folder

EPOCHS = 3
STEPS = 6  # per epoch: 24 train images, batch 4


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


def _run_args(data: Path, out: Path) -> list:
    # the full augmentation recipe (crops, flips, RandAugment, erasing, mixup/cutmix) stays on: each epoch's
    # pipeline is seeded from (seed, epoch), so the resumed run sees the same data; drop path is off because
    # its random stream lives in the compiled graph and restarts in a new process
    return base_args(data, out, epochs=EPOCHS, seed=7, crop_scale="[0.5, 1]", hflip="0.5",
                     auto_augment="rand-m9-mstd0.5-inc1", reprob="0.25", mixup="0.8", cutmix="1.0",
                     model_ema_decay="0.9", keep_checkpoints=EPOCHS)


def _start(args: list, cwd: Path, log: Path) -> subprocess.Popen:
    env = script_env(PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, str(SCRIPT)] + args, cwd=cwd, stdout=open(log, "w"),
                            stderr=subprocess.STDOUT, env=env)


def _wait_for(log: Path, text: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if text in log.read_text():
            return
        if proc.poll() is not None:
            raise AssertionError(f"the run ended (status {proc.returncode}) before logging {text!r}:\n"
                                 + log.read_text()[-3000:])
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"{text!r} not logged within {timeout} s:\n" + log.read_text()[-3000:])


def _entries(path: Path) -> dict:
    import mindspore as ms

    return {k: v.asnumpy() for k, v in ms.load_checkpoint(str(path)).items() if not isinstance(v, str)}


def _interrupt(proc: subprocess.Popen, log: Path, text: str, signum: int) -> str:
    try:
        _wait_for(log, text, proc)
        proc.send_signal(signum)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    return log.read_text()


def test_stopped_killed_and_stopped_again_then_resumed_matches_an_uninterrupted_run(tmp_path):
    """SIGTERM mid-epoch 1, SIGKILL mid-epoch 2, SIGINT mid-epoch 3, each followed by --resume auto.

    Every resume but the first reads a checkpoint written by a resumed process; the last run ends with
    the weights, optimizer state and EMA of the uninterrupted run, and the same per-epoch records.
    """
    data = make_image_folder(tmp_path / "data", train_per_class=6, val_per_class=2)
    full_out, cut_out = tmp_path / "full", tmp_path / "cut"
    args = _run_args(data, cut_out)
    full = _start(_run_args(data, full_out), tmp_path, tmp_path / "full.log")

    # 1. SIGTERM: the step is finished, a step checkpoint written, one line logged, status 143
    text = _interrupt(_start(args, tmp_path, tmp_path / "cut1.log"), tmp_path / "cut1.log",
                      f"epoch 1/{EPOCHS} step 2/{STEPS} ", signal.SIGTERM)
    stopped = [line for line in text.splitlines() if "stopped by SIGTERM" in line]
    assert len(stopped) == 1, text[-3000:]
    step = int(re.search(r"in epoch 1 after step (\d+) of 6", stopped[0]).group(1))
    ckpt = cut_out / f"epoch_0001_step_{step:06d}.ckpt"
    assert f"checkpoint {ckpt}" in stopped[0] and "--resume auto" in stopped[0]
    assert sorted(p.name for p in cut_out.iterdir()) == ["config.yaml", ckpt.name]  # lock released, no temp files

    # 2. resumed mid-epoch 1, killed (SIGKILL) in epoch 2: its epoch 1 file is the next resume point
    cut2 = _start(args + ["--resume", "auto"], tmp_path, tmp_path / "cut2.log")
    text = _interrupt(cut2, tmp_path / "cut2.log", f"epoch 2/{EPOCHS} step 2/{STEPS} ", signal.SIGKILL)
    assert cut2.returncode == -signal.SIGKILL
    assert f"resuming in epoch 1 after step {step} of {STEPS}" in text
    left = sorted(p.name for p in cut_out.iterdir())
    assert "epoch_0001.ckpt" in left and ckpt.name not in left and ".lock" in left, left  # a stale lock

    # 3. resumed after epoch 1 (the lock of the killed run is taken over), stopped by SIGINT in epoch 3
    cut3 = _start(args + ["--resume", "auto"], tmp_path, tmp_path / "cut3.log")
    text = _interrupt(cut3, tmp_path / "cut3.log", f"epoch 3/{EPOCHS} step 1/{STEPS} ", signal.SIGINT)
    assert cut3.returncode == 130, text[-3000:]
    assert "taking over the lock left by pid" in text and "resuming after epoch 1 at global step 6" in text
    assert len(re.findall(r"stopped by SIGINT in epoch 3 after step \d+ of 6", text)) == 1, text[-3000:]

    # 4. resumed from the step checkpoint written after a resume: runs to the end
    resumed = subprocess.run([sys.executable, str(SCRIPT)] + args + ["--resume", "auto"],
                             cwd=tmp_path, capture_output=True, text=True, timeout=180, env=script_env())
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-3000:]
    assert re.search(r"resuming in epoch 3 after step \d+ of 6", resumed.stderr)
    assert full.wait(timeout=180) == 0, (tmp_path / "full.log").read_text()[-3000:]

    # weights, optimizer moments and step, EMA: the same as the uninterrupted run
    final_full, final_cut = _entries(full_out / "epoch_0003.ckpt"), _entries(cut_out / "epoch_0003.ckpt")
    assert sorted(final_full) == sorted(final_cut)
    assert any(k.startswith("optimizer.adam_m.") for k in final_full) and any(k.startswith("ema.") for k in final_full)
    for name, value in final_full.items():
        np.testing.assert_allclose(final_cut[name], value, rtol=1e-6, atol=1e-7, err_msg=name)
    assert int(final_cut["optimizer.global_step"].reshape(-1)[0]) == EPOCHS * STEPS
    records = [json.loads(line) for line in (cut_out / "metrics.jsonl").read_text().splitlines() if line]
    full_records = [json.loads(line) for line in (full_out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2, 3]  # epoch 2's record of the killed run was dropped
    assert [r["weights_digest"] for r in records] == [r["weights_digest"] for r in full_records]
    for r, f in zip(records, full_records):
        assert r["steps"] == f["steps"] == STEPS and r["global_step"] == f["global_step"]
        np.testing.assert_allclose(r["train_loss"], f["train_loss"], rtol=1e-6)
    assert not [p.name for p in cut_out.iterdir() if "step" in p.name or p.name == ".lock"]


def test_nan_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(tmp_path, capsys):
    """Epoch 1 trains at warmup_lr; epoch 2 jumps to an absurd rate, so its second step's loss is NaN."""
    data = make_image_folder(tmp_path / "data", train_per_class=2, val_per_class=1)
    out = tmp_path / "out"
    args = base_args(data, out, epochs=3, warmup_epochs=2, warmup_lr=1e-4, lr=1e35, min_lr=1e-5,
                     lr_per_step="false", batch_size=4)
    status = load_train_script().main(args)
    err = capsys.readouterr().err
    assert status == 3
    assert "non-finite loss at global step 3" in err and "epoch 2, step 2" in err
    assert f"the last good checkpoint is {out / 'epoch_0001.ckpt'}" in err
    assert sorted(p.name for p in out.iterdir()) == ["best.ckpt", "config.yaml", "epoch_0001.ckpt", "metrics.jsonl"]

    from dvt_ms import create_model
    from dvt_ms.train import CheckpointManager, ModelEMA, create_optimizer

    net = create_model("dvt_deit_small", embed_dim=64, depth=2, num_heads=2, mlp_ratio=2.0, image_size=64,
                       num_classes=4)
    optimizer = create_optimizer(net, lr=1e-3)
    meta = CheckpointManager(out).resume("auto", net, optimizer, ModelEMA(net, 0.9))  # checks every value is finite
    assert meta["epoch"] == 1 and meta["global_step"] == 2
    assert [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [1]


def test_a_second_run_into_a_live_runs_folder_is_refused_at_once(tmp_path):
    data = make_image_folder(tmp_path / "data", train_per_class=2, val_per_class=1)
    out = tmp_path / "out"
    first = _start(base_args(data, out, epochs=50, warmup_epochs=1), tmp_path, tmp_path / "first.log")
    try:
        _wait_for(tmp_path / "first.log", "epoch 1/50 step 1/2 ", first)
        second = subprocess.run([sys.executable, str(SCRIPT)] + base_args(data, out, seed=5, epochs=3),
                                cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert second.returncode == 2
        assert f"error: {out} is in use by another training run (pid {first.pid} on " in second.stderr
        config = (out / "config.yaml").read_text()
        assert "seed: 0" in config and "epochs: 50" in config  # the first run's config, untouched
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=60) == 143
    finally:
        if first.poll() is None:
            first.kill()
    assert "stopped by SIGTERM" in (tmp_path / "first.log").read_text()
    assert not (out / ".lock").exists()  # released on the way out
