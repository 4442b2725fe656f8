"""Tests of evaluation: data checks and pipeline, dvt_ms.evaluate, and scripts/eval.py end to end.

One tiny ImageFolder (with a corrupt and a truncated image) and one tiny DVT checkpoint are shared by the
module. The CLI runs as subprocesses in the three data modes at once; expectations come from running the
network here on independently preprocessed arrays.
"""
import io
import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dvt_ms import create_model
from dvt_ms.budget import budget_curve
from dvt_ms.checkpoint import save_checkpoint
from dvt_ms.config import ConfigError
from dvt_ms.config.sources import COMMAND_LINE
from dvt_ms.data import DatasetError, check_image_folder, create_eval_dataset
from dvt_ms.evaluate import (
    fit_subset_indices,
    saved_results,
    stored_thresholds,
    topk_accuracy,
)
from dvt_ms.flops import count
from dvt_ms.models import model_defaults
from dvt_ms.run.model import reconcile_model

from .script_loader import load_script, script_env

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "eval.py"
OVERRIDES = {"embed_dim": 32, "depth": 1, "num_heads": 2, "mlp_ratio": 2.0, "num_classes": 6}
NUM_CLASSES = 6
BATCH = 4
FIT_SAMPLES, FIT_SEED = 10, 3
STORED_FLOPS = [0.25, 0.5, 1.25]
MEAN = np.array([0.485, 0.456, 0.406]) * 255
STD = np.array([0.229, 0.224, 0.225]) * 255


# --------------------------------------------------------------------------------------------------
# shared data, model and runs
# --------------------------------------------------------------------------------------------------
def _save_image(path: Path, rng, height: int, width: int, gray: bool = False) -> None:
    pixels = rng.integers(0, 256, (height, width) if gray else (height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def make_image_folder(root: Path, per_class, rng, classes: int = NUM_CLASSES) -> None:
    """``root/<split>/class_<c>/img<i>.(jpg|png)``: 64x64 RGB mostly, some PNG, one gray, one 48x80."""
    for split, count_per_class in per_class.items():
        for c in range(classes):
            folder = root / split / f"class_{c}"
            folder.mkdir(parents=True)
            for i in range(count_per_class):
                if i == 1:
                    _save_image(folder / f"img{i}.png", rng, 64, 64, gray=(c == 2))
                else:
                    _save_image(folder / f"img{i}.jpg", rng, 48 if c == 3 else 64, 80 if c == 3 else 64)


def expected_files(split_dir: Path):
    """Readable images in ImageFolder order (sorted classes, sorted names), found independently."""
    bad = {"broken.jpg", "cut.jpg"}
    classes = sorted(p.name for p in split_dir.iterdir() if p.is_dir())
    return [(f, label) for label, c in enumerate(classes) for f in sorted((split_dir / c).iterdir(),
                                                                           key=lambda p: p.name)
            if f.name not in bad]


def preprocess(path: Path) -> np.ndarray:
    """The evaluation transform, spelled out: PIL decode, MindData resize 256 bicubic, crop 224, normalize."""
    from mindspore.dataset import vision
    from mindspore.dataset.vision import Inter

    image = np.asarray(Image.open(path).convert("RGB"))
    image = vision.Resize(256, Inter.BICUBIC)(image)
    image = vision.CenterCrop(224)(image)
    return ((image.astype(np.float64) - MEAN) / STD).astype(np.float32).transpose(2, 0, 1)


def softmax(x):
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def run_net(net, images: np.ndarray) -> np.ndarray:
    import mindspore as ms

    outs = []
    for start in range(0, len(images), BATCH):
        chunk = images[start:start + BATCH]
        padded = np.concatenate([chunk, np.zeros((BATCH - len(chunk),) + chunk.shape[1:], np.float32)])
        outs.append([softmax(o.asnumpy()[:len(chunk)]) for o in net(ms.Tensor(padded))])
    return np.stack([np.concatenate(parts) for parts in zip(*outs)]).astype(np.float32)


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """Workspace: data/{train,val}, with val/class_0/broken.jpg (garbage) and val/class_1/cut.jpg (truncated)."""
    root = tmp_path_factory.mktemp("eval")
    rng = np.random.default_rng(0)
    make_image_folder(root / "data", {"train": 3, "val": 2}, rng)
    (root / "data" / "val" / "class_0" / "broken.jpg").write_bytes(b"this is not an image" * 5)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buffer, "JPEG")
    (root / "data" / "val" / "class_1" / "cut.jpg").write_bytes(buffer.getvalue()[:len(buffer.getvalue()) // 2])
    (root / "cfg.yaml").write_text(
        "model: dvt_deit_small\n"
        f"model_overrides: {json.dumps(OVERRIDES)}\n"
        f"data_dir: {root / 'data'}\nbatch_size: {BATCH}\nnum_parallel_workers: 1\n")
    return root


@pytest.fixture(scope="module")
def reference(ws):
    """The tiny DVT, its checkpoints, and its softmax outputs on independently preprocessed images."""
    import mindspore as ms

    net = create_model("dvt_deit_small", **OVERRIDES)
    rng = np.random.default_rng(1)
    for stage in net.stages:  # peaky, varied outputs instead of near-uniform ones
        stage.head.weight.set_data(ms.Tensor(rng.normal(0, 0.6, stage.head.weight.shape).astype(np.float32)))
    net.set_train(False)
    out = {"net": net}
    for split in ("train", "val"):
        files = expected_files(ws / "data" / split)
        out[f"{split}_files"] = [f for f, _ in files]
        out[f"{split}_targets"] = np.array([label for _, label in files])
        out[f"{split}_x"] = np.stack([preprocess(f) for f, _ in files])
        out[f"{split}_probs"] = run_net(net, out[f"{split}_x"])
    out["gmacs"] = [m / 1e9 for m in count(net)]
    thresholds = budget_curve(out["train_probs"], out["train_targets"], out["val_probs"],
                              out["val_targets"], out["gmacs"])["thresholds"]
    out["metadata"] = {
        "model": "dvt_deit_small", "model_overrides": OVERRIDES, "flops": STORED_FLOPS,
        "anytime_classification": [50.0, 60.0, 70.0], "dynamic_threshold": thresholds,
        "budgeted_batch_classification": [list(np.linspace(0.3, 1.2, 59)), list(np.linspace(40, 70, 59))],
    }
    out["ckpt"] = save_checkpoint(net, ws / "dvt.ckpt", out["metadata"])
    out["bare_ckpt"] = save_checkpoint(net, ws / "bare.ckpt", {"model": "dvt_deit_small",
                                                                "model_overrides": OVERRIDES})
    return out


@pytest.fixture(scope="module")
def runs(ws, reference):
    """The CLI in each mode, launched together; {mode: (returncode, stdout, stderr, results)}."""
    base = [sys.executable, str(SCRIPT), "--config", str(ws / "cfg.yaml"), "--checkpoint", str(reference["ckpt"])]
    commands = {
        "saved-thresholds": ["--mode", "saved-thresholds", "--device_target", "auto", "--plot", "curve.png"],
        "gpu": ["--mode", "fit", "--device_target", "GPU"],  # absent here: an error before any work
        "fit": ["--mode", "fit", "--fit_samples", str(FIT_SAMPLES), "--seed", str(FIT_SEED)],
        "saved": ["--mode", "saved", "--data_dir", "null"],
    }
    env = script_env(GLOG_v="3")
    procs = {}
    for mode, extra in commands.items():
        procs[mode] = subprocess.Popen(base + extra + ["--output", f"{mode}.json"], cwd=ws, env=env,
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out = {}
    for mode, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=300)
        path = ws / f"{mode}.json"
        out[mode] = (proc.returncode, stdout, stderr, json.loads(path.read_text()) if path.exists() else None)
    return out


def load_eval_script():
    return load_script("eval")


# --------------------------------------------------------------------------------------------------
# the CLI, end to end
# --------------------------------------------------------------------------------------------------
def _ok(run):
    returncode, stdout, stderr, results = run
    plot_missing = "pip install matplotlib" in stderr
    assert returncode == (1 if plot_missing else 0), stderr[-3000:]
    assert results is not None
    return results


def test_anytime_results_match_independent_computation(runs, reference):
    results = _ok(runs["saved-thresholds"])
    probs, targets = reference["val_probs"], reference["val_targets"]
    assert [row["exit"] for row in results["anytime"]] == [1, 2, 3]
    assert [row["tokens"] for row in results["anytime"]] == ["7x7", "10x10", "14x14"]
    for k, row in enumerate(results["anytime"]):
        top1 = np.mean(probs[k].argmax(axis=1) == targets) * 100
        top5 = np.mean([t in np.argsort(-p)[:5] for p, t in zip(probs[k], targets)]) * 100
        assert row["top1"] == pytest.approx(top1) and row["top5"] == pytest.approx(top5)
        assert row["gmacs"] == pytest.approx(reference["gmacs"][k])
    assert results["flops"]["gmacs_per_exit"] == pytest.approx(reference["gmacs"])
    assert results["flops"]["stored_per_exit"] == STORED_FLOPS
    assert "1e9" in results["flops"]["gmacs_note"] and "as stored" in results["flops"]["stored_note"]
    assert results["num_exits"] == 3 and results["model"] == "dvt_deit_small"
    assert results["config"]["batch_size"] == BATCH and results["checkpoint"].endswith("dvt.ckpt")


def test_unreadable_images_are_skipped_and_named(runs):
    data = _ok(runs["saved-thresholds"])["data"]
    assert (data["num_files"], data["num_evaluated"], data["skipped"]) == (14, 12, 2)
    assert sorted(Path(f).name for f in data["skipped_files"]) == ["broken.jpg", "cut.jpg"]
    assert "skipped 2 unreadable image(s)" in runs["saved-thresholds"][2]


def test_auto_device_is_logged_and_an_absent_gpu_is_an_error(runs):
    returncode, _, stderr, results = runs["saved-thresholds"]
    assert results["device"] == {"requested": "auto", "used": "CPU"}
    assert "device_target auto: running on CPU (checked Ascend, GPU, CPU in that order)" in stderr
    returncode, _, stderr, results = runs["gpu"]
    assert (returncode, results) == (2, None), stderr[-2000:]
    assert "error: device_target GPU was requested, but MindSpore" in stderr
    assert "CUDA 11.1 or 11.6 with cuDNN 8" in stderr and "Traceback" not in stderr
    assert runs["fit"][3]["device"] == {"requested": "CPU", "used": "CPU"}


def test_saved_thresholds_curve(runs, reference):
    points = _ok(runs["saved-thresholds"])["budget"]
    stored = reference["metadata"]["dynamic_threshold"]
    expected = budget_curve(None, None, reference["val_probs"], reference["val_targets"], reference["gmacs"],
                            thresholds=stored)
    assert [pt["p"] for pt in points] == list(range(1, 60))
    np.testing.assert_array_equal([pt["thresholds"] for pt in points], stored)
    np.testing.assert_allclose([pt["accuracy"] for pt in points], expected["accuracy"])
    np.testing.assert_allclose([pt["gmacs"] for pt in points], expected["flops"], rtol=1e-6)
    counts = np.array([pt["exit_counts"] for pt in points])
    assert (counts.sum(axis=1) == 12).all()  # the last threshold is -1e8: every image exits
    stored_cost = counts @ np.array(STORED_FLOPS) / 12
    np.testing.assert_allclose([pt["flops_stored"] for pt in points], stored_cost)
    assert len(set(map(tuple, counts))) > 2  # the thresholds really route images to different exits


def test_fit_curve(runs, reference):
    results = _ok(runs["fit"])
    indices = fit_subset_indices(len(reference["train_files"]), FIT_SAMPLES, FIT_SEED)
    expected = budget_curve(reference["train_probs"][:, indices], reference["train_targets"][indices],
                            reference["val_probs"], reference["val_targets"], reference["gmacs"])
    points = results["budget"]
    np.testing.assert_allclose([pt["thresholds"] for pt in points], expected["thresholds"], rtol=1e-5)
    np.testing.assert_allclose([pt["accuracy"] for pt in points], expected["accuracy"])
    np.testing.assert_allclose([pt["gmacs"] for pt in points], expected["flops"], rtol=1e-6)
    fit = results["fit_data"]
    assert (fit["num_files"], fit["num_evaluated"], fit["skipped"], fit["seed"]) == (FIT_SAMPLES, FIT_SAMPLES, 0, 3)
    assert results["anytime"] == _ok(runs["saved-thresholds"])["anytime"]


def test_saved_mode_prints_stored_results(runs, reference):
    results = _ok(runs["saved"])
    meta = reference["metadata"]
    assert results["saved"]["flops"] == STORED_FLOPS
    assert results["saved"]["anytime_classification"] == meta["anytime_classification"]
    np.testing.assert_allclose(results["saved"]["budgeted_batch_classification"]["accuracy"],
                               meta["budgeted_batch_classification"][1])
    assert results["device"] is None and "anytime" not in results
    stdout = runs["saved"][1]
    assert "results stored in" in stdout and "70.00" in stdout


def test_plot_or_clear_message(runs, ws):
    from dvt_ms.plots import matplotlib_available

    returncode, _, stderr, results = runs["saved-thresholds"]
    if matplotlib_available():
        assert returncode == 0
        with Image.open(ws / "curve.png") as img:
            assert img.format == "PNG" and img.size[0] > 300
    else:
        assert returncode == 1 and results is not None
        assert "matplotlib is not installed" in stderr and "pip install matplotlib" in stderr


def test_cli_error_is_one_line_with_status_2(ws, tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text((ws / "cfg.yaml").read_text() + "bogus_key: 1\n")
    proc = subprocess.run([sys.executable, str(SCRIPT), "--config", str(config), "--checkpoint", "x.ckpt"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env=script_env(GLOG_v="3"))
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "bogus_key" in lines[0] and str(config) in lines[0]
    assert "Traceback" not in proc.stderr


# --------------------------------------------------------------------------------------------------
# the CLI in-process: error cases (no model run needed)
# --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def eval_main():
    return load_eval_script().main


def _args(ws, reference, *extra, ckpt=None):
    return ["--config", str(ws / "cfg.yaml"), "--checkpoint", str(ckpt or reference["ckpt"]), *extra]


def test_error_missing_val_split(ws, reference, eval_main, tmp_path):
    make_image_folder(tmp_path / "d", {"train": 1}, np.random.default_rng(2))
    with pytest.raises(DatasetError, match=r"missing split folder 'val' \(folders in .*: train\)"):
        eval_main(_args(ws, reference, "--data_dir", str(tmp_path / "d")))


def test_error_empty_class_folder(ws, reference, eval_main, tmp_path):
    make_image_folder(tmp_path / "d", {"val": 1}, np.random.default_rng(2))
    for f in (tmp_path / "d" / "val" / "class_3").iterdir():
        f.unlink()
    (tmp_path / "d" / "val" / "class_3" / "notes.txt").write_text("not an image")
    with pytest.raises(DatasetError) as info:
        eval_main(_args(ws, reference, "--data_dir", str(tmp_path / "d")))
    assert "1 of 6 class folder(s) hold no images" in str(info.value)
    assert str(tmp_path / "d" / "val" / "class_3") in str(info.value)


def test_error_num_classes_mismatch(ws, reference, eval_main, tmp_path):
    make_image_folder(tmp_path / "d", {"val": 1}, np.random.default_rng(2), classes=5)
    with pytest.raises(DatasetError, match="has 5 class folders but the model has num_classes=6"):
        eval_main(_args(ws, reference, "--data_dir", str(tmp_path / "d")))


def test_error_unknown_key_and_bad_value(ws, reference, eval_main, tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text((ws / "cfg.yaml").read_text() + "fit_sample: 10\n")
    with pytest.raises(ConfigError, match=r"unknown key\(s\) 'fit_sample' \(did you mean 'fit_samples'\?\)"):
        eval_main(["--config", str(config), "--checkpoint", str(reference["ckpt"])])
    with pytest.raises(ConfigError, match="--batch_size: must be > 0, got 0"):
        eval_main(_args(ws, reference, "--batch_size", "0"))
    with pytest.raises(ConfigError, match="--device_target: 'TPU' is not one of"):
        eval_main(_args(ws, reference, "--device_target", "TPU"))
    with pytest.raises(ConfigError, match="needs data: pass --data_dir"):
        eval_main(_args(ws, reference, "--data_dir", "null"))
    with pytest.raises(ConfigError, match="missing required key 'checkpoint'"):
        eval_main(["--config", str(ws / "cfg.yaml")])


def test_error_saved_modes_without_stored_results(ws, reference, eval_main):
    with pytest.raises(ValueError, match="holds no stored results: missing flops, anytime_classification, "
                                         "budgeted_batch_classification"):
        eval_main(_args(ws, reference, "--mode", "saved", ckpt=reference["bare_ckpt"]))
    with pytest.raises(ValueError, match="holds no 'dynamic_threshold'.*--mode fit"):
        eval_main(_args(ws, reference, "--mode", "saved-thresholds", ckpt=reference["bare_ckpt"]))


def test_error_checkpoint_for_another_architecture(ws, reference, eval_main):
    # qk_scale keeps every parameter shape: only the recorded overrides reveal the difference
    overrides = json.dumps({**OVERRIDES, "qk_scale": 0.5})
    with pytest.raises(ValueError, match=r"^--model_overrides.qk_scale is 0.5 but \S*dvt.ckpt was written with no "
                                         r"qk_scale \(default None\)$"):
        eval_main(_args(ws, reference, "--model_overrides", overrides))


def test_plot_without_matplotlib_still_writes_results(monkeypatch, tmp_path, caplog):
    from dvt_ms import plots

    for name in ("matplotlib", "matplotlib.figure", "matplotlib.backends", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, name, None)
    assert not plots.matplotlib_available()
    with pytest.raises(plots.PlotUnavailable, match="pip install matplotlib"):
        plots.plot_budget_curve(tmp_path / "c.png", [1.0], [50.0])
    script = load_eval_script()
    results = {"mode": "fit", "model": "m", "data": {"num_evaluated": 1},
               "anytime": [{"exit": 1, "tokens": "7x7", "gmacs": 1.0, "top1": 50.0}], "budget": []}
    with caplog.at_level(logging.ERROR):
        assert script._plot(str(tmp_path / "c.png"), results) is False
    assert "pip install matplotlib" in caplog.text and not (tmp_path / "c.png").exists()


# --------------------------------------------------------------------------------------------------
# the data pipeline
# --------------------------------------------------------------------------------------------------
def _read_all(data):
    images, labels = zip(*list(data))
    return np.concatenate(images), np.concatenate(labels)


def test_eval_dataset_matches_independent_preprocessing(ws, reference):
    data = create_eval_dataset(ws / "data" / "val", batch_size=5, num_classes=NUM_CLASSES, num_parallel_workers=2)
    images, labels = _read_all(data)
    np.testing.assert_array_equal(labels, reference["val_targets"])
    np.testing.assert_allclose(images, reference["val_x"], atol=1e-5)
    assert data.skipped == 2 and data.num_files == 14
    assert sorted(Path(f).name for f in data.skipped_files) == ["broken.jpg", "cut.jpg"]
    assert not list(ws.glob("abnormal_image*")) and not list(Path.cwd().glob("abnormal_image*"))


def test_shards_and_subsets(ws, reference):
    parts = [create_eval_dataset(ws / "data" / "val", 3, num_shards=3, shard_id=k) for k in range(3)]
    read = [_read_all(p) for p in parts]
    assert sum(len(labels) for _, labels in read) == 12  # MindData's wrap-around padding is dropped
    assert sum(p.skipped for p in parts) == 2
    order = np.argsort([lab for _, labels in read for lab in labels], kind="stable")
    np.testing.assert_allclose(np.concatenate([x for x, _ in read])[order][0], reference["val_x"][0], atol=1e-5)
    subset = create_eval_dataset(ws / "data" / "train", 4, indices=[16, 2, 9])
    images, labels = _read_all(subset)
    np.testing.assert_allclose(images, reference["train_x"][[16, 2, 9]], atol=1e-5)
    np.testing.assert_array_equal(labels, reference["train_targets"][[16, 2, 9]])
    with pytest.raises(ValueError, match="out of range"):
        create_eval_dataset(ws / "data" / "train", 4, indices=[18])


def test_check_image_folder_errors(tmp_path):
    with pytest.raises(DatasetError, match="data folder does not exist"):
        check_image_folder(tmp_path / "none", "val")
    (tmp_path / "val").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "val" / "loose.png")
    with pytest.raises(DatasetError, match="no class folders .* holds 1 image"):
        check_image_folder(tmp_path, "val")
    for name in ("b", "a", ".hidden"):
        (tmp_path / "val" / name).mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "val" / "a" / "x.JPG")
    with pytest.raises(DatasetError, match=r"1 of 2 class folder\(s\) hold no images .*val/b"):
        check_image_folder(tmp_path, "val")
    Image.new("RGB", (8, 8)).save(tmp_path / "val" / "b" / "y.png")
    info = check_image_folder(tmp_path, "val", num_classes=2)
    assert info.classes == ("a", "b") and info.labels == (0, 1) and info.extensions == (".JPG", ".png")


# --------------------------------------------------------------------------------------------------
# dvt_ms.evaluate helpers
# --------------------------------------------------------------------------------------------------
def test_topk_accuracy_counts_ties_by_class_index():
    probs = np.array([[[0.4, 0.4, 0.2], [0.1, 0.3, 0.6], [0.5, 0.25, 0.25]]], dtype=np.float32)
    targets = np.array([1, 2, 2])
    np.testing.assert_allclose(topk_accuracy(probs, targets, 1), [100 / 3])  # argmax ties go to class 0
    # sample 3: class 2 ties with class 1 and ranks after it, so it is third
    np.testing.assert_allclose(topk_accuracy(probs, targets, 2), [200 / 3])
    np.testing.assert_allclose(topk_accuracy(probs, targets, 3), [100.0])
    with pytest.raises(ValueError, match="k must be in"):
        topk_accuracy(probs, targets, 4)


def test_fit_subset_is_seeded_and_without_replacement():
    a = fit_subset_indices(1000, 100, 5)
    assert len(set(a.tolist())) == 100 and (np.diff(a) > 0).all()
    np.testing.assert_array_equal(a, fit_subset_indices(1000, 100, 5))
    assert not np.array_equal(a, fit_subset_indices(1000, 100, 6))
    np.testing.assert_array_equal(fit_subset_indices(7, 50, 0), np.arange(7))


def test_stored_metadata_is_checked():
    with pytest.raises(ValueError, match=r"'dynamic_threshold' has shape \[59, 2\], expected \[59, 3\]"):
        stored_thresholds({"dynamic_threshold": np.zeros((59, 2))}, "x.pth", 3)
    with pytest.raises(ValueError, match="'anytime_classification' has shape"):
        saved_results({"flops": [1, 2, 3], "anytime_classification": [1, 2],
                       "budgeted_batch_classification": [[1], [2]]}, "x.pth")
    with pytest.raises(ValueError, match="must be \\[flops_list, accuracy_list\\]"):
        saved_results({"flops": [1], "anytime_classification": [1], "budgeted_batch_classification": [1]}, "x")


def test_a_checkpoint_that_records_its_architecture_is_built_as_recorded():
    sources = {"model": COMMAND_LINE, "model_overrides": "run.yaml"}
    with pytest.raises(ValueError, match=r"^--model is 'deit_tiny' but x.ckpt holds a 'deit_small' model$"):
        reconcile_model("deit_tiny", {}, {"model": "deit_small"}, "x.ckpt", sources)
    # official files record nothing: the config's model and architecture are built
    assert reconcile_model("deit_tiny", {"depth": 3}, {}, "official.pth") == ("deit_tiny", {"depth": 3})
    recorded = {"model": "deit_small", "model_overrides": {"depth": 4, "num_classes": 5}}
    assert reconcile_model(None, {"depth": 4}, recorded, "x.ckpt") == ("deit_small", {"depth": 4, "num_classes": 5})
    mlp_ratio = model_defaults("deit_small")["mlp_ratio"]  # spelled out: the recorded architecture
    assert reconcile_model("deit_small", {"mlp_ratio": mlp_ratio}, recorded, "x.ckpt") == (
        "deit_small", {"depth": 4, "num_classes": 5, "mlp_ratio": mlp_ratio})
    # qk_scale keeps every parameter shape: loading would not catch it
    with pytest.raises(ValueError, match=r"^run.yaml: model_overrides.depth is 6 but x.ckpt was written with depth: 4; "
                                         r"run.yaml: model_overrides.qk_scale is 0.5 but x.ckpt was written with no "
                                         r"qk_scale \(default None\)$"):
        reconcile_model(None, {"depth": 6, "qk_scale": 0.5}, recorded, "x.ckpt", sources)
    with pytest.raises(ValueError, match="x.ckpt: model_overrides metadata is not a mapping"):
        reconcile_model(None, {}, {"model": "deit_small", "model_overrides": [1]}, "x.ckpt")
