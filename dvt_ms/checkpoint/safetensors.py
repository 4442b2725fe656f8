"""Read ``.safetensors`` files (timm / Hugging Face hub weights) without torch or the safetensors package.

Layout: an 8-byte little-endian header length ``N``, ``N`` bytes of UTF-8 JSON, then the raw tensor
data. The header maps each tensor name to ``{"dtype", "shape", "data_offsets": [begin, end]}`` (offsets
into the data that follows the header) and may hold ``"__metadata__"`` (a string-to-string table).

The header is checked completely before any tensor is read: its length fits the file, it is a JSON
object, every dtype is known, shapes are lists of non-negative integers, every tensor's byte range
matches its shape and dtype, lies inside the file, and no two ranges overlap. Any problem is a
:class:`~dvt_ms.checkpoint.errors.CheckpointError` naming the file.
"""
import json
import os
from pathlib import Path
from typing import Any, Dict, List, Tuple, Union

import numpy as np

from .errors import CheckpointError

__all__ = ["DTYPES", "MAX_HEADER_BYTES", "is_safetensors_file", "read_safetensors"]

PathLike = Union[str, os.PathLike]
#: safetensors dtype name -> numpy little-endian dtype of the stored bytes (BF16 is widened to float32).
DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2", "I64": "<i8", "I32": "<i4", "I16": "<i2",
          "I8": "i1", "U8": "u1", "BOOL": "u1"}
MAX_HEADER_BYTES = 100 * 1024 * 1024
METADATA = "__metadata__"


def is_safetensors_file(path: PathLike) -> bool:
    """Whether ``path`` looks like a safetensors file (by its suffix, or a header length then ``{``)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        return True
    with open(path, "rb") as handle:
        head = handle.read(9)
    if len(head) < 9 or head[8:9] != b"{":
        return False
    return 0 < int.from_bytes(head[:8], "little") <= min(MAX_HEADER_BYTES, path.stat().st_size - 8)


def _header(path: Path, size: int, handle) -> Tuple[Dict[str, Any], int]:
    if size < 8:
        raise CheckpointError(f"{path}: not a safetensors file ({size} bytes, shorter than the 8-byte header length)")
    length = int.from_bytes(handle.read(8), "little")
    if length == 0 or length > MAX_HEADER_BYTES or 8 + length > size:
        raise CheckpointError(f"{path}: bad safetensors header length {length} (file of {size} bytes)")
    try:
        header = json.loads(handle.read(length).decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise CheckpointError(f"{path}: safetensors header is not valid JSON ({exc})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: safetensors header is not a JSON object")
    return header, 8 + length


def _check_entries(path: Path, header: Dict[str, Any], data_size: int) -> List[Tuple[int, int, str]]:
    ranges = []
    for name, entry in header.items():
        if name == METADATA:
            if not isinstance(entry, dict) or not all(isinstance(v, str) for v in entry.values()):
                raise CheckpointError(f"{path}: {METADATA} must map strings to strings")
            continue
        if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
            raise CheckpointError(f"{path}: tensor {name!r}: expected dtype, shape and data_offsets")
        dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if dtype not in DTYPES:
            raise CheckpointError(f"{path}: tensor {name!r}: unsupported dtype {dtype!r} "
                                  f"(known: {', '.join(DTYPES)})")
        if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                                  for d in shape):
            raise CheckpointError(f"{path}: tensor {name!r}: bad shape {shape!r}")
        if not (isinstance(offsets, list) and len(offsets) == 2
                and all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)):
            raise CheckpointError(f"{path}: tensor {name!r}: bad data_offsets {offsets!r}")
        begin, end = offsets
        expected = int(np.prod(shape, dtype=np.int64)) * np.dtype(DTYPES[dtype]).itemsize
        if not 0 <= begin <= end <= data_size:
            raise CheckpointError(f"{path}: tensor {name!r}: data_offsets {offsets} outside the {data_size} "
                                  "data bytes of the file")
        if end - begin != expected:
            raise CheckpointError(f"{path}: tensor {name!r}: {end - begin} data bytes for shape {shape} of "
                                  f"{dtype} ({expected} expected)")
        ranges.append((begin, end, name))
    ranges.sort()
    for (b1, e1, n1), (b2, e2, n2) in zip(ranges, ranges[1:]):
        if b2 < e1:
            raise CheckpointError(f"{path}: tensors {n1!r} [{b1}, {e1}) and {n2!r} [{b2}, {e2}) overlap")
    return ranges


def read_safetensors(path: PathLike) -> Tuple[Dict[str, np.ndarray], Dict[str, str]]:
    """``(tensors, metadata)`` of a safetensors file; tensors as numpy arrays (BF16 read as float32)."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as handle:
        header, start = _header(path, size, handle)
        ranges = _check_entries(path, header, size - start)
        tensors: Dict[str, np.ndarray] = {}
        for begin, end, name in ranges:
            entry = header[name]
            handle.seek(start + begin)
            raw = handle.read(end - begin)
            array = np.frombuffer(raw, dtype=DTYPES[entry["dtype"]]).reshape(entry["shape"])
            if entry["dtype"] == "BF16":
                array = (array.astype(np.uint32) << 16).view(np.float32)
            elif entry["dtype"] == "BOOL":
                array = array.astype(bool)
            tensors[name] = np.array(array, dtype=array.dtype.newbyteorder("="))
    return tensors, dict(header.get(METADATA) or {})
