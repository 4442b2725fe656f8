"""A training run's own checkpoints (``best.ckpt``, ``epoch_XXXX.ckpt``, ``final_weights.ckpt``) through eval,
infer, export and ``--pretrained``: the model weights by default, the EMA with ``--weights model_ema``, the
optimizer state skipped (issue 18). Mismatches are reported grouped by key prefix; a file of no known layout
stays an error."""
import json
import logging
import re
from pathlib import Path

import mindspore as ms
import numpy as np
import pytest
from mindspore import nn

from dvt_ms import create_model, load_checkpoint
from dvt_ms.checkpoint import (EMA_PREFIX, OPTIMIZER_PREFIX, CheckpointError, CheckpointMismatchError,
                               checkpoint_entries, group_by_prefix, mismatch_lines, read_checkpoint, save_checkpoint)
from dvt_ms.export import MANIFEST_NAME
from dvt_ms.train.checkpoints import TRAINING_STATE_KEYS, CheckpointManager
from dvt_ms.train.weights_init import load_pretrained

from .script_loader import load_script
from .test_export import run_exported
from .test_train_cli import TINY, base_args, load_train_script, make_image_folder

THROUGH = ["--thresholds", "2,2,-1e8"]  # every image to the last exit: all three stages run


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Two epochs with EMA (decay 0.9), both epoch files kept; the files named by role."""
    work = tmp_path_factory.mktemp("run")
    data = make_image_folder(work / "data", 4, 2)
    out = work / "out"
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(work)
        assert load_train_script().main(base_args(data, out, keep_checkpoints=2, seed=3)) == 0
    meta = CheckpointManager.read_metadata(out / "best.ckpt")
    assert meta["has_ema"] and meta["has_optimizer"]
    raw = ms.load_checkpoint(str(out / "best.ckpt"))
    files = {"best": out / "best.ckpt", "best_epoch": out / f"epoch_{meta['best_epoch']:04d}.ckpt",
             "last": out / "epoch_0002.ckpt", "final": out / "final_weights.ckpt"}
    return dict(data=data, out=out, files=files, meta=meta,
                ema={k[len(EMA_PREFIX):]: v.asnumpy() for k, v in raw.items() if k.startswith(EMA_PREFIX)},
                optimizer_entries=sum(k.startswith(OPTIMIZER_PREFIX) for k in raw))


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # MindSpore writes kernel files into the working directory


@pytest.fixture(scope="module")
def ema_weights_file(run, tmp_path_factory):
    """best.ckpt's EMA entries written by hand as a plain weights file: what the EMA parameters give."""
    path = tmp_path_factory.mktemp("ema") / "ema_by_hand.ckpt"
    entries = [{"name": name, "data": ms.Tensor(value)} for name, value in run["ema"].items()]
    save_checkpoint(entries, path, {k: run["meta"][k] for k in ("model", "model_overrides", "data_config")})
    return path


def _eval_probs(run, path: Path, *extra: str) -> np.ndarray:
    out = Path.cwd() / f"{path.stem}{''.join(extra)}.npz"
    assert load_script("eval").main(["--checkpoint", str(path), "--data_dir", str(run["data"]), "--batch_size", "4",
                                     "--predictions", str(out), *extra]) == 0
    with np.load(out) as saved:
        return saved["probs"]


def test_eval_takes_best_epoch_and_final_files_and_the_ema(run, ema_weights_file, caplog):
    files = run["files"]
    with caplog.at_level(logging.INFO, logger="dvt_ms.checkpoint.loader"):
        probs = {role: _eval_probs(run, path) for role, path in files.items()}
    lines = [r.getMessage() for r in caplog.records if "optimizer-state entries skipped" in r.getMessage()]
    n, skipped = len(run["ema"]), run["optimizer_entries"]
    assert lines[0] == (f"{files['best']}: a dvt_ms training checkpoint ({n} model weights, {n} EMA weights, "
                        f"{skipped} optimizer-state entries): loading the model weights (the EMA weights with "
                        f"--weights model_ema); {skipped} optimizer-state entries skipped")
    assert lines[-1] == (f"{files['final']}: a weights file ({n} model weights): loading the model weights; "
                         "0 optimizer-state entries skipped")
    assert probs["best"].shape == (3, 8, 4)
    np.testing.assert_array_equal(probs["best"], probs["best_epoch"])  # the same weights, the same run
    np.testing.assert_array_equal(probs["last"], probs["final"])

    ema = _eval_probs(run, files["best"], "--weights", "model_ema")
    assert np.abs(ema - probs["best"]).max() > 1e-3  # decay 0.9 over 8 steps: not the trained weights
    np.testing.assert_array_equal(ema, _eval_probs(run, ema_weights_file))


def _infer_probs(run, path: Path, *extra: str) -> np.ndarray:
    out = Path.cwd() / f"{path.stem}{''.join(extra)}.json"
    assert load_script("infer").main(["--checkpoint", str(path), str(run["data"] / "val"), *THROUGH, "--topk", "4",
                                      "--output", str(out), *extra]) == 0
    records = sorted(json.loads(out.read_text())["results"], key=lambda r: r["path"])
    assert [r["exit"] for r in records] == [3] * 8
    probs = np.zeros((len(records), 4))
    for i, record in enumerate(records):
        for entry in record["topk"]:
            probs[i, entry["class_index"]] = entry["prob"]
    return probs


def test_infer_takes_best_epoch_and_final_files_and_the_ema(run):
    probs = {role: _infer_probs(run, path) for role, path in run["files"].items()}
    np.testing.assert_array_equal(probs["best"], probs["best_epoch"])
    np.testing.assert_array_equal(probs["last"], probs["final"])
    ema = _infer_probs(run, run["files"]["best"], "--weights", "model_ema")
    assert np.abs(ema - probs["best"]).max() > 1e-3


def _exported_logits(path: Path, images: np.ndarray) -> np.ndarray:
    folder = Path.cwd() / f"export_{path.stem}"
    assert load_script("export").main(["--checkpoint", str(path), "--export_dir", str(folder)]) == 0
    manifest = json.loads((folder / MANIFEST_NAME).read_text())
    cells = [nn.GraphCell(ms.load(str(folder / stage["file"]))) for stage in manifest["stages"]]
    exits, _, logits = run_exported(manifest, cells, images, [2.0, 2.0, -1e8])
    assert exits.tolist() == [2] * len(images)
    return logits


def test_export_takes_best_epoch_and_final_files(run):
    """best.ckpt, epoch_0002.ckpt and final_weights.ckpt export (best.ckpt is a copy of its epoch file,
    compared in eval and infer; the EMA choice is load_model's, as there: not exported again, for time)."""
    images = np.random.default_rng(0).standard_normal((3, 3, 64, 64)).astype(np.float32)
    logits = {role: _exported_logits(run["files"][role], images) for role in ("best", "last", "final")}
    np.testing.assert_array_equal(logits["last"], logits["final"])
    if run["meta"]["best_epoch"] != 2:
        assert np.abs(logits["best"] - logits["last"]).max() > 1e-3


def _tiny() -> dict:
    """test_train_cli's tiny architecture (a YAML mapping there) as keyword arguments."""
    import yaml

    return yaml.safe_load(TINY)


def test_pretrained_takes_a_training_checkpoint_and_its_ema(run):
    net = create_model("dvt_deit_small", **_tiny(), num_classes=4)
    load_pretrained(net, str(run["files"]["best"]), "model_ema")
    for param in net.get_parameters():
        np.testing.assert_array_equal(param.asnumpy(), run["ema"][param.name], err_msg=param.name)
    load_pretrained(net, str(run["files"]["best"]))
    weights, _ = read_checkpoint(run["files"]["best_epoch"])
    for param in net.get_parameters():
        np.testing.assert_array_equal(param.asnumpy(), weights[param.name], err_msg=param.name)


def test_convert_of_a_training_checkpoint_is_a_weights_file(run, tmp_path):
    dst = tmp_path / "converted.ckpt"
    assert load_script("convert_checkpoint").main([str(run["files"]["best"]), str(dst), "--weights", "model_ema"]) == 0
    weights, metadata = read_checkpoint(dst)
    assert not TRAINING_STATE_KEYS & set(metadata), sorted(TRAINING_STATE_KEYS & set(metadata))
    assert metadata["model"] == run["meta"]["model"] and metadata["converted_weights"] == "model_ema"
    assert checkpoint_entries(ms.load_checkpoint(str(dst))).kind == "weights"
    for name, value in run["ema"].items():
        np.testing.assert_array_equal(weights[name], value, err_msg=name)
    with pytest.raises(CheckpointError, match="not a training checkpoint"):
        CheckpointManager.read_metadata(dst)


# ------------------------------------------------------------------------------------------------ errors
def test_model_ema_of_a_run_without_ema_names_the_file_and_what_it_holds(run, tmp_path):
    raw = ms.load_checkpoint(str(run["files"]["best"]))
    entries = [{"name": k, "data": v} for k, v in raw.items()
               if not k.startswith(EMA_PREFIX) and not isinstance(v, str)]
    path = save_checkpoint(entries, tmp_path / "no_ema.ckpt", {"model": "dvt_deit_small"})
    n = len(run["ema"])
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(path, "model_ema")
    assert str(info.value) == (
        f"{path}: --weights model_ema: no EMA weights (no 'ema.*' entries) in a dvt_ms training checkpoint ({n} "
        f"model weights, {run['optimizer_entries']} optimizer-state entries) (the run was trained with model_ema "
        "false); load its model weights with --weights model")


def test_another_architecture_gets_a_grouped_report(run):
    net = create_model("dvt_deit_small", **{**_tiny(), "depth": 1}, num_classes=4)
    with pytest.raises(CheckpointMismatchError) as info:
        load_checkpoint(net, run["files"]["best"])
    lines = str(info.value).splitlines()
    assert lines[0] == f"{run['files']['best']} does not match DynamicVisionTransformer:"
    assert re.fullmatch(r"  \d+ unexpected key\(s\), in 3 group\(s\):", lines[1])
    for line in lines[2:5]:  # one line per stage: its second block, which the model has not
        assert re.fullmatch(r"    (stages\.\d)\.\* \(\d+\): \1\.blocks\.1\.attn\.proj\.bias; .*; \.\.\.", line), line
    assert re.fullmatch(r"  \d+ shape mismatch\(es\), in 2 group\(s\):", lines[5])  # relation reuse: depth x heads
    assert len(lines) == 8 and "optimizer" not in str(info.value) and "ema." not in str(info.value)


def test_a_file_of_no_known_layout_stays_an_error(tmp_path):
    """A MindSpore ``Model.train`` file of another project (``network.*`` weights, ``moments.*`` of Momentum):
    nothing is taken for optimizer state, and the strict load lists both groups."""
    names = [f"network.backbone.layer{i}.weight" for i in range(40)] + [f"moments.backbone.layer{i}.weight"
                                                                        for i in range(40)]
    roles = checkpoint_entries(names + ["global_step"])
    assert roles.kind == "weights" and roles.optimizer == () and len(roles.model) == 81
    path = save_checkpoint([{"name": n, "data": ms.Tensor(np.zeros(2, np.float32))} for n in names],
                           tmp_path / "other.ckpt")
    net = create_model("deit_tiny", embed_dim=64, depth=2, num_heads=2, mlp_ratio=2.0, num_classes=10)
    with pytest.raises(CheckpointMismatchError) as info:
        load_checkpoint(net, path)
    message = str(info.value).splitlines()
    assert message[1].startswith("  ") and "missing key(s)" in message[1]
    unexpected = message.index("  80 unexpected key(s), in 2 group(s):")
    assert message[unexpected + 1:unexpected + 3] == [
        "    moments.backbone.* (40): moments.backbone.layer0.weight; moments.backbone.layer1.weight; "
        "moments.backbone.layer10.weight; ...",
        "    network.backbone.* (40): network.backbone.layer0.weight; network.backbone.layer1.weight; "
        "network.backbone.layer10.weight; ..."]
    assert len(message) < 20


def test_mismatch_lines_group_count_and_quote_a_few_keys():
    expected = {f"stages.{s}.blocks.{b}.w": (2,) for s in range(2) for b in range(5)}
    found = {**{k: (2,) for k in expected if k != "stages.1.blocks.4.w"},
             **{OPTIMIZER_PREFIX + "adam_m." + k: (2,) for k in expected}, "optimizer.global_step": ()}
    found["stages.0.blocks.0.w"] = (3,)
    assert mismatch_lines(expected, found) == [
        "  1 missing key(s):",
        "    stages.1.* (1): stages.1.blocks.4.w",
        "  11 unexpected key(s), in 2 group(s):",
        "    optimizer.adam_m.* (10): optimizer.adam_m.stages.0.blocks.0.w; optimizer.adam_m.stages.0.blocks.1.w; "
        "optimizer.adam_m.stages.0.blocks.2.w; ...",
        "    optimizer.global_step",
        "  1 shape mismatch(es):",
        "    stages.0.* (1): stages.0.blocks.0.w: checkpoint (3,) vs model (2,)"]
    assert mismatch_lines(expected, expected) == []
    many = mismatch_lines({}, {f"key{i}": (1,) for i in range(20)})
    assert len(many) == 1 + 12 + 1 and many[-1] == "    ... and 8 more group(s) of 8 key(s)"
    assert group_by_prefix(["a.b.c", "a.b.d", "a.e", "f"]) == [("a.b.*", ["a.b.c", "a.b.d"]), ("a.e", ["a.e"]),
                                                               ("f", ["f"])]
