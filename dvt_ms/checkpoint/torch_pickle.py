"""Read PyTorch checkpoint files without torch and without running code from the file.

Over 400 lines on purpose: the restricted unpickler is one security boundary, audited as one file.

``torch.save`` writes a pickle. Unpickling it normally may call any importable function the file names,
so a hostile checkpoint can run arbitrary code. This module uses a restricted unpickler instead:

* every global the pickle names is looked up in a fixed allow-list (:data:`ALLOWED_GLOBALS`); any other
  name raises :class:`UnsafeCheckpointError` before anything is called;
* the allowed names resolve to small functions of this module (never to torch, and never to the real
  numpy classes), which check their arguments and build plain Python / numpy values;
* tensors and parameters become C-contiguous :class:`numpy.ndarray` copies of their storage.

Two container layouts are understood:

* the zip layout that torch >= 1.6 writes by default: ``<prefix>/data.pkl`` plus one raw storage per
  ``<prefix>/data/<key>`` member and an optional ``<prefix>/byteorder`` member;
* the legacy layout (torch < 1.6, or ``_use_new_zipfile_serialization=False``): a magic number, a
  protocol version and a ``sys_info`` dict, the main pickle, the list of storage keys, and then every
  storage as an int64 element count followed by its raw bytes.

The tar layout of very old torch versions is recognised and refused with a clear message.
"""
from __future__ import annotations

import collections
import io
import logging
import os
import pickle
import re
import struct
import zipfile
from typing import IO, Any, Callable, Dict, Optional, Tuple, Union

import numpy as np

from .errors import CheckpointError

__all__ = [
    "ALLOWED_GLOBALS",
    "CheckpointFormatError",
    "UnsafeCheckpointError",
    "read_torch_file",
]

logger = logging.getLogger(__name__)

LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION = 1001


class UnsafeCheckpointError(CheckpointError):
    """The checkpoint's pickle names a global that this reader refuses to resolve."""


class CheckpointFormatError(CheckpointError):
    """The checkpoint is truncated, corrupt, or not a PyTorch checkpoint this reader understands."""


class _Refusal(Exception):
    """Raised by the helpers below; turned into :class:`CheckpointFormatError` with the file name."""


# --------------------------------------------------------------------------------------------------
# Objects handed to the unpickler. They have no ``__dict__`` and refuse attribute assignment, so the
# BUILD opcode cannot change them, and they are created afresh for every file that is read.
# --------------------------------------------------------------------------------------------------
class _Sealed:
    __slots__ = ()

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} objects are read-only")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} objects are read-only")

    def __reduce__(self) -> Any:
        raise TypeError(f"{type(self).__name__} objects cannot be pickled")


class _StorageKind(_Sealed):
    """Stands for a torch storage class such as ``torch.FloatStorage``; it cannot be called."""

    __slots__ = ("name", "raw_dtype", "decode")

    def __init__(self, name: str, raw_dtype: np.dtype, decode: Callable[[np.ndarray], np.ndarray]) -> None:
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "raw_dtype", raw_dtype)
        object.__setattr__(self, "decode", decode)

    def __repr__(self) -> str:
        return f"<storage kind {self.name}>"


class _Token(_Sealed):
    """A named placeholder (used for ``numpy.ndarray``); it cannot be called."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        object.__setattr__(self, "name", name)

    def __repr__(self) -> str:
        return f"<token {self.name}>"


class _Function(_Sealed):
    """An allowed global: a checked function of this module, called by the REDUCE opcode."""

    __slots__ = ("name", "fn")

    def __init__(self, name: str, fn: Callable[..., Any]) -> None:
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "fn", fn)

    def __call__(self, *args: Any) -> Any:
        return self.fn(*args)

    def __repr__(self) -> str:
        return f"<allowed global {self.name}>"


class _StorageRef(_Sealed):
    """What a persistent id resolves to: a storage's elements (``None`` during a dry run)."""

    __slots__ = ("key", "kind", "elements")

    def __init__(self, key: str, kind: _StorageKind, elements: Optional[np.ndarray]) -> None:
        object.__setattr__(self, "key", key)
        object.__setattr__(self, "kind", kind)
        object.__setattr__(self, "elements", elements)

    def __repr__(self) -> str:
        return f"<storage {self.key!r} of kind {self.kind.name}>"


# --------------------------------------------------------------------------------------------------
# Storage element types.
# --------------------------------------------------------------------------------------------------
def _decode_plain(native: np.dtype) -> Callable[[np.ndarray], np.ndarray]:
    def decode(view: np.ndarray) -> np.ndarray:
        out = np.empty(view.shape, dtype=native)
        np.copyto(out, view)
        return out

    return decode


def _decode_bool(view: np.ndarray) -> np.ndarray:
    out = np.empty(view.shape, dtype=np.bool_)
    np.not_equal(view, 0, out=out)
    return out


def _decode_bfloat16(view: np.ndarray) -> np.ndarray:
    # bfloat16 is the upper half of a float32: widen the 16 bits and move them to the high half.
    out = np.empty(view.shape, dtype=np.uint32)
    np.copyto(out, view, casting="unsafe")
    out <<= np.uint32(16)
    return out.view(np.float32)


# name -> (dtype of the raw elements, decoder producing the native result)
_STORAGE_TYPES: Dict[str, Tuple[np.dtype, Callable[[np.ndarray], np.ndarray]]] = {
    "FloatStorage": (np.dtype(np.float32), _decode_plain(np.dtype(np.float32))),
    "DoubleStorage": (np.dtype(np.float64), _decode_plain(np.dtype(np.float64))),
    "HalfStorage": (np.dtype(np.float16), _decode_plain(np.dtype(np.float16))),
    "BFloat16Storage": (np.dtype(np.uint16), _decode_bfloat16),
    "LongStorage": (np.dtype(np.int64), _decode_plain(np.dtype(np.int64))),
    "IntStorage": (np.dtype(np.int32), _decode_plain(np.dtype(np.int32))),
    "ShortStorage": (np.dtype(np.int16), _decode_plain(np.dtype(np.int16))),
    "CharStorage": (np.dtype(np.int8), _decode_plain(np.dtype(np.int8))),
    "ByteStorage": (np.dtype(np.uint8), _decode_plain(np.dtype(np.uint8))),
    "BoolStorage": (np.dtype(np.uint8), _decode_bool),
}

_NUMPY_CORE_MODULES = ("numpy.core.multiarray", "numpy._core.multiarray")

#: Every global a checkpoint may name, as ``module.name``. Anything else is refused.
ALLOWED_GLOBALS: Tuple[str, ...] = tuple(
    [
        "torch._utils._rebuild_tensor",
        "torch._utils._rebuild_tensor_v2",
        "torch._utils._rebuild_parameter",
        "torch._utils._rebuild_parameter_with_state",
        "collections.OrderedDict",
        "torch.Size",
        "torch.device",
        "numpy.dtype",
        "numpy.ndarray",
        "_codecs.encode",
        "argparse.Namespace",
    ]
    + [f"{module}.{name}" for module in ("torch", "torch.cuda") for name in _STORAGE_TYPES]
    + [f"{module}.{name}" for module in _NUMPY_CORE_MODULES for name in ("scalar", "_reconstruct")]
)

_DTYPE_SPEC = re.compile(r"^[<>|=]?[A-Za-z][A-Za-z0-9]{0,15}(\[[A-Za-z0-9]{1,8}\])?$")


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _int_tuple(value: Any, what: str) -> Tuple[int, ...]:
    if not isinstance(value, (tuple, list)) or not all(_is_int(v) for v in value):
        raise _Refusal(f"tensor {what} must be a sequence of integers, got {value!r:.80}")
    return tuple(int(v) for v in value)


# --------------------------------------------------------------------------------------------------
# The allowed globals.
# --------------------------------------------------------------------------------------------------
def _rebuild_tensor(storage: Any, storage_offset: Any, size: Any, stride: Any) -> Optional[np.ndarray]:
    """Build a C-contiguous copy of the tensor ``storage[offset + sum(i_k * stride_k)]``."""
    if not isinstance(storage, _StorageRef):
        raise _Refusal(f"a tensor is rebuilt from {type(storage).__name__}, not from a storage")
    shape = _int_tuple(size, "size")
    strides = _int_tuple(stride, "stride")
    if not _is_int(storage_offset):
        raise _Refusal(f"tensor storage offset must be an integer, got {storage_offset!r:.80}")
    offset = int(storage_offset)
    if len(shape) != len(strides):
        raise _Refusal(f"tensor size {shape} and stride {strides} have different lengths")
    if any(s < 0 for s in shape) or any(s < 0 for s in strides) or offset < 0:
        raise _Refusal(f"negative tensor size, stride or offset: {shape}, {strides}, {offset}")
    elements = storage.elements
    if elements is None:  # dry run: only the layout of the file is being learned
        return None
    kind = storage.kind
    if any(s == 0 for s in shape):
        return kind.decode(np.empty(shape, dtype=elements.dtype))
    last = offset + sum((n - 1) * s for n, s in zip(shape, strides))
    if last >= elements.shape[0]:
        raise _Refusal(
            f"tensor of size {shape}, stride {strides} and offset {offset} does not fit in storage "
            f"{storage.key!r} of {elements.shape[0]} elements"
        )
    itemsize = elements.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(
        elements[offset:], shape=shape, strides=tuple(s * itemsize for s in strides), writeable=False
    )
    return kind.decode(view)


def _check_hooks(backward_hooks: Any) -> None:
    if not isinstance(backward_hooks, dict) or backward_hooks:
        raise _Refusal("tensor has backward hooks; only an empty hook dict is accepted")


def _rebuild_tensor_v2(
    storage: Any,
    storage_offset: Any,
    size: Any,
    stride: Any,
    requires_grad: Any,
    backward_hooks: Any,
    metadata: Any = None,
) -> Optional[np.ndarray]:
    """Newer form of :func:`_rebuild_tensor`; ``requires_grad`` and tensor metadata are dropped."""
    if not isinstance(requires_grad, bool):
        raise _Refusal(f"requires_grad must be a bool, got {requires_grad!r:.80}")
    _check_hooks(backward_hooks)
    if metadata is not None and not isinstance(metadata, dict):
        raise _Refusal(f"tensor metadata must be a dict, got {type(metadata).__name__}")
    return _rebuild_tensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data: Any, requires_grad: Any, backward_hooks: Any) -> Optional[np.ndarray]:
    """A parameter is returned as its plain array."""
    if data is not None and not isinstance(data, np.ndarray):
        raise _Refusal(f"a parameter wraps {type(data).__name__}, not a tensor")
    if not isinstance(requires_grad, bool):
        raise _Refusal(f"requires_grad must be a bool, got {requires_grad!r:.80}")
    _check_hooks(backward_hooks)
    return data


def _rebuild_parameter_with_state(
    data: Any, requires_grad: Any, backward_hooks: Any, state: Any
) -> Optional[np.ndarray]:
    """Like :func:`_rebuild_parameter`; the extra Python attributes in ``state`` are dropped."""
    if state is not None and not isinstance(state, (dict, tuple)):
        raise _Refusal(f"parameter state must be a dict or tuple, got {type(state).__name__}")
    return _rebuild_parameter(data, requires_grad, backward_hooks)


class PlainNamespace(dict):
    """An ``argparse.Namespace`` (DeiT/EViT save their ``args``) read as plain data: a dict of its attributes.

    The pickle creates it empty (``NEWOBJ``: ``dict.__new__``, nothing else runs) and hands the attributes
    to :meth:`__setstate__`, which only accepts a dict with string keys. Its values are whatever the
    rest of the restricted unpickler built, so the allow-list rules hold inside it too.
    """

    __slots__ = ()

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
            raise _Refusal("argparse.Namespace with a state that is not a dict of attributes")
        self.update(state)

    def __reduce__(self) -> Any:
        return (dict, (dict(self),))


def _ordered_dict(*args: Any) -> "collections.OrderedDict[Any, Any]":
    if len(args) > 1 or (args and not isinstance(args[0], (list, tuple, dict))):
        raise _Refusal("collections.OrderedDict called with unexpected arguments")
    return collections.OrderedDict(*args)


def _torch_size(*args: Any) -> Tuple[int, ...]:
    if len(args) > 1:
        raise _Refusal("torch.Size called with more than one argument")
    return _int_tuple(args[0] if args else (), "torch.Size")


def _torch_device(kind: Any, index: Any = None) -> str:
    if not isinstance(kind, str) or len(kind) > 64:
        raise _Refusal(f"torch.device called with {kind!r:.80}")
    if index is None:
        return kind
    if not _is_int(index):
        raise _Refusal(f"torch.device index must be an integer, got {index!r:.80}")
    return f"{kind}:{int(index)}"


def _numpy_dtype(spec: Any, align: Any = False, copy: Any = True) -> np.dtype:
    if not isinstance(spec, str) or not _DTYPE_SPEC.match(spec):
        raise _Refusal(f"numpy.dtype called with {spec!r:.80}")
    # Always a fresh object: the BUILD opcode that follows must never alter numpy's shared dtypes.
    return np.dtype(spec, align=bool(align), copy=True)


def _numpy_scalar(dtype: Any, data: Any = None) -> Any:
    if not isinstance(dtype, np.dtype) or dtype.hasobject:
        raise _Refusal(f"numpy scalar of unsupported dtype {dtype!r:.80}")
    if not isinstance(data, bytes) or len(data) != dtype.itemsize:
        raise _Refusal(f"numpy scalar of dtype {dtype} needs {dtype.itemsize} bytes of data")
    return np.frombuffer(data, dtype=dtype).copy()[0]


def _make_numpy_reconstruct(ndarray_token: _Token) -> Callable[..., np.ndarray]:
    def reconstruct(subtype: Any, shape: Any, typecode: Any) -> np.ndarray:
        # numpy pickles an array as an empty 1-byte array that BUILD then fills (numpy checks sizes).
        if subtype is not ndarray_token or tuple(shape) != (0,) or typecode not in (b"b", "b"):
            raise _Refusal("numpy _reconstruct called with unexpected arguments")
        return np.ndarray((0,), dtype=np.int8)

    return reconstruct


def _codecs_encode(text: Any, encoding: Any = None) -> bytes:
    if not isinstance(text, str) or not isinstance(encoding, str):
        raise _Refusal("_codecs.encode called with unexpected arguments")
    if encoding.lower().replace("_", "-") not in ("latin1", "latin-1"):
        raise _Refusal(f"_codecs.encode is only allowed with the latin1 encoding, not {encoding!r:.40}")
    return text.encode("latin-1")


def _allowed_globals() -> Dict[Tuple[str, str], Any]:
    """Fresh objects for every allowed global (a new set for each file read)."""
    table: Dict[Tuple[str, str], Any] = {}

    def function(module: str, name: str, fn: Callable[..., Any]) -> None:
        table[(module, name)] = _Function(f"{module}.{name}", fn)

    function("torch._utils", "_rebuild_tensor", _rebuild_tensor)
    function("torch._utils", "_rebuild_tensor_v2", _rebuild_tensor_v2)
    function("torch._utils", "_rebuild_parameter", _rebuild_parameter)
    function("torch._utils", "_rebuild_parameter_with_state", _rebuild_parameter_with_state)
    function("collections", "OrderedDict", _ordered_dict)
    function("torch", "Size", _torch_size)
    function("torch", "device", _torch_device)
    function("numpy", "dtype", _numpy_dtype)
    function("_codecs", "encode", _codecs_encode)
    table[("argparse", "Namespace")] = PlainNamespace  # a type: the NEWOBJ opcode needs one
    ndarray_token = _Token("numpy.ndarray")
    table[("numpy", "ndarray")] = ndarray_token
    for module in _NUMPY_CORE_MODULES:
        function(module, "scalar", _numpy_scalar)
        function(module, "_reconstruct", _make_numpy_reconstruct(ndarray_token))
    for module in ("torch", "torch.cuda"):
        for name, (raw_dtype, decode) in _STORAGE_TYPES.items():
            table[(module, name)] = _StorageKind(f"{module}.{name}", raw_dtype, decode)
    assert sorted(f"{m}.{n}" for m, n in table) == sorted(ALLOWED_GLOBALS)
    return table


# --------------------------------------------------------------------------------------------------
# The unpickler.
# --------------------------------------------------------------------------------------------------
class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves globals through the allow-list and persistent ids through ``storage_loader``."""

    def __init__(
        self,
        file: IO[bytes],
        path: str,
        allowed: Dict[Tuple[str, str], Any],
        storage_loader: Optional[Callable[[Any], _StorageRef]] = None,
    ) -> None:
        super().__init__(file, encoding="utf-8")
        self._path = path
        self._allowed = allowed
        self._storage_loader = storage_loader

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except (KeyError, TypeError):
            pass
        raise UnsafeCheckpointError(
            f"{self._path}: the checkpoint's pickle refers to global '{module}.{name}', which is not "
            "allowed; refusing to load it (only tensor/storage rebuild helpers and a few plain "
            "types are accepted)"
        )

    def persistent_load(self, pid: Any) -> Any:
        if self._storage_loader is None:
            raise _Refusal(f"unexpected persistent id {pid!r:.120}")
        return self._storage_loader(pid)


def _unpickle(file: IO[bytes], path: str, allowed: Dict[Tuple[str, str], Any],
              storage_loader: Optional[Callable[[Any], _StorageRef]] = None) -> Any:
    return _RestrictedUnpickler(file, path, allowed, storage_loader).load()


def _parse_pid(pid: Any, length: int) -> Tuple[_StorageKind, str, int, Any]:
    """Check a ``('storage', kind, key, location, numel[, view_metadata])`` persistent id."""
    if not isinstance(pid, tuple) or len(pid) != length or pid[0] != "storage":
        raise _Refusal(f"unsupported persistent id {pid!r:.120}")
    kind, key, numel = pid[1], pid[2], pid[4]
    if not isinstance(kind, _StorageKind):
        raise _Refusal(f"persistent id names {kind!r:.80}, which is not a storage type")
    if not isinstance(key, str) or not _is_int(numel) or numel < 0:
        raise _Refusal(f"malformed storage persistent id {pid!r:.120}")
    return kind, key, int(numel), (pid[5] if length > 5 else None)


def _elements(raw: bytes, kind: _StorageKind, little_endian: bool, numel: int) -> np.ndarray:
    dtype = kind.raw_dtype.newbyteorder("<" if little_endian else ">")
    return np.frombuffer(raw, dtype=dtype, count=numel)


# --------------------------------------------------------------------------------------------------
# Zip layout.
# --------------------------------------------------------------------------------------------------
def _read_zip(file: IO[bytes], path: str) -> Any:
    try:
        archive = zipfile.ZipFile(file)
    except zipfile.BadZipFile as exc:
        raise _Refusal(f"not a readable zip archive, the file may be truncated or corrupt ({exc})") from exc
    with archive:
        names = archive.namelist()
        pickles = [n for n in names if n == "data.pkl" or n.endswith("/data.pkl")]
        if not pickles:
            raise _Refusal("the zip archive has no 'data.pkl' member, so it is not a PyTorch checkpoint")
        if len(pickles) > 1:
            raise _Refusal(f"the zip archive has several 'data.pkl' members: {pickles[:4]}")
        prefix = pickles[0][: -len("data.pkl")]
        little_endian = True
        if prefix + "byteorder" in names:
            order = archive.read(prefix + "byteorder").decode("ascii", "replace").strip()
            if order not in ("little", "big"):
                raise _Refusal(f"unknown byte order {order!r:.40} in '{prefix}byteorder'")
            little_endian = order == "little"
        logger.debug("%s: zip checkpoint, record prefix %r, %s endian", path, prefix,
                     "little" if little_endian else "big")

        raw_storages: Dict[str, bytes] = {}

        def load_storage(pid: Any) -> _StorageRef:
            kind, key, numel, _ = _parse_pid(pid, 5)
            nbytes = numel * kind.raw_dtype.itemsize
            raw = raw_storages.get(key)
            if raw is None:
                member = f"{prefix}data/{key}"
                try:
                    info = archive.getinfo(member)
                except KeyError:
                    raise _Refusal(f"missing storage member '{member}'") from None
                if info.file_size < nbytes:
                    raise _Refusal(f"truncated storage '{member}': {info.file_size} bytes, "
                                   f"expected {nbytes}")
                with archive.open(info) as member_file:
                    raw = member_file.read(info.file_size)
                if len(raw) < nbytes:
                    raise _Refusal(f"truncated storage '{member}': read {len(raw)} of {nbytes} bytes")
                raw_storages[key] = raw
            elif len(raw) < nbytes:
                raise _Refusal(f"storage {key!r} is used with {numel} elements but holds {len(raw)} bytes")
            return _StorageRef(key, kind, _elements(raw, kind, little_endian, numel))

        data = archive.read(pickles[0])
        result = _unpickle(io.BytesIO(data), path, _allowed_globals(), load_storage)
        logger.debug("%s: read %d storages", path, len(raw_storages))
        return result


# --------------------------------------------------------------------------------------------------
# Legacy layout.
# --------------------------------------------------------------------------------------------------
def _read_legacy(file: IO[bytes], path: str) -> Any:
    allowed = _allowed_globals()
    magic = _unpickle(file, path, allowed)
    if not _is_int(magic) or magic != LEGACY_MAGIC_NUMBER:
        raise _Refusal(f"bad magic number {magic!r:.40}; not a PyTorch checkpoint")
    protocol = _unpickle(file, path, allowed)
    if protocol != LEGACY_PROTOCOL_VERSION:
        raise _Refusal(f"unsupported legacy protocol version {protocol!r:.40}")
    sys_info = _unpickle(file, path, allowed)
    if not isinstance(sys_info, dict):
        raise _Refusal("the legacy header has no sys_info dict")
    little_endian = bool(sys_info.get("little_endian", True))
    main_offset = file.tell()

    # First pass: learn the type and size of every storage; tensors are not built yet.
    layout: Dict[str, Tuple[_StorageKind, int]] = {}

    def learn_storage(pid: Any) -> _StorageRef:
        kind, key, numel, _ = _parse_pid(pid, 6)
        known = layout.setdefault(key, (kind, numel))
        if known[0].raw_dtype != kind.raw_dtype or known[1] != numel:
            raise _Refusal(f"storage {key!r} is described inconsistently")
        return _StorageRef(key, kind, None)

    _unpickle(file, path, allowed, learn_storage)
    keys = _unpickle(file, path, allowed)
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise _Refusal("the list of storage keys is malformed")
    missing = set(layout) - set(keys)
    if missing:
        raise _Refusal(f"storages {sorted(missing)[:4]} are used but not stored")

    count_format = "<q" if little_endian else ">q"
    raw_storages: Dict[str, bytes] = {}
    for key in keys:
        if key not in layout:
            raise _Refusal(f"storage {key!r} is stored but its type is unknown")
        kind, numel = layout[key]
        header = file.read(8)
        if len(header) < 8:
            raise _Refusal(f"truncated file: storage {key!r} is missing")
        (count,) = struct.unpack(count_format, header)
        if count != numel:
            raise _Refusal(f"storage {key!r} holds {count} elements, expected {numel}")
        nbytes = numel * kind.raw_dtype.itemsize
        raw = file.read(nbytes)
        if len(raw) < nbytes:
            raise _Refusal(f"truncated storage {key!r}: read {len(raw)} of {nbytes} bytes")
        raw_storages[key] = raw

    # Second pass: the same main pickle again, now with the storage bytes at hand.
    def load_storage(pid: Any) -> _StorageRef:
        kind, key, numel, view = _parse_pid(pid, 6)
        elements = _elements(raw_storages[key], kind, little_endian, numel)
        if view is None:
            return _StorageRef(key, kind, elements)
        if (not isinstance(view, tuple) or len(view) != 3 or not isinstance(view[0], str)
                or not _is_int(view[1]) or not _is_int(view[2])):
            raise _Refusal(f"malformed storage view {view!r:.80}")
        view_key, start, size = view[0], int(view[1]), int(view[2])
        if start < 0 or size < 0 or start + size > numel:
            raise _Refusal(f"storage view {view_key!r} [{start}, {start + size}) is outside "
                           f"storage {key!r} of {numel} elements")
        return _StorageRef(view_key, kind, elements[start:start + size])

    file.seek(main_offset)
    result = _unpickle(file, path, _allowed_globals(), load_storage)
    logger.debug("%s: legacy checkpoint, read %d storages", path, len(raw_storages))
    return result


# --------------------------------------------------------------------------------------------------
# Entry point.
# --------------------------------------------------------------------------------------------------
def _read(file: IO[bytes], path: str) -> Any:
    head = file.read(512)
    file.seek(0)
    if not head:
        raise _Refusal("the file is empty")
    if head[:2] == b"PK":
        return _read_zip(file, path)
    if len(head) >= 262 and head[257:262] == b"ustar":
        raise _Refusal("this is the tar-based checkpoint format of very old torch versions, which is "
                       "not supported; re-save it with a recent torch")
    if head[:1] == b"\x80":
        return _read_legacy(file, path)
    raise _Refusal("not a PyTorch checkpoint (neither a zip archive nor a legacy pickle)")


def read_torch_file(path: Union[str, "os.PathLike[str]"]) -> Any:
    """Load a ``torch.save`` file without torch and without executing anything from it.

    Tensors and parameters come back as C-contiguous :class:`numpy.ndarray` copies (bfloat16 as
    float32); dicts, OrderedDicts, lists, tuples and plain Python scalars and strings stay as they are.

    Raises:
        UnsafeCheckpointError: the pickle names a global outside :data:`ALLOWED_GLOBALS`.
        CheckpointFormatError: the file is truncated, corrupt or not a PyTorch checkpoint.
        OSError: the file cannot be opened.
    """
    name = os.fsdecode(os.fspath(path))
    with open(path, "rb") as file:
        try:
            result = _read(file, name)
        except (UnsafeCheckpointError, CheckpointFormatError, MemoryError):
            raise
        except _Refusal as exc:
            raise CheckpointFormatError(f"{name}: {exc}") from exc
        except Exception as exc:  # anything the pickle or zip machinery raised on malformed input
            raise CheckpointFormatError(
                f"{name}: corrupt or truncated checkpoint ({type(exc).__name__}: {exc})"
            ) from exc
    logger.debug("read checkpoint %s", name)
    return result
