"""Bad checkpoints through ``load_checkpoint`` and the converter: clear errors, nothing executed or lost."""
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from dvt_ms import create_model, load_checkpoint
from dvt_ms.checkpoint import CheckpointError, CheckpointMismatchError, UnsafeCheckpointError
from tests.conftest import ROOT
from tests.script_loader import script_env

TINY = dict(embed_dim=64, depth=2, num_heads=2, mlp_ratio=2.0, num_classes=10)
CONVERT = [sys.executable, str(ROOT / "scripts" / "convert_checkpoint.py")]


def _malicious_zip(path, module: str, name: str, marker) -> None:
    command = f"touch {marker}".encode()
    payload = (b"\x80\x02c" + f"{module}\n{name}\n".encode() + b"X" + len(command).to_bytes(4, "little")
               + command + b"\x85R.")
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("checkpoint/data.pkl", payload)
        archive.writestr("checkpoint/version", "3\n")


@pytest.mark.parametrize("module,name", [("os", "system"), ("builtins", "eval"), ("posix", "system")])
def test_malicious_pickle_is_refused(tmp_path, module, name):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    _malicious_zip(path, module, name, marker)
    net = create_model("deit_tiny", **TINY)
    with pytest.raises(UnsafeCheckpointError, match=f"{module}.{name}") as info:
        load_checkpoint(net, path)
    assert str(path) in str(info.value)
    assert not marker.exists()


def test_truncated_file(tmp_path, reference_dir):
    data = (reference_dir / "dvt_deit_tiny.pth.tar").read_bytes()
    path = tmp_path / "cut.pth.tar"
    path.write_bytes(data[: len(data) // 2])
    net = create_model("dvt_deit_small", **TINY)
    with pytest.raises(CheckpointError, match="cut.pth.tar"):
        load_checkpoint(net, path)


def _tiny_deit_state(torch):
    from dvt_ms.reference import torch_models as torch_reference

    reference = torch_reference.build_deit(**TINY)
    torch_reference.randomize_(reference, seed=1)
    return reference.state_dict()


def test_all_mismatches_in_one_error_and_nothing_loaded(torch, tmp_path):
    state = _tiny_deit_state(torch)
    del state["blocks.0.attn.proj.bias"]
    state["blocks.0.extra.weight"] = torch.zeros(3)
    state["head.weight"] = torch.zeros(7, 64)
    path = tmp_path / "bad.pth"
    torch.save({"model": state}, path)

    net = create_model("deit_tiny", **TINY)
    before = {p.name: p.asnumpy().copy() for p in net.get_parameters()}
    with pytest.raises(CheckpointMismatchError) as info:
        load_checkpoint(net, path)
    message = str(info.value)
    assert str(path) in message
    assert "blocks.0.attn.proj.bias" in message
    assert "blocks.0.extra.weight" in message
    assert "head.weight: checkpoint (7, 64) vs model (10, 64)" in message
    for p in net.get_parameters():
        np.testing.assert_array_equal(p.asnumpy(), before[p.name])


def test_nan_weights_are_refused(torch, tmp_path):
    state = _tiny_deit_state(torch)
    state["norm.weight"][0] = float("nan")
    path = tmp_path / "nan.pth"
    torch.save(state, path)
    net = create_model("deit_tiny", **TINY)
    before = {p.name: p.asnumpy().copy() for p in net.get_parameters()}
    with pytest.raises(CheckpointError, match="norm.gamma contains NaN"):
        load_checkpoint(net, path)
    for p in net.get_parameters():  # all-or-nothing: the finite parameters before it were not written either
        np.testing.assert_array_equal(p.asnumpy(), before[p.name])


def test_missing_file_and_unknown_layout(tmp_path):
    net = create_model("deit_tiny", **TINY)
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        load_checkpoint(net, tmp_path / "absent.pth")
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"not a checkpoint" * 8)
    with pytest.raises(CheckpointError, match="garbage.ckpt"):
        load_checkpoint(net, garbage)


def _convert(*args):
    return subprocess.run(CONVERT + [str(a) for a in args], capture_output=True, text=True, timeout=300,
                          env=script_env())


def test_converter_reports_bad_file_without_traceback(tmp_path):
    src = tmp_path / "broken.pth"
    src.write_bytes(b"PK\x03\x04 definitely not a zip")
    dst = tmp_path / "out.ckpt"
    result = _convert(src, dst, "--model", "deit_small")
    assert result.returncode == 2
    assert "broken.pth" in result.stderr
    assert "Traceback" not in result.stderr
    assert not dst.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.pth"]


def test_converter_never_overwrites(tmp_path, reference_dir):
    src = tmp_path / "model.ckpt"
    src.write_bytes(b"original")
    result = _convert(src, src, "--model", "deit_small")
    assert result.returncode == 2 and "refusing to overwrite the input" in result.stderr
    assert src.read_bytes() == b"original"

    existing = tmp_path / "existing.ckpt"
    existing.write_bytes(b"keep me")
    result = _convert(reference_dir / "dvt_deit_tiny.pth.tar", existing, "--model", "dvt_deit_small")
    assert result.returncode == 2 and "already exists" in result.stderr
    assert existing.read_bytes() == b"keep me"


def test_converter_names_unknown_override(tmp_path, reference_dir):
    result = _convert(reference_dir / "dvt_deit_tiny.pth.tar", tmp_path / "o.ckpt", "--model",
                      "dvt_deit_small", "--model_overrides.embed_dimm", "64")
    assert result.returncode == 2 and "'embed_dimm' (did you mean 'embed_dim'?)" in result.stderr
    assert "Traceback" not in result.stderr
