"""Official training files (args as argparse.Namespace, model_ema, optimizer) and .safetensors weights."""
import argparse
import json
import logging
import re
import struct
import subprocess
import sys

import mindspore as ms
import numpy as np
import pytest

from dvt_ms import create_model, load_checkpoint
from dvt_ms.checkpoint import CheckpointError, map_state_dict, read_checkpoint
from dvt_ms.checkpoint.safetensors import read_safetensors
from tests.conftest import ROOT

TINY = dict(embed_dim=64, depth=2, num_heads=2, mlp_ratio=2.0, num_classes=10)
PATCH = 16


def _net(seed: int):
    ms.set_seed(seed)
    return create_model("deit_tiny", **TINY)


def _official_state(net) -> dict:
    """The model's weights under the official (timm DeiT) names and layouts, as numpy arrays."""
    state = {}
    for param in net.get_parameters():
        name, value = param.name, param.asnumpy().copy()
        name = re.sub(r"(^|\.)tokenizer\.proj\.", r"\1patch_embed.proj.", name)
        name = re.sub(r"\.gamma$", ".weight", re.sub(r"\.beta$", ".bias", name))
        if name.endswith("patch_embed.proj.weight"):
            value = value.reshape(value.shape[0], 3, PATCH, PATCH)
        state[name] = value
    assert sorted(map_state_dict(state)) == sorted(p.name for p in net.get_parameters())
    return state


def _params(net) -> dict:
    return {p.name: p.asnumpy() for p in net.get_parameters()}


@pytest.fixture
def training_file(tmp_path, torch):
    model, ema = _official_state(_net(1)), _official_state(_net(2))
    big = {i: {"exp_avg": torch.ones(4096), "exp_avg_sq": torch.ones(4096)} for i in range(20)}
    path = tmp_path / "checkpoint.pth"
    torch.save({"model": {k: torch.from_numpy(v) for k, v in model.items()},
                "model_ema": {k: torch.from_numpy(v) for k, v in ema.items()},
                "optimizer": {"state": big, "param_groups": [{"lr": 5e-4, "params": list(range(20))}]},
                "lr_scheduler": {"last_epoch": 7, "base_lrs": [5e-4]}, "epoch": 7,
                "args": argparse.Namespace(model="deit_tiny", lr=5e-4, input_size=224, opt_betas=None,
                                           data_path="/data/imagenet")}, path)
    return path, map_state_dict(model), map_state_dict(ema)


def test_official_training_file_args_weights_choice_and_small_metadata(training_file, caplog):
    path, model, ema = training_file
    net = _net(3)
    with caplog.at_level(logging.INFO):
        meta = load_checkpoint(net, path)
    for name, value in _params(net).items():
        np.testing.assert_array_equal(value, model[name], err_msg=name)
    assert "weights from 'model'" in caplog.text and "not 'model_ema'" in caplog.text
    assert "not kept: model_ema (state with tensors), optimizer (state with tensors)" in caplog.text
    assert meta["epoch"] == 7 and meta["lr_scheduler"] == {"last_epoch": 7, "base_lrs": [5e-4]}
    assert meta["args"] == {"model": "deit_tiny", "lr": 5e-4, "input_size": 224, "opt_betas": None,
                            "data_path": "/data/imagenet"} and type(meta["args"]) is dict
    assert "optimizer" not in meta and "model_ema" not in meta

    caplog.clear()
    with caplog.at_level(logging.INFO):
        load_checkpoint(net, path, weights="model_ema")
    assert "weights from 'model_ema'" in caplog.text
    for name, value in _params(net).items():
        np.testing.assert_array_equal(value, ema[name], err_msg=name)


def test_converter_picks_the_weights_and_keeps_no_other_state(training_file, tmp_path):
    path, _, ema = training_file
    dst = tmp_path / "ema.ckpt"
    overrides = [f"--model_overrides.{k}={v}" for k, v in TINY.items()]
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "convert_checkpoint.py"), str(path), str(dst),
                             "--model", "deit_tiny", "--weights", "model_ema"] + overrides,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "weights from 'model_ema'" in result.stderr and "optimizer (state with tensors)" in result.stderr
    weights, meta = read_checkpoint(dst)
    assert sorted(weights) == sorted(ema)
    np.testing.assert_array_equal(weights["head.weight"], ema["head.weight"])
    assert meta["converted_weights"] == "model_ema" and meta["epoch"] == 7 and "optimizer" not in meta
    plain = tmp_path / "plain.ckpt"
    from dvt_ms.checkpoint import save_checkpoint

    save_checkpoint(_net(4), plain)
    assert dst.stat().st_size < plain.stat().st_size + 20000  # no optimizer or EMA tensors inside


def _write_safetensors(path, tensors: dict, header_patch=None, metadata=None) -> None:
    header, blobs, offset = {}, [], 0
    codes = {np.dtype(np.float32): "F32", np.dtype(np.int64): "I64", np.dtype(np.float16): "F16"}
    for name, value in tensors.items():
        raw = np.ascontiguousarray(value).astype(value.dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": codes[value.dtype], "shape": list(value.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    if metadata:
        header["__metadata__"] = metadata
    if header_patch:
        header_patch(header)
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def test_safetensors_weights_load_through_the_same_key_mapping(tmp_path):
    source = _net(5)
    path = tmp_path / "model.safetensors"
    _write_safetensors(path, _official_state(source), metadata={"format": "pt"})
    net = _net(6)
    meta = load_checkpoint(net, path)
    assert meta == {"format": "pt"}
    for name, value in _params(net).items():
        np.testing.assert_array_equal(value, _params(source)[name], err_msg=name)

    bf16 = tmp_path / "bf16.safetensors"
    values = np.array([1.0, -2.5, 3.140625], np.float32)
    raw = (values.view(np.uint32) >> 16).astype("<u2").tobytes()
    text = json.dumps({"x": {"dtype": "BF16", "shape": [3], "data_offsets": [0, 6]}}).encode()
    bf16.write_bytes(struct.pack("<Q", len(text)) + text + raw)
    tensors, _ = read_safetensors(bf16)
    np.testing.assert_array_equal(tensors["x"], values)


def _overlap(header):
    header["b"]["data_offsets"] = [0, header["b"]["data_offsets"][1] - header["b"]["data_offsets"][0]]


@pytest.mark.parametrize("patch, message", [
    (lambda h: h["a"].update(dtype="F8_E9"), r"tensor 'a': unsupported dtype 'F8_E9'"),
    (lambda h: h["a"].update(data_offsets=[0, 10 ** 9]), r"tensor 'a': data_offsets \[0, 1000000000\] outside"),
    (lambda h: h["a"].update(shape=[2, -1]), r"tensor 'a': bad shape"),
    (lambda h: h["a"].update(shape=[3, 3]), r"tensor 'a': 16 data bytes for shape \[3, 3\] of F32 \(36 expected\)"),
    (_overlap, r"tensors 'a' \[0, 16\) and 'b' \[0, 16\) overlap"),
])
def test_bad_safetensors_headers_are_refused_before_reading(tmp_path, patch, message):
    path = tmp_path / "bad.safetensors"
    _write_safetensors(path, {"a": np.ones((2, 2), np.float32), "b": np.ones(2, np.int64)}, header_patch=patch)
    with pytest.raises(CheckpointError, match=message) as info:
        read_checkpoint(path)
    assert str(path) in str(info.value)


def test_bad_safetensors_header_length(tmp_path):
    path = tmp_path / "short.safetensors"
    path.write_bytes(struct.pack("<Q", 1000) + b"{}")
    with pytest.raises(CheckpointError, match=r"short.safetensors: bad safetensors header length 1000"):
        read_checkpoint(path)
    path.write_bytes(struct.pack("<Q", 4) + b"[1,]")
    with pytest.raises(CheckpointError, match="short.safetensors: safetensors header is not valid JSON"):
        read_checkpoint(path)
