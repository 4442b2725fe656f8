"""A user-defined cascade written in YAML, end to end as a user runs it: train with scripts/train.py,
evaluate with scripts/eval.py (anytime and budgeted), classify with scripts/infer.py, export to MindIR
and run the exported stages from the manifest alone. Two stages and four stages, tiny sizes."""
import json
from pathlib import Path

import mindspore as ms
import numpy as np
import pytest
import yaml
from mindspore import Tensor, nn

from dvt_ms.export import export_cascade
from dvt_ms.infer import model_from_checkpoint

from .script_loader import load_script
from .test_train_cli import make_image_folder

SIZE = 64
CASCADES = {
    "two": [{"patch_size": 32}, {"patch_size": 16}],                        # 2x2, 4x4 tokens at 64 pixels
    "four": [{"patch_size": 32}, {"patch_size": 22, "padding": 1},          # 2x2, 3x3,
             {"patch_size": 16}, {"patch_size": 14, "padding": 3, "keep_rate": [0.5], "fuse_token": True}],
}
GRIDS = {"two": [2, 4], "four": [2, 3, 4, 5]}


def write_config(path: Path, stages) -> Path:
    config = {"model": "dvt_deit_small",
              "model_overrides": {"embed_dim": 32, "depth": 1, "num_heads": 2, "mlp_ratio": 2.0,
                                  "image_size": SIZE, "num_classes": 4, "stages": stages},
              "batch_size": 4, "num_parallel_workers": 1, "epochs": 1, "warmup_epochs": 0, "cooldown_epochs": 0,
              "lr": 1e-3, "lr_scaling": "none", "drop_path": 0.0, "auto_augment": None, "reprob": 0.0,
              "mixup": 0.0, "cutmix": 0.0, "hflip": 0.0, "crop_scale": [1.0, 1.0], "model_ema": False,
              "log_interval": 1}
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@pytest.fixture(scope="module", params=sorted(CASCADES))
def trained(request, tmp_path_factory):
    name = request.param
    work = tmp_path_factory.mktemp(f"cascade_{name}")
    data = make_image_folder(work / "data", train_per_class=2, val_per_class=1, size=SIZE)
    config = write_config(work / "cascade.yaml", CASCADES[name])
    out = work / "run"
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(work)  # MindSpore writes compile artefacts into the working directory
        status = load_script("train").main(["--config", str(config), "--data_dir", str(data),
                                            "--output_dir", str(out)])
    assert status == 0
    return dict(name=name, work=work, data=data, config=config, out=out, n=len(CASCADES[name]))


def test_training_writes_a_checkpoint_of_the_cascade(trained):
    net, metadata = model_from_checkpoint(trained["out"] / "final_weights.ckpt")
    assert [s.grid_size for s in net.stages] == GRIDS[trained["name"]]
    assert metadata["model_overrides"]["stages"] == CASCADES[trained["name"]]
    records = [json.loads(line) for line in (trained["out"] / "metrics.jsonl").read_text().splitlines()]
    assert len(records[-1]["train_loss"]) == trained["n"] and len(records[-1]["val_top1"]) == trained["n"]


def test_eval_reports_every_exit_and_the_budget_curve(trained, monkeypatch):
    monkeypatch.chdir(trained["work"])
    results_path = trained["work"] / "results.json"
    status = load_script("eval").main([
        "--config", str(trained["config"]), "--checkpoint", str(trained["out"] / "final_weights.ckpt"),
        "--data_dir", str(trained["data"]), "--mode", "fit", "--fit_samples", "8", "--output", str(results_path)])
    assert status == 0
    results = json.loads(results_path.read_text())
    n = trained["n"]
    assert results["num_exits"] == n
    anytime = results["anytime"]
    assert [row["exit"] for row in anytime] == list(range(1, n + 1))
    assert [row["tokens"] for row in anytime] == [f"{g}x{g}" for g in GRIDS[trained["name"]]]
    gmacs = [row["gmacs"] for row in anytime]
    assert all(b > a for a, b in zip(gmacs, gmacs[1:]))
    budget = results["budget"]
    assert len(budget) == 59 and all(len(point["exit_counts"]) == n and sum(point["exit_counts"]) == 4
                                     for point in budget)


def test_infer_runs_the_cascade_with_early_exits(trained, monkeypatch):
    monkeypatch.chdir(trained["work"])
    n = trained["n"]
    output = trained["work"] / "preds.json"
    thresholds = ",".join(["2"] * (n - 1) + ["-1e8"])  # nobody is confident enough before the last exit
    status = load_script("infer").main([str(trained["data"] / "val"), "--checkpoint",
                                        str(trained["out"] / "final_weights.ckpt"), "--thresholds", thresholds,
                                        "--output", str(output)])
    assert status == 0
    records = json.loads(output.read_text())["results"]
    assert len(records) == 4 and {r["exit"] for r in records} == {n}


def test_exported_stages_run_the_cascade_from_the_manifest(trained, tmp_path):
    net, metadata = model_from_checkpoint(trained["out"] / "final_weights.ckpt")
    manifest = json.loads(export_cascade(net, tmp_path, metadata=metadata).read_text())
    assert manifest["num_exits"] == trained["n"]
    x = np.random.default_rng(0).standard_normal((3, 3, SIZE, SIZE)).astype(np.float32)
    expected = [o.asnumpy() for o in net(Tensor(x))]
    outputs = []
    for stage in manifest["stages"]:
        cell = nn.GraphCell(ms.load(str(tmp_path / stage["file"])))
        args = [Tensor(x) if entry["source"] == "images" else outputs[entry["source"]["stage"]][entry["source"]["output"]]
                for entry in stage["inputs"]]
        result = cell(*args)
        outputs.append(result if isinstance(result, tuple) else (result,))
        assert [tuple(o.shape[1:]) for o in outputs[-1]] == [tuple(e["shape"][1:]) for e in stage["outputs"]]
    for k, out in enumerate(outputs):
        np.testing.assert_allclose(out[0].asnumpy(), expected[k], rtol=0, atol=1e-4)
