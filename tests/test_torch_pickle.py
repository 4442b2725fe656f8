"""Tests for dvt_ms.checkpoint.torch_pickle: a torch-free, code-free reader of torch.save files.

Hostile and damaged files are written by hand here, opcode by opcode, so those tests need no torch.
Round trips against real ``torch.save`` output ask for the ``torch`` fixture.
"""
import collections
import json
import os
import pickle
import shlex
import struct
import sys
import zipfile
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import pytest

from dvt_ms.checkpoint.torch_pickle import (
    ALLOWED_GLOBALS,
    CheckpointFormatError,
    UnsafeCheckpointError,
    read_torch_file,
)

MAGIC = 0x1950A86A20F9469CFC6C


# --------------------------------------------------------------------------------------------------
# A tiny pickle writer: protocol-2 opcodes for plain values plus globals, calls and persistent ids.
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Global:
    module: str
    name: str


@dataclass(frozen=True)
class Call:
    fn: Any
    args: tuple


@dataclass(frozen=True)
class PersId:
    pid: Any


@dataclass(frozen=True)
class Build:
    obj: Any
    state: Any


def _encode(x: Any) -> bytes:
    if isinstance(x, Global):
        return b"c" + f"{x.module}\n{x.name}\n".encode()
    if isinstance(x, Call):
        return _encode(x.fn) + _encode(tuple(x.args)) + b"R"
    if isinstance(x, PersId):
        return _encode(x.pid) + b"Q"
    if isinstance(x, Build):
        return _encode(x.obj) + _encode(x.state) + b"b"
    if x is None:
        return b"N"
    if x is True:
        return b"\x88"
    if x is False:
        return b"\x89"
    if isinstance(x, int):
        if -(2**31) <= x < 2**31:
            return b"J" + struct.pack("<i", x)
        raw = x.to_bytes((x.bit_length() + 8) // 8, "little", signed=True)
        return b"\x8a" + bytes([len(raw)]) + raw
    if isinstance(x, float):
        return b"G" + struct.pack(">d", x)
    if isinstance(x, str):
        raw = x.encode()
        return b"X" + struct.pack("<I", len(raw)) + raw
    if isinstance(x, tuple):
        return b"(" + b"".join(_encode(v) for v in x) + b"t"
    if isinstance(x, list):
        return b"](" + b"".join(_encode(v) for v in x) + b"e"
    if isinstance(x, dict):
        return b"}(" + b"".join(_encode(k) + _encode(v) for k, v in x.items()) + b"u"
    raise TypeError(type(x))


def dumps(x: Any) -> bytes:
    return b"\x80\x02" + _encode(x) + b"."


def hooks() -> Call:
    return Call(Global("collections", "OrderedDict"), ())


def tensor(kind: str, key: str, numel: int, offset: int, size: tuple, stride: tuple,
           legacy: bool = False, view: Optional[tuple] = None) -> Call:
    pid = ("storage", Global("torch", kind), key, "cpu", numel) + ((view,) if legacy else ())
    return Call(Global("torch._utils", "_rebuild_tensor_v2"),
                (PersId(pid), offset, size, stride, False, hooks()))


def write_zip(path, data_pkl: Optional[bytes], storages: Dict[str, bytes], prefix: str = "archive",
              byteorder: Optional[str] = "little") -> None:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        if data_pkl is not None:
            zf.writestr(f"{prefix}/data.pkl", data_pkl)
        if byteorder is not None:
            zf.writestr(f"{prefix}/byteorder", byteorder)
        for key, raw in storages.items():
            zf.writestr(f"{prefix}/data/{key}", raw)
        zf.writestr(f"{prefix}/version", "3\n")


def write_legacy(path, main_pkl: bytes, storages: List[Tuple[str, int, bytes]],
                 header: Optional[bytes] = None) -> None:
    parts = [header if header is not None else pickle.dumps(MAGIC, protocol=2),
             pickle.dumps(1001, protocol=2),
             pickle.dumps({"protocol_version": 1001, "little_endian": True,
                           "type_sizes": {"short": 2, "int": 4, "long": 4}}, protocol=2),
             main_pkl,
             pickle.dumps([key for key, _, _ in storages], protocol=2)]
    for _, count, raw in storages:
        parts.append(struct.pack("<q", count) + raw)
    path.write_bytes(b"".join(parts))


def hand_made_zip(path) -> Dict[str, np.ndarray]:
    """A zip checkpoint written without torch; returns the arrays it must decode to."""
    base = np.arange(24, dtype=np.float32)
    bf16 = np.array([1.0, -2.5, 2.0**40, -0.15625], dtype=np.float32)
    obj = {
        "full": tensor("FloatStorage", "0", 24, 0, (4, 6), (6, 1)),
        "transposed": tensor("FloatStorage", "0", 24, 0, (6, 4), (1, 6)),
        "slice": tensor("FloatStorage", "0", 24, 7, (2, 3), (6, 1)),
        "scalar": tensor("FloatStorage", "0", 24, 23, (), ()),
        "empty": tensor("FloatStorage", "0", 24, 0, (0, 3), (3, 1)),
        "bf16": tensor("BFloat16Storage", "1", 4, 0, (2, 2), (2, 1)),
        "mask": tensor("BoolStorage", "2", 3, 0, (3,), (1,)),
        "meta": {"flops": [1.5, 2.0], "epoch": 3, "name": "x", "big": 2**40},
    }
    bf16_raw = (bf16.view(np.uint32) >> 16).astype("<u2").tobytes()
    write_zip(path, dumps(obj), {"0": base.astype("<f4").tobytes(), "1": bf16_raw,
                                 "2": bytes([1, 0, 1])}, prefix="some_name.pth")
    full = base.reshape(4, 6)
    return {"full": full, "transposed": full.T, "slice": full[1:3, 1:4], "scalar": np.float32(23.0),
            "empty": np.zeros((0, 3), np.float32), "bf16": bf16.reshape(2, 2),
            "mask": np.array([True, False, True])}


def hand_made_legacy(path) -> None:
    main = dumps({
        "a": tensor("LongStorage", "k1", 5, 1, (2, 2), (2, 1), legacy=True, view=None),
        "b": tensor("FloatStorage", "k2", 6, 0, (2,), (1,), legacy=True, view=("k2v", 2, 3)),
        "c": tensor("FloatStorage", "k2", 6, 1, (2,), (2,), legacy=True, view=None),
    })
    write_legacy(path, main, [("k1", 5, np.arange(5, dtype="<i8").tobytes()),
                              ("k2", 6, np.arange(6, dtype="<f4").tobytes())])


# --------------------------------------------------------------------------------------------------
# Torch-free reading.
# --------------------------------------------------------------------------------------------------
def test_hand_made_zip(tmp_path):
    path = tmp_path / "model.pth.tar"
    expected = hand_made_zip(path)
    got = read_torch_file(path)
    for key, want in expected.items():
        arr = got[key]
        assert type(arr) is np.ndarray and arr.flags.c_contiguous, key
        assert arr.dtype == np.asarray(want).dtype and arr.shape == np.shape(want), key
        np.testing.assert_array_equal(arr, want)
    assert got["meta"] == {"flops": [1.5, 2.0], "epoch": 3, "name": "x", "big": 2**40}
    got["slice"][0, 0] = -1  # each tensor owns its memory
    assert got["full"][1, 1] == 7


def test_big_endian_zip(tmp_path):
    path = tmp_path / "be.pt"
    values = np.array([1.5, -2.0, 3.25], dtype=np.float64)
    write_zip(path, dumps({"x": tensor("DoubleStorage", "0", 3, 0, (3,), (1,))}),
              {"0": values.astype(">f8").tobytes()}, byteorder="big")
    got = read_torch_file(path)["x"]
    assert got.dtype == np.float64 and got.dtype.isnative
    np.testing.assert_array_equal(got, values)


def test_hand_made_legacy_with_view(tmp_path):
    path = tmp_path / "legacy.pt"
    hand_made_legacy(path)
    got = read_torch_file(path)
    np.testing.assert_array_equal(got["a"], [[1, 2], [3, 4]])
    assert got["a"].dtype == np.int64
    np.testing.assert_array_equal(got["b"], [2.0, 3.0])  # view of elements [2, 5)
    np.testing.assert_array_equal(got["c"], [1.0, 3.0])


def test_allow_list_is_small():
    assert "os.system" not in ALLOWED_GLOBALS and "builtins.eval" not in ALLOWED_GLOBALS
    assert all(g.split(".")[0] in ("torch", "collections", "numpy", "_codecs") or g == "argparse.Namespace"
               for g in ALLOWED_GLOBALS)


def test_reference_checkpoint_without_torch(reference_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # any `import torch` would now fail
    ckpt = read_torch_file(reference_dir / "dvt_deit_tiny.pth.tar")
    shapes = json.loads((reference_dir / "dvt_deit_tiny.json").read_text())["state_dict_shapes"]
    state = ckpt["model_state_dict"]
    assert set(state) == set(shapes)
    for key, shape in shapes.items():
        assert type(state[key]) is np.ndarray and state[key].shape == tuple(shape), key
        assert state[key].flags.c_contiguous
    for key in ("flops", "anytime_classification", "dynamic_threshold", "budgeted_batch_classification"):
        assert key in ckpt
    assert ckpt["dynamic_threshold"].shape == (59, 3)


# --------------------------------------------------------------------------------------------------
# Hostile files: each payload would create `marker`; the reader must refuse before running it.
# --------------------------------------------------------------------------------------------------
def _payload(kind: str, marker) -> Tuple[str, Any]:
    """(global named in the error, expression that would create the marker file)."""
    shell = f"touch {shlex.quote(str(marker))}"
    python = f"open({str(marker)!r}, 'w').close()"
    if kind == "os.system":
        return "os.system", Call(Global("os", "system"), (shell,))
    if kind == "posix.system":
        return "posix.system", Call(Global("posix", "system"), (shell,))
    if kind == "builtins.eval":
        return "builtins.eval", Call(Global("builtins", "eval"), (python,))
    if kind == "builtins.exec":
        return "builtins.exec", Call(Global("builtins", "exec"), (python,))
    if kind == "__builtin__.eval":
        return "__builtin__.eval", Call(Global("__builtin__", "eval"), (python,))
    if kind == "subprocess.Popen":
        return "subprocess.Popen", Call(Global("subprocess", "Popen"), (["touch", str(marker)],))
    raise ValueError(kind)


PAYLOADS = ["os.system", "posix.system", "builtins.eval", "builtins.exec", "__builtin__.eval",
            "subprocess.Popen"]


@pytest.mark.parametrize("kind", ["os.system", "posix.system", "builtins.eval", "builtins.exec"])
def test_payloads_are_live_with_plain_pickle(tmp_path, kind):
    """Control: stdlib pickle really runs these payloads, so the refusals below are meaningful."""
    marker = tmp_path / "pwned"
    _, expr = _payload(kind, marker)
    pickle.loads(dumps(expr))
    assert marker.exists()


@pytest.mark.parametrize("container", ["zip", "legacy", "legacy_header"])
@pytest.mark.parametrize("kind", PAYLOADS)
def test_hostile_global_is_refused(tmp_path, kind, container):
    marker = tmp_path / "pwned"
    name, expr = _payload(kind, marker)
    path = tmp_path / f"evil_{container}.pth"
    if container == "zip":
        obj = {"ok": tensor("FloatStorage", "0", 2, 0, (2,), (1,)), "evil": expr}
        write_zip(path, dumps(obj), {"0": np.zeros(2, "<f4").tobytes()})
    elif container == "legacy":
        obj = {"ok": tensor("FloatStorage", "s", 2, 0, (2,), (1,), legacy=True), "evil": expr}
        write_legacy(path, dumps(obj), [("s", 2, np.zeros(2, "<f4").tobytes())])
    else:  # the hostile pickle sits where the magic number belongs
        write_legacy(path, dumps({}), [], header=dumps(expr))
    with pytest.raises(UnsafeCheckpointError) as info:
        read_torch_file(path)
    message = str(info.value)
    assert f"'{name}'" in message and str(path) in message
    assert not marker.exists()


def test_hostile_reduce_class_pickled_by_stdlib(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return os.system, (f"touch {shlex.quote(str(marker))}",)

    path = tmp_path / "evil.pt"
    write_zip(path, pickle.dumps({"state": Evil()}, protocol=4), {})
    with pytest.raises(UnsafeCheckpointError, match=r"'(os|posix)\.system'"):
        read_torch_file(path)
    assert not marker.exists()


def test_allowed_objects_cannot_be_misused(tmp_path):
    # A storage type is not callable, and a dtype cannot be used to reach anything else.
    path = tmp_path / "misuse.pt"
    write_zip(path, dumps(Call(Global("torch", "FloatStorage"), (10,))), {})
    with pytest.raises(CheckpointFormatError, match=str(path)):
        read_torch_file(path)
    path2 = tmp_path / "misuse2.pt"
    write_zip(path2, dumps(Call(Global("_codecs", "encode"), ("x", "rot13"))), {})
    with pytest.raises(CheckpointFormatError, match="latin1"):
        read_torch_file(path2)


@pytest.mark.parametrize("state", [{"fn": 1}, (None, {"fn": Global("collections", "OrderedDict")})])
def test_allowed_globals_cannot_be_modified(tmp_path, state):
    path = tmp_path / "build.pt"
    target = Global("torch._utils", "_rebuild_tensor_v2")
    write_zip(path, dumps([Build(target, state), Build(Global("torch", "FloatStorage"), state)]), {})
    _expect_format_error(path)
    good = tmp_path / "good.pt"
    expected = hand_made_zip(good)
    np.testing.assert_array_equal(read_torch_file(good)["slice"], expected["slice"])


def test_backward_hooks_are_refused(tmp_path):
    path = tmp_path / "hooks.pt"
    hooked = Call(Global("torch._utils", "_rebuild_tensor_v2"),
                  (PersId(("storage", Global("torch", "FloatStorage"), "0", "cpu", 1)), 0, (1,), (1,),
                   False, Call(Global("collections", "OrderedDict"), ([(1, 2)],))))
    write_zip(path, dumps(hooked), {"0": b"\0" * 4})
    with pytest.raises(CheckpointFormatError, match="hooks"):
        read_torch_file(path)


# --------------------------------------------------------------------------------------------------
# Damaged or foreign files.
# --------------------------------------------------------------------------------------------------
def _expect_format_error(path, fragment: str = "") -> str:
    with pytest.raises(CheckpointFormatError) as info:
        read_torch_file(path)
    message = str(info.value)
    assert str(path) in message
    assert fragment.lower() in message.lower(), message
    return message


def test_truncated_zip(tmp_path):
    path = tmp_path / "cut.pth.tar"
    hand_made_zip(path)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    _expect_format_error(path, "zip")


def test_truncated_legacy_inside_storage(tmp_path):
    path = tmp_path / "cut_legacy.pt"
    hand_made_legacy(path)
    raw = path.read_bytes()
    path.write_bytes(raw[:-5])  # inside the last storage's bytes
    _expect_format_error(path, "truncated storage")
    path.write_bytes(raw[:-24 - 4])  # inside the element count of the last storage
    _expect_format_error(path, "truncated")


def test_zip_without_data_pkl(tmp_path):
    path = tmp_path / "nopkl.pt"
    write_zip(path, None, {"0": b"\0" * 4})
    _expect_format_error(path, "data.pkl")


def test_zip_missing_storage(tmp_path):
    path = tmp_path / "nostorage.pt"
    write_zip(path, dumps({"w": tensor("FloatStorage", "7", 4, 0, (4,), (1,))}), {})
    _expect_format_error(path, "missing storage member 'archive/data/7'")


def test_zip_short_storage(tmp_path):
    path = tmp_path / "short.pt"
    write_zip(path, dumps({"w": tensor("FloatStorage", "0", 4, 0, (4,), (1,))}), {"0": b"\0" * 12})
    _expect_format_error(path, "truncated storage")


def test_tensor_outside_its_storage(tmp_path):
    path = tmp_path / "oob.pt"
    write_zip(path, dumps({"w": tensor("FloatStorage", "0", 4, 2, (2, 2), (2, 1))}), {"0": b"\0" * 16})
    _expect_format_error(path, "does not fit")


def test_corrupt_pickle_in_zip(tmp_path):
    path = tmp_path / "badpkl.pt"
    write_zip(path, dumps({"a": [1, 2, 3]})[:-6], {})
    _expect_format_error(path)


def test_random_bytes(tmp_path):
    path = tmp_path / "random.bin"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    _expect_format_error(path, "not a PyTorch checkpoint")


def test_random_bytes_after_pickle_marker(tmp_path):
    path = tmp_path / "random2.bin"
    path.write_bytes(b"\x80\x02" + np.random.default_rng(1).integers(0, 256, 4096, np.uint8).tobytes())
    _expect_format_error(path)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.pt"
    path.write_bytes(b"")
    _expect_format_error(path, "empty")


def test_bad_magic_number(tmp_path):
    path = tmp_path / "magic.pt"
    write_legacy(path, dumps({}), [], header=pickle.dumps(12345, protocol=2))
    _expect_format_error(path, "magic number")


def test_plain_pickle_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "plain.pkl"
    path.write_bytes(pickle.dumps({"a": 1}, protocol=2))
    _expect_format_error(path, "magic number")


def test_old_tar_format(tmp_path):
    import tarfile

    path = tmp_path / "old.tar"
    member = tmp_path / "sys_info"
    member.write_bytes(pickle.dumps({}, protocol=2))
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        tar.add(member, arcname="sys_info")
    _expect_format_error(path, "tar")


# --------------------------------------------------------------------------------------------------
# Round trips against torch.
# --------------------------------------------------------------------------------------------------
def assert_same(ours: Any, theirs: Any, torch, where: str = "root") -> None:
    if isinstance(theirs, torch.Tensor):
        t = theirs.detach()
        if t.dtype == torch.bfloat16:
            t = t.float()
        want = t.numpy().copy(order="C")
        assert type(ours) is np.ndarray, where
        assert ours.flags.c_contiguous, where
        assert ours.dtype == want.dtype and ours.shape == want.shape, where
        assert ours.tobytes() == want.tobytes(), where
    elif isinstance(theirs, torch.Size):
        assert ours == tuple(theirs), where
    elif isinstance(theirs, dict):
        assert type(ours) is type(theirs), where
        assert list(ours) == list(theirs), where
        for key in theirs:
            assert_same(ours[key], theirs[key], torch, f"{where}.{key}")
    elif isinstance(theirs, (list, tuple)):
        assert type(ours) is type(theirs) and len(ours) == len(theirs), where
        for i, (a, b) in enumerate(zip(ours, theirs)):
            assert_same(a, b, torch, f"{where}[{i}]")
    elif isinstance(theirs, np.ndarray):
        assert type(ours) is np.ndarray and ours.dtype == theirs.dtype, where
        np.testing.assert_array_equal(ours, theirs)
    else:
        assert type(ours) is type(theirs) and ours == theirs, where


def _torch_checkpoint(torch) -> Dict[str, Any]:
    g = torch.Generator().manual_seed(0)
    base = torch.randn(6, 8, generator=g)
    shared = torch.arange(30, dtype=torch.float64)
    state = collections.OrderedDict()
    state["linear.weight"] = torch.nn.Parameter(torch.randn(4, 3, generator=g))
    state["linear.bias"] = torch.nn.Parameter(torch.randn(4, generator=g), requires_grad=False)
    state["bn.num_batches_tracked"] = torch.tensor(7)
    return {
        "model_state_dict": state,
        "f32": torch.randn(2, 3, 4, generator=g),
        "f64": torch.randn(5, generator=g, dtype=torch.float64),
        "f16": torch.randn(3, 3, generator=g).half(),
        "bf16": torch.randn(7, generator=g).bfloat16(),
        "i64": torch.arange(-5, 5),
        "i32": torch.arange(6, dtype=torch.int32).reshape(2, 3),
        "i16": torch.tensor([-3, 0, 3], dtype=torch.int16),
        "i8": torch.tensor([-128, 0, 127], dtype=torch.int8),
        "u8": torch.tensor([0, 255], dtype=torch.uint8),
        "bool": torch.tensor([[True, False], [False, True]]),
        "zero_dim": torch.tensor(2.5),
        "empty": torch.zeros(0, 4),
        "transposed": base.t(),
        "slice": base[1:5:2, 3:7],
        "expanded": torch.randn(3, 1, generator=g).expand(3, 4),
        "views": [shared[:10], shared[10:].view(4, 5), shared[5:25:5]],
        "same_tensor_twice": (base, base),
        "dynamic_threshold": torch.rand(59, 3, generator=g),
        "flops": [0.1, 0.3, 0.7],
        "anytime_classification": [71.5, 79.25, 81.0],
        "budgeted_batch_classification": [[0.1, 0.2], [70.0, 71.0]],
        "epoch": 12,
        "arch": "deit_tiny",
        "done": True,
        "nothing": None,
        "size": torch.Size([2, 3]),
        "np_scalar": np.float32(1.25),
        "np_int": np.int64(-4),
        "np_array": np.arange(6, dtype=np.int16).reshape(2, 3),
    }


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_round_trip_against_torch(tmp_path, torch, zip_format):
    obj = _torch_checkpoint(torch)
    path = tmp_path / "ckpt.pth.tar"
    torch.save(obj, path, _use_new_zipfile_serialization=zip_format)
    ours = read_torch_file(str(path))
    theirs = torch.load(path, weights_only=False)
    assert_same(ours, theirs, torch)
    assert ours["size"] == (2, 3)
    views = ours["views"]
    views[0][0] = -1.0  # tensors that shared a storage no longer share memory
    assert views[2][0] == 5.0 and views[1][0, 0] == 10.0


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_non_contiguous_tensor_saved_alone(tmp_path, torch, zip_format):
    t = torch.arange(12, dtype=torch.float32).reshape(3, 4).t()[1:]
    path = tmp_path / "alone.pt"
    torch.save(t, path, _use_new_zipfile_serialization=zip_format)
    ours = read_torch_file(path)
    assert_same(ours, t, torch)


def test_parameter_saved_alone(tmp_path, torch):
    p = torch.nn.Parameter(torch.randn(3, 2))
    path = tmp_path / "param.pt"
    torch.save(p, path)
    assert_same(read_torch_file(path), p, torch)


def test_torch_truncated_legacy(tmp_path, torch):
    path = tmp_path / "cut.pt"
    torch.save({"w": torch.randn(100)}, path, _use_new_zipfile_serialization=False)
    raw = path.read_bytes()
    path.write_bytes(raw[:-100])
    _expect_format_error(path, "truncated storage")


def test_torch_dtype_without_legacy_storage_is_refused(tmp_path, torch):
    path = tmp_path / "u16.pt"
    torch.save({"w": torch.zeros(2, dtype=torch.uint16)}, path)
    with pytest.raises(UnsafeCheckpointError, match=str(path)):
        read_torch_file(path)
