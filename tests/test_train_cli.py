"""scripts/train.py: config validation, data checks, a short run's outputs, --pretrained head re-init."""
import json
import logging
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from dvt_ms.config import ConfigError
from dvt_ms.data.dataset import DatasetError

from .script_loader import load_script, script_env

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "train.py"
TINY = "{embed_dim: 64, depth: 2, num_heads: 2, mlp_ratio: 2.0, image_size: 64}"
CLASSES = ("a", "b", "c", "d")


def make_image_folder(root: Path, train_per_class: int = 4, val_per_class: int = 2, size: int = 64,
                      classes=CLASSES, seed: int = 0, flat: bool = False) -> Path:
    """ROOT/{train,val}/<class>/<n>.png of random colour images whose mean depends on the class.

    ``flat``: every image is one colour, so any crop or resize of it is the same image (the random crop
    of the training pipeline then changes nothing).
    """
    rng = np.random.default_rng(seed)
    for split, count in (("train", train_per_class), ("val", val_per_class)):
        for label, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                base = 40 + 50 * label
                if flat:
                    colour = np.clip(base + rng.integers(-20, 21, 3), 0, 255).astype(np.uint8)
                    pixels = np.broadcast_to(colour, (size, size, 3)).copy()
                else:
                    pixels = np.clip(rng.normal(base, 30, (size, size, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i:03d}.png")
    return root


def base_args(data_dir: Path, output_dir: Path, **extra) -> list:
    """A tiny, deterministic training command line (no augmentation, no drop path, one data worker)."""
    args = {"model": "dvt_deit_small", "model_overrides": TINY, "num_classes": "4", "data_dir": str(data_dir),
            "batch_size": "4", "epochs": "2", "warmup_epochs": "1", "cooldown_epochs": "0", "lr": "1e-3",
            "lr_scaling": "none", "num_parallel_workers": "1", "log_interval": "1", "output_dir": str(output_dir),
            "drop_path": "0", "auto_augment": "null", "reprob": "0", "mixup": "0", "cutmix": "0", "hflip": "0",
            "crop_scale": "[1, 1]", "model_ema_decay": "0.9"}
    args.update({k: str(v) for k, v in extra.items()})
    argv = []
    for key, value in args.items():
        argv += [f"--{key}", value]
    return argv


def load_train_script():
    return load_script("train")


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # MindSpore writes kernel files into the working directory


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("images"))


@pytest.fixture(scope="module")
def train_script():
    return load_train_script()


# ------------------------------------------------------------------------------ config validation
def _resolve(argv):
    from dvt_ms.config.training import resolve_train_config

    return resolve_train_config(argv)


def test_unknown_yaml_key_is_named_with_a_suggestion(tmp_path, data_dir):
    config = tmp_path / "bad.yaml"
    config.write_text("model: dvt_deit_small\nwarmup_epoch: 5\n")
    with pytest.raises(ConfigError, match=r"unknown key\(s\) 'warmup_epoch' \(did you mean 'warmup_epochs'\?\)"):
        _resolve(["--config", str(config), "--data_dir", str(data_dir)])


@pytest.mark.parametrize("extra, message", [
    ({"epochs": "0"}, "--epochs: must be > 0"),
    ({"lr": "fast"}, "--lr: expected a number, got 'fast'"),
    ({"mixup_prob": "1.5"}, r"--mixup_prob: must be in \[0, 1\]"),
    ({"crop_scale": "[0.5]"}, "--crop_scale: must be"),
    ({"exit_weights": "[1, 1]"}, "--exit_weights: 2 weight.* dvt_deit_small has 3 exit"),
    ({"amp_level": "O2"}, r"--amp_level, precision \(default\): precision fp32 with amp_level O2 on CPU: mixed "
                          "precision on CPU is bfloat16; set precision bf16"),
    ({"precision": "bf16", "amp_level": "O0"}, "--amp_level, --precision: precision bf16 with amp_level O0: O0 "
                                                "trains in float32"),
    ({"precision": "fp16"}, "float16 is not supported with the fused CPU kernels"),
    ({"warmup_epochs": "5"}, r"--warmup_epochs \(5\) must not exceed --epochs \(2\)"),
    ({"resume": "nowhere.ckpt"}, "--resume: nowhere.ckpt: no such checkpoint file"),
    ({"pretrained": "missing.pth"}, "--pretrained: missing.pth: no such file"),
    ({"auto_augment": "rand-x9"}, "auto_augment"),
    ({"model_overrides": "{num_classes: 10}"}, "--num_classes is 4 but --model_overrides.num_classes is 10; give"),
    ({"model_overrides": "{drop_path_rate: 0.2}"}, "drop_path key"),
    ({"opt": "lamb"}, "--opt: 'lamb' is not one of adamw"),
])
def test_bad_values_are_named(tmp_path, data_dir, extra, message):
    with pytest.raises(ConfigError, match=message):
        _resolve(base_args(data_dir, tmp_path / "out", **extra))


def test_data_dir_is_required(tmp_path):
    with pytest.raises(ConfigError, match="missing required key 'data_dir'"):
        _resolve(["--model", "deit_small"])


def test_cli_reports_errors_in_one_line(tmp_path, data_dir):
    result = subprocess.run([sys.executable, str(SCRIPT)] + base_args(data_dir, tmp_path / "out", epochs="-1"),
                            cwd=tmp_path, capture_output=True, text=True, timeout=120, env=script_env())
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == "error: --epochs: must be > 0, got -1"
    assert not (tmp_path / "out").exists()  # nothing was started


def test_shipped_configs_resolve_for_training(data_dir):
    for path in sorted((ROOT / "configs").glob("*.yaml")):
        config = _resolve(["--config", str(path), "--data_dir", str(data_dir)])
        text = path.read_text()
        assert "global batch" in text and "lr_batch_size" in text, path  # each states its batch and rule
        assert config.lr_scaling in ("linear", "none")


# ---------------------------------------------------------------------------------- data checks
def _setup(argv):
    from dvt_ms.train.loop import Trainer

    trainer = Trainer(_resolve(argv))
    trainer.setup()
    return trainer


def test_missing_val_split_is_an_error_before_training(tmp_path):
    root = make_image_folder(tmp_path / "data", 2, 1)
    for path in sorted((root / "val").rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    (root / "val").rmdir()
    with pytest.raises(DatasetError, match=r"missing split folder 'val' \(folders in .*: train\)"):
        _setup(base_args(root, tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_num_classes_mismatch_and_empty_class_are_errors(tmp_path, data_dir):
    with pytest.raises(DatasetError, match="has 4 class folders but the model has num_classes=5"):
        _setup(base_args(data_dir, tmp_path / "out", num_classes=5))
    root = make_image_folder(tmp_path / "data", 2, 1)
    (root / "train" / "e").mkdir()
    with pytest.raises(DatasetError, match=r"1 of 5 class folder\(s\) hold no images.*train/e"):
        _setup(base_args(root, tmp_path / "out", num_classes=5))


def test_batch_larger_than_the_shard_is_an_error(tmp_path, data_dir):
    with pytest.raises(ValueError, match="fewer than batch_size=64"):
        _setup(base_args(data_dir, tmp_path / "out", batch_size=64))


# ------------------------------------------------------------------------------------ a short run
@pytest.fixture(scope="module")
def short_run(tmp_path_factory, train_script):
    """Two epochs with one corrupt train image and one corrupt val image; keep 1 checkpoint + best."""
    work = tmp_path_factory.mktemp("run")
    data = make_image_folder(work / "data", 4, 2)
    (data / "train" / "b" / "zz_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really an image")
    (data / "val" / "c" / "zz_broken.png").write_bytes(b"garbage")
    before = sorted(p.relative_to(data).as_posix() for p in data.rglob("*"))
    out = work / "out"
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(work)
        handler, root = _Capture(), logging.getLogger()
        level = root.level
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        try:
            status = train_script.main(base_args(data, out, keep_checkpoints=1, plot=str(out / "curves.png"),
                                                 seed=3))
        finally:
            root.removeHandler(handler)
            root.setLevel(level)
    return dict(status=status, out=out, data=data, before=before, logs=handler.lines, work=work)


class _Capture(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def test_short_run_writes_checkpoints_metrics_and_config(short_run, capsys):
    out = short_run["out"]
    assert short_run["status"] == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["best.ckpt", "config.yaml", "curves.png", "epoch_0002.ckpt", "final_weights.ckpt",
                     "metrics.jsonl"]  # keep_checkpoints 1: epoch 1 was pruned
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    for r in records:
        assert len(r["train_loss"]) == 3 and len(r["val_top1"]) == 3 and r["val_top5"] == [None] * 3
        assert r["skipped_images"] == 1 and r["val_skipped"] == 1 and r["val_images"] == 8
        assert r["steps"] == 4 and r["global_step"] == 4 * r["epoch"] and len(r["ema_val_top1"]) == 3
    # the resolved config reads back as the same config
    from dvt_ms.train.checkpoints import CheckpointManager

    saved = yaml.safe_load((out / "config.yaml").read_text())
    again = _resolve(["--config", str(out / "config.yaml")])
    assert again.to_dict() == saved and saved["keep_checkpoints"] == 1 and saved["seed"] == 3
    # best.ckpt: the epoch with the best last-exit top-1
    best = CheckpointManager.read_metadata(out / "best.ckpt")
    tops = [r["val_top1"][-1] for r in records]
    assert best["best_epoch"] == 1 + int(np.argmax(tops)) and best["metric"] == pytest.approx(max(tops))
    assert best["config"]["seed"] == 3 and best["train_state"]["steps_per_epoch"] == 4


def test_short_run_logs_progress_skips_and_results(short_run):
    logs = "\n".join(short_run["logs"])
    assert "epoch 1/2 step 1/4 (global 1) | loss" in logs and "first step (compiling) | ETA epoch" in logs
    assert re.search(r"epoch 1/2 step 2/4 \(global 2\) \| loss [\d.]+ \(exits [\d.]+ [\d.]+ [\d.]+\) "
                     r"\| lr [\d.e+-]+ \| [\d.]+ img/s \| ETA epoch \d:\d\d:\d\d, run \d:\d\d:\d\d", logs)
    assert "epoch 2/2 done in" in logs and "1 unreadable train image(s) skipped" in logs
    assert "zz_broken.png" in logs


def test_short_run_leaves_no_stray_files(short_run):
    data = short_run["data"]
    assert sorted(p.relative_to(data).as_posix() for p in data.rglob("*")) == short_run["before"]
    assert not list(short_run["work"].rglob("abnormal_image*"))


def _snapshot(folder: Path) -> dict:
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns, p.stat().st_mode) for p in folder.iterdir()}


def test_rerun_refuses_to_overwrite_and_resume_auto_finds_nothing_left(short_run, train_script, monkeypatch, capsys):
    monkeypatch.chdir(short_run["work"])
    args = base_args(short_run["data"], short_run["out"], keep_checkpoints=1, seed=3)
    before = _snapshot(short_run["out"])
    with pytest.raises(ValueError, match=r"already holds a run's checkpoint \(epoch_0002.ckpt\).*--resume auto"):
        train_script.main(args)
    assert _snapshot(short_run["out"]) == before  # nothing touched
    # a resume the checkpoint does not fit: refused, nothing written (config.yaml included)
    other = base_args(short_run["data"], short_run["out"], keep_checkpoints=1, seed=4,
                      model_overrides="{embed_dim: 64, depth: 1, num_heads: 2, mlp_ratio: 2.0, image_size: 64}")
    assert train_script.main(other + ["--resume", "auto"]) == 2
    assert "does not match DynamicVisionTransformer" in capsys.readouterr().err
    assert _snapshot(short_run["out"]) == before
    capsys.readouterr()
    assert train_script.main(args + ["--resume", "auto", "--epochs", "2"]) == 0  # a no-op resume: nothing written
    assert "final validation of dvt_deit_small (8 images" in capsys.readouterr().out
    assert _snapshot(short_run["out"]) == before
    records = [json.loads(line) for line in (short_run["out"] / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]


def test_save_interval_steps_writes_step_checkpoints_inside_an_epoch(tmp_path, data_dir, train_script, caplog):
    out = tmp_path / "out"
    with caplog.at_level(logging.INFO):
        assert train_script.main(base_args(data_dir, out, epochs=1, save_interval_steps=2)) == 0
    saved = re.findall(r"saved (\S+)", caplog.text)
    assert [Path(p).name for p in saved] == ["epoch_0001_step_000002.ckpt", "epoch_0001.ckpt"]
    assert "removed step checkpoint" in caplog.text  # superseded by the epoch file
    assert sorted(p.name for p in out.iterdir()) == ["best.ckpt", "config.yaml", "epoch_0001.ckpt",
                                                     "final_weights.ckpt", "metrics.jsonl"]


def test_metrics_drop_after_keeps_the_resumed_epochs(tmp_path):
    from dvt_ms.train import MetricsLogger, read_metrics

    log = MetricsLogger(tmp_path)
    for epoch in (1, 2, 3, 2):
        log.log({"epoch": epoch, "lr": 0.1 * epoch})
    log.drop_after(2)
    assert [(r["epoch"], r["lr"]) for r in read_metrics(log.path)] == [(1, 0.1), (2, 0.2)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.jsonl"]


def test_final_weights_are_readable_by_the_loader(short_run):
    from dvt_ms import create_model, load_checkpoint

    net = create_model("dvt_deit_small", embed_dim=64, depth=2, num_heads=2, mlp_ratio=2.0, image_size=64,
                       num_classes=4)
    meta = load_checkpoint(net, short_run["out"] / "final_weights.ckpt")
    assert meta["model"] == "dvt_deit_small" and meta["epoch"] == 2 and meta["model_overrides"]["num_classes"] == 4
    # issue 11: the data config (with the training class folders) is stored for eval.py/infer.py/export.py
    classes = sorted(p.name for p in (short_run["data"] / "train").iterdir())
    assert meta["data_config"]["class_names"] == classes and meta["data_config"]["input_size"] == 64
    from dvt_ms.checkpoint import read_checkpoint

    _, epoch_meta = read_checkpoint(sorted(short_run["out"].glob("epoch_*.ckpt"))[-1])
    assert epoch_meta["data_config"] == meta["data_config"]
    # and the run said once which model it trained (issue 11, point 2)
    described = [line for line in short_run["logs"] if line.startswith("model dvt_deit_small: ")]
    assert len(described) == 1 and "embed_dim 64 (default 384)" in described[0], described
    assert re.search(r"; [\d,]+ parameters; precision fp32, ", described[0]), described  # and what it runs on


# ---------------------------------------------------------------------------------- --pretrained
def _tiny(num_classes: int):
    from dvt_ms import create_model

    return create_model("dvt_deit_small", embed_dim=64, depth=2, num_heads=2, mlp_ratio=2.0, image_size=64,
                        num_classes=num_classes)


def test_pretrained_with_other_classes_reinitializes_the_heads(tmp_path, data_dir, caplog):
    import mindspore as ms

    from dvt_ms.checkpoint import save_checkpoint

    ms.set_seed(123)
    source = _tiny(10)
    save_checkpoint(source, tmp_path / "ten_classes.ckpt", {"model": "dvt_deit_small"})
    weights = {p.name: p.asnumpy() for p in source.get_parameters()}
    with caplog.at_level(logging.WARNING):
        trainer = _setup(base_args(data_dir, tmp_path / "out", pretrained=tmp_path / "ten_classes.ckpt"))
    heads = [f"stages.{k}.head.{w}" for k in range(3) for w in ("weight", "bias")]
    warning = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert "re-initialized" in warning and "10 classes in the checkpoint but the model has 4" in warning
    assert all(name in warning for name in heads)
    for param in trainer.net.get_parameters():
        if param.name in heads:
            assert param.shape[0] == 4
        else:
            np.testing.assert_array_equal(param.asnumpy(), weights[param.name], err_msg=param.name)


def test_pretrained_official_checkpoint(tmp_path, data_dir, reference_dir, caplog):
    path = reference_dir / "dvt_deit_tiny.pth.tar"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    from dvt_ms.checkpoint import read_checkpoint
    from dvt_ms.train.weights_init import load_pretrained

    from dvt_ms import create_model

    net = create_model("dvt_deit_small", embed_dim=64, depth=2, num_heads=2, mlp_ratio=2.0, num_classes=4)
    with caplog.at_level(logging.WARNING):
        load_pretrained(net, str(path))
    assert "10 classes in the checkpoint but the model has 4" in caplog.text
    weights, _ = read_checkpoint(path)
    params = {p.name: p for p in net.get_parameters()}
    np.testing.assert_array_equal(params["stages.2.blocks.1.mlp.fc1.weight"].asnumpy(),
                                  weights["stages.2.blocks.1.mlp.fc1.weight"])


# ------------------------------------------------------------------------------------ EViT schedule
def test_evit_keep_rate_schedule_is_quantized_per_step(tmp_path, data_dir):
    evit = "{depth: 4, drop_loc: [1, 2], keep_rate: 0.5, image_size: 64, embed_dim: 64, num_heads: 2}"
    args = base_args(data_dir, tmp_path / "out", model="evit_deit_small", model_overrides=evit, epochs=4,
                     shrink_start_epoch=1, shrink_epochs=2)
    trainer = _setup(args)
    assert trainer.steps_per_epoch == 4 and trainer.num_image_tokens == 16 and trainer.keep_target == 0.5
    # 1 until epoch 1, cosine to 0.5 at epoch 3; rates snap to (kept tokens - 0.5) / 16
    assert [trainer.keep_rate_at(s) for s in (0, 3, 4)] == [1.0, 1.0, 1.0]
    assert trainer.keep_rate_at(8) == (12 - 0.5) / 16  # epoch 2: rate 0.75 keeps 12 of 16 tokens
    assert trainer.keep_rate_at(12) == trainer.keep_rate_at(15) == (8 - 0.5) / 16
    assert _setup(base_args(data_dir, tmp_path / "o2", model="evit_deit_small", model_overrides=evit,
                            keep_rate_schedule="false")).keep_rate_at(8) is None
    per_layer = "{depth: 4, keep_rate: [1.0, 0.7, 0.5, 1.0], image_size: 64, embed_dim: 64, num_heads: 2}"
    with pytest.raises(ConfigError, match=r"keep_rate_schedule needs one keep rate .*\[0.5, 0.7\]"):
        _setup(base_args(data_dir, tmp_path / "o3", model="evit_deit_small", model_overrides=per_layer))


@pytest.mark.parametrize("level", ["O2", "O3"])
def test_float16_training_on_mindspores_ops(tmp_path, data_dir, train_script, level, caplog):
    """``--cpu_kernels off --precision fp16 --amp_level O2|O3``: the GPU/Ascend float16 training graph, on CPU,
    trains a few steps under dynamic loss scaling, validates on float32 logits and writes finite weights
    (every model and level is stepped in test_accelerator_graph.py; DeiT keeps this one quick)."""
    import mindspore as ms

    out = tmp_path / "out"
    tiny = "{embed_dim: 32, depth: 1, num_heads: 2, mlp_ratio: 2.0, image_size: 64}"
    with caplog.at_level(logging.INFO):
        assert train_script.main(base_args(data_dir, out, model="deit_small", model_overrides=tiny, epochs=1,
                                           cpu_kernels="off",
                                           precision="fp16", amp_level=level, model_ema="false")) == 0
    described = f"fp16 mixed precision, amp_level {level}: mindspore.amp.auto_mixed_precision {level} in float16"
    assert described in caplog.text
    assert "checks the GPU/Ascend graph" in caplog.text and "DynamicLossScaler" in caplog.text
    assert "graphs compiled: 1 training step graph(s)" in caplog.text
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["steps"] == 4 and all(np.isfinite(records[-1]["val_top1"]))
    weights = [v.asnumpy() for v in ms.load_checkpoint(str(out / "final_weights.ckpt")).values()
               if isinstance(v, ms.Tensor)]
    assert len(weights) > 10 and all(np.isfinite(w).all() for w in weights)
    assert {w.dtype for w in weights} == {np.dtype(np.float32)}  # float32 master weights
