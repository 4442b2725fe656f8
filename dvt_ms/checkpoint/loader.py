"""Load official PyTorch checkpoints and MindSpore checkpoints; save MindSpore checkpoints atomically."""
import json
import logging
import os
import zipfile
from pathlib import Path
from typing import Any, Dict, Iterable, Mapping, Tuple, Union

import mindspore as ms
import numpy as np
from mindspore import nn

from ..utils.atomic import atomic_path
from .errors import CheckpointError, CheckpointMismatchError
from .key_mapping import map_state_dict
from .torch_pickle import read_torch_file

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]
METADATA_KEY = "dvt_ms_metadata"
# Where the official scripts put the weights: DVT uses model_state_dict, DeiT/EViT use model.
STATE_DICT_KEYS = ("model_state_dict", "model", "state_dict")
_PICKLE_PROTOCOL_2_PLUS = 0x80


def _is_torch_file(path: Path) -> bool:
    if zipfile.is_zipfile(path):
        return True
    with open(path, "rb") as handle:
        return handle.read(1) == bytes([_PICKLE_PROTOCOL_2_PLUS])


def _split_torch_checkpoint(obj: Any, path: Path) -> Tuple[Dict[str, np.ndarray], Dict[str, Any]]:
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path}: expected a dict at the top level, found {type(obj).__name__}")
    for key in STATE_DICT_KEYS:
        if key in obj and isinstance(obj[key], Mapping):
            metadata = {k: v for k, v in obj.items() if k != key}
            return dict(obj[key]), metadata
    if obj and all(isinstance(v, np.ndarray) for v in obj.values()):
        return dict(obj), {}
    raise CheckpointError(f"{path}: no state dict found (looked for {', '.join(STATE_DICT_KEYS)} "
                          f"or a bare state dict); top-level keys: {', '.join(map(str, obj))}")


def _strip_module_prefix(state_dict: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    prefix = "module."
    if state_dict and all(k.startswith(prefix) for k in state_dict):
        return {k[len(prefix):]: v for k, v in state_dict.items()}
    return state_dict


def _encode_metadata(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return {"__ndarray__": value.tolist(), "dtype": str(value.dtype)}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Mapping):
        return {str(k): _encode_metadata(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_encode_metadata(v) for v in value]
    return value


def _decode_metadata(value: Any) -> Any:
    if isinstance(value, dict):
        if "__ndarray__" in value:
            return np.asarray(value["__ndarray__"], dtype=value["dtype"])
        return {k: _decode_metadata(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode_metadata(v) for v in value]
    return value


def _read_mindspore_checkpoint(path: Path) -> Tuple[Dict[str, np.ndarray], Dict[str, Any]]:
    try:
        raw = ms.load_checkpoint(str(path))
    except (ValueError, RuntimeError, OSError) as exc:
        raise CheckpointError(f"{path}: not a readable MindSpore checkpoint ({exc})") from None
    metadata: Dict[str, Any] = {}
    weights: Dict[str, np.ndarray] = {}
    for name, value in raw.items():
        if name == METADATA_KEY:
            try:
                metadata.update(_decode_metadata(json.loads(value)))
            except (TypeError, ValueError) as exc:
                raise CheckpointError(f"{path}: corrupt {METADATA_KEY} entry ({exc})") from None
        elif isinstance(value, str):
            metadata[name] = value
        else:
            weights[name] = value.asnumpy()
    return weights, metadata


def read_checkpoint(path: PathLike) -> Tuple[Dict[str, np.ndarray], Dict[str, Any]]:
    """Read ``(weights, metadata)`` from any supported file, with weights under MindSpore names."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if _is_torch_file(path):
        state_dict, metadata = _split_torch_checkpoint(read_torch_file(path), path)
        try:
            return map_state_dict(_strip_module_prefix(state_dict)), metadata
        except ValueError as exc:
            raise CheckpointError(f"{path}: {exc}") from None
    return _read_mindspore_checkpoint(path)


def check_state(expected: Mapping[str, Tuple[int, ...]], found: Mapping[str, np.ndarray], header: str) -> None:
    """Raise one :class:`CheckpointMismatchError`, under ``header``, listing every missing, unexpected and
    misshapen key of ``found`` against the ``expected`` shapes."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    misshapen = sorted(
        f"{name}: checkpoint {tuple(found[name].shape)} vs model {tuple(expected[name])}"
        for name in set(expected) & set(found)
        if tuple(found[name].shape) != tuple(expected[name]))
    problems = [(f"{len(missing)} missing key(s)", missing),
                (f"{len(unexpected)} unexpected key(s)", unexpected),
                (f"{len(misshapen)} shape mismatch(es)", misshapen)]
    problems = [(title, items) for title, items in problems if items]
    if problems:
        lines = [header]
        for title, items in problems:
            lines.append(f"  {title}:")
            lines.extend(f"    {item}" for item in items)
        raise CheckpointMismatchError("\n".join(lines))


def check_finite(arrays: Mapping[str, np.ndarray], path: PathLike, prefix: str = "") -> None:
    """Raise :class:`CheckpointError` naming the first floating-point array that holds NaN or Inf."""
    for name, value in arrays.items():
        if np.issubdtype(value.dtype, np.floating) and not np.all(np.isfinite(value)):
            raise CheckpointError(f"{path}: {prefix}{name} contains NaN or Inf")


def check_dtypes(params: Iterable[ms.Parameter], weights: Mapping[str, np.ndarray], path: PathLike,
                 prefix: str = "") -> None:
    """Raise :class:`CheckpointError` naming the first float parameter that would get integer/bool values.

    Casting an integer tensor into a float parameter "works" and silently turns e.g. a wrongly mapped
    index table into weights; a checkpoint's values must be floating point wherever the model's are.
    """
    for param in params:
        value = weights.get(param.name)
        if value is None or param.dtype not in ms.common.dtype.float_type or np.issubdtype(value.dtype, np.floating):
            continue
        raise CheckpointError(f"{path}: {prefix}{param.name} holds {value.dtype} values but the model's parameter "
                              f"is {param.dtype}: integer or boolean tensors are not loaded into float parameters")


def param_array(value: np.ndarray, param: ms.Parameter) -> np.ndarray:
    """``value`` as a C-contiguous array of exactly ``param``'s shape.

    (``np.ascontiguousarray`` would turn a 0-d value into shape ``(1,)``, and the parameter would change
    shape on every load: a scalar optimizer state saved after one resume no longer matched the model.)
    Only a one-element ``(1,)``/``()`` difference is reshaped; the shapes were checked before.
    """
    array = np.array(value, order="C")
    shape = tuple(param.shape)
    if array.shape != shape and array.size == 1 and int(np.prod(shape)) == 1:
        array = array.reshape(shape)
    return array


def check_compatible(net: nn.Cell, weights: Mapping[str, np.ndarray], path: PathLike,
                     exclude: Iterable[str] = ()) -> None:
    """Raise one :class:`CheckpointMismatchError` listing every missing, unexpected and misshapen key."""
    excluded = set(exclude)
    expected = {p.name: tuple(p.shape) for p in net.get_parameters() if p.name not in excluded}
    provided = {k: v for k, v in weights.items() if k not in excluded}
    check_state(expected, provided, f"{path} does not match {type(net).__name__}:")


def load_checkpoint(net: nn.Cell, path: PathLike, exclude: Iterable[str] = ()) -> Dict[str, Any]:
    """Load an official PyTorch (``.pth``/``.pth.tar``, zip or legacy) or MindSpore ``.ckpt`` file.

    Loading is strict and all-or-nothing: nothing is written into ``net`` unless every parameter
    (except the names in ``exclude``) is present with the right shape. Returns the checkpoint's
    metadata (``flops``, ``dynamic_threshold``, ``epoch``, ...).
    """
    weights, metadata = read_checkpoint(path)
    excluded = set(exclude)
    check_compatible(net, weights, path, excluded)
    params = [p for p in net.get_parameters() if p.name not in excluded]
    check_finite({p.name: weights[p.name] for p in params}, path, "parameter ")
    check_dtypes(params, weights, path)
    for param in params:
        param.set_data(ms.Tensor(param_array(weights[param.name], param), dtype=param.dtype))
    logger.info("loaded %d parameters from %s", len(weights) - len(excluded & set(weights)), path)
    return metadata


def save_checkpoint(net: nn.Cell, path: PathLike, metadata: Mapping[str, Any] = None) -> Path:
    """Write ``net``'s parameters and JSON-able ``metadata`` to ``path`` atomically.

    The file is written under a temporary name in the same folder and renamed into place, so a crash
    never leaves a partial file and an existing file is replaced only by a complete one.
    """
    path = Path(path)
    if path.suffix != ".ckpt":
        raise ValueError(f"{path}: MindSpore checkpoints must end in .ckpt")
    append = {METADATA_KEY: json.dumps(_encode_metadata(dict(metadata or {})))}
    with atomic_path(path, suffix=".tmp.ckpt") as tmp_name:
        ms.save_checkpoint(net, tmp_name, append_dict=append)
    return path
