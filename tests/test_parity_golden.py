"""Golden parity with the official PyTorch DVT outputs in ../shared/reference (no torch needed)."""
import json
import subprocess
import sys

import mindspore as ms
import numpy as np
import pytest

from dvt_ms import create_model, load_checkpoint
from tests.conftest import ROOT
from tests.script_loader import script_env

TOLERANCE = 1e-4
_FAMILY_MODEL = {"deit": "dvt_deit_small", "t2t": "dvt_t2t_vit_12"}


def _golden_cases(reference_dir):
    return sorted(p.stem for p in reference_dir.glob("dvt_*.json"))


def _model_for(config: dict):
    overrides = {k: config[k] for k in ("embed_dim", "depth", "num_heads", "mlp_ratio", "num_classes",
                                        "feature_reuse", "relation_reuse", "image_size")}
    if config.get("token_dim"):
        overrides["token_dim"] = config["token_dim"]
    return _FAMILY_MODEL[config["family"]], overrides


def _assert_exits_match(net, arrays):
    net.set_train(False)
    outputs = net(ms.Tensor(arrays["input"]))
    assert len(outputs) == 3
    for i, out in enumerate(outputs):
        expected = arrays[f"exit{i}"]
        assert out.shape == expected.shape
        np.testing.assert_allclose(out.asnumpy(), expected, atol=TOLERANCE, rtol=0, err_msg=f"exit {i}")


def test_golden_cases_present(reference_dir):
    assert "dvt_deit_tiny" in _golden_cases(reference_dir)


@pytest.mark.parametrize("case", ["dvt_deit_tiny"])
def test_golden_pth_and_converted_ckpt(case, reference_dir, tmp_path):
    config = json.loads((reference_dir / f"{case}.json").read_text())["config"]
    arrays = np.load(reference_dir / f"{case}.npz")
    name, overrides = _model_for(config)

    net = create_model(name, **overrides)
    metadata = load_checkpoint(net, reference_dir / f"{case}.pth.tar")
    for key in ("flops", "anytime_classification", "dynamic_threshold", "budgeted_batch_classification"):
        assert key in metadata
    assert np.asarray(metadata["dynamic_threshold"]).shape == (59, 3)
    _assert_exits_match(net, arrays)

    dst = tmp_path / f"{case}.ckpt"
    cmd = [sys.executable, str(ROOT / "scripts" / "convert_checkpoint.py"), str(reference_dir / f"{case}.pth.tar"),
           str(dst), "--model", name] + [f"--model_overrides.{k}={v}" for k, v in overrides.items()]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=script_env())
    assert result.returncode == 0, result.stderr
    assert [p.name for p in tmp_path.iterdir()] == [dst.name], "conversion left stray files"

    fresh = create_model(name, **overrides)
    converted_metadata = load_checkpoint(fresh, dst)
    _assert_exits_match(fresh, arrays)
    np.testing.assert_array_equal(converted_metadata["dynamic_threshold"], metadata["dynamic_threshold"])
    assert converted_metadata["flops"] == metadata["flops"]
    assert converted_metadata["model"] == name
    assert converted_metadata["model_overrides"] == overrides
