"""MindIR export (dvt_ms.export, scripts/export.py): the exported stages, wired by dvt_export.json alone,
reproduce the early-exit engine."""
import json

import mindspore as ms
import numpy as np
import pytest
from mindspore import nn

from dvt_ms import create_model
from dvt_ms.checkpoint import save_checkpoint
from dvt_ms.export import MANIFEST_NAME, export_cascade
from tests.test_infer import ATOL, TINY, deit_case  # noqa: F401  (session fixture: tiny model + engine)

from .script_loader import load_script


def _export_script():
    return load_script("export")


def _softmax(logits):
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def run_exported(manifest, cells, images, thresholds):
    """Early-exit cascade driven only by the manifest's wiring; returns (exits, predictions, logits)."""
    batch = images.shape[0]
    exits = np.full(batch, -1)
    predictions = np.full(batch, -1)
    taken_logits = np.zeros((batch, manifest["num_classes"]), np.float32)
    remaining = np.arange(batch)
    rows = remaining
    previous = None
    for k, (stage, cell) in enumerate(zip(manifest["stages"], cells)):
        feeds = []
        for spec in stage["inputs"]:
            if spec["source"] == "images":
                feeds.append(images[remaining])
            else:
                assert spec["source"]["stage"] == k - 1
                feeds.append(previous[spec["source"]["output"]][rows])
        outputs = cell(*[ms.Tensor(np.ascontiguousarray(f)) for f in feeds])
        outputs = [o.asnumpy() for o in (outputs if isinstance(outputs, (tuple, list)) else [outputs])]
        assert [list(o.shape[1:]) for o in outputs] == [spec["shape"][1:] for spec in stage["outputs"]]
        probs = _softmax(outputs[0])
        leave = probs.max(axis=1) >= np.float32(thresholds[k])
        exits[remaining[leave]] = k
        predictions[remaining[leave]] = probs[leave].argmax(axis=1)
        taken_logits[remaining[leave]] = outputs[0][leave]
        rows = np.flatnonzero(~leave)
        remaining = remaining[rows]
        previous = outputs
        if remaining.size == 0:
            break
    return exits, predictions, taken_logits


def test_exported_stages_reproduce_the_engine(deit_case, tmp_path):  # noqa: F811
    net, engine, x = deit_case["net"], deit_case["engine"], deit_case["x"]
    table = np.tile(np.float32([0.5, 0.3, -1e8]), (59, 1))
    names = [f"c{i}" for i in range(TINY["num_classes"])]
    data_config = dict(input_size=224, crop_pct=0.9, interpolation="bilinear", num_classes=TINY["num_classes"],
                       class_names=names)
    ckpt = save_checkpoint(net, tmp_path / "tiny.ckpt", dict(model="dvt_deit_small", model_overrides=TINY,
                                                              dynamic_threshold=table, flops=[0.1, 0.3, 0.7],
                                                              data_config=data_config))
    out = tmp_path / "export"
    assert _export_script().main(["--checkpoint", str(ckpt), "--export_dir", str(out)]) == 0

    manifest = json.loads((out / MANIFEST_NAME).read_text())
    assert manifest["format"] == "MINDIR" and manifest["num_exits"] == 3 and manifest["image_size"] == 224
    assert manifest["model"] == "dvt_deit_small" and manifest["model_overrides"] == TINY
    np.testing.assert_array_equal(np.float32(manifest["thresholds"]["table"]), table)
    assert manifest["preprocessing"]["mean"] == [0.485, 0.456, 0.406]
    # the checkpoint's data config, spelled out (issue 11: the manifest documented a fixed 256/224 bicubic)
    assert manifest["preprocessing"]["resize_shorter_side"] == 248 and manifest["preprocessing"]["center_crop"] == 224
    assert manifest["preprocessing"]["interpolation"] == "bilinear"
    assert manifest["data_config"]["class_names"] == names and manifest["data_config"]["crop_pct"] == 0.9
    stages = manifest["stages"]
    assert [[i["name"] for i in s["inputs"]] for s in stages] == [
        ["images"], ["images", "tokens", "relations"], ["images", "tokens", "relations"]]
    assert [[o["name"] for o in s["outputs"]] for s in stages] == [
        ["logits", "tokens", "relations"], ["logits", "tokens", "relations"], ["logits"]]
    assert stages[1]["inputs"][1]["source"] == {"stage": 0, "output": 1, "name": "tokens"}
    assert stages[2]["inputs"][2]["source"] == {"stage": 1, "output": 2, "name": "relations"}
    assert stages[1]["inputs"][2]["shape"] == [-1, 4, 50, 50]  # depth * heads of stage 1, 1 + 7 * 7 tokens

    cells = [nn.GraphCell(ms.load(str(out / s["file"]))) for s in stages]
    thresholds = deit_case["thresholds"]
    for batch in (x, x[2:5]):  # two batch sizes through the same files
        exits, predictions, logits = run_exported(manifest, cells, batch, thresholds)
        expected = engine(batch, return_logits=True)
        np.testing.assert_array_equal(exits, expected.exits)
        np.testing.assert_array_equal(predictions, expected.predictions)
        np.testing.assert_allclose(logits, expected.logits, atol=ATOL, rtol=0)
        if batch.shape[0] == x.shape[0]:
            assert sorted(set(exits.tolist())) == [0, 1, 2]

    with pytest.raises(ValueError, match="already contains dvt_export.json"):
        export_cascade(net, out)


def test_export_rejects_bad_requests(tmp_path):
    net = create_model("dvt_deit_small", **TINY)
    with pytest.raises(ValueError, match="'ONNX' is not supported: only MINDIR"):
        export_cascade(net, tmp_path, file_format="ONNX")
    with pytest.raises(TypeError, match="only DVT cascades.*VisionTransformer"):
        export_cascade(create_model("deit_small", **TINY), tmp_path)
    with pytest.raises(ValueError, match=r"dynamic_threshold' must have shape \[steps, 3\]"):
        export_cascade(net, tmp_path, metadata={"dynamic_threshold": np.zeros((59, 2))})
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="exists and is not a directory"):
        export_cascade(net, tmp_path / "file")
    with pytest.raises(ValueError, match="--format onnx: not supported; only MINDIR"):
        _export_script().main(["--checkpoint", str(tmp_path / "x.ckpt"), "--export_dir", str(tmp_path),
                               "--format", "onnx"])
    assert list(tmp_path.iterdir()) == [tmp_path / "file"]
