"""Load official PyTorch checkpoints, safetensors files, official MindSpore DVT checkpoints and this project's
MindSpore checkpoints; save MindSpore checkpoints atomically."""
import json
import logging
import os
import zipfile
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Tuple, Union

import mindspore as ms
import numpy as np
from mindspore import nn

from ..utils.atomic import atomic_path
from .errors import CheckpointError, CheckpointMismatchError, mismatch_lines
from .key_mapping import WEIGHT_CHOICES, checkpoint_entries, map_mindspore_state_dict, map_state_dict
from .official_mindspore import official_mindspore_metadata
from .safetensors import is_safetensors_file, read_safetensors
from .torch_pickle import read_torch_file

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]
METADATA_KEY = "dvt_ms_metadata"
# Where the official scripts put the weights: DVT uses model_state_dict, DeiT/EViT use model.
STATE_DICT_KEYS = ("model_state_dict", "model", "state_dict")
# Where official training files keep the EMA weights (DeiT's ``model_ema``), for ``weights="model_ema"``.
EMA_KEYS = ("model_ema", "state_dict_ema")
_PICKLE_PROTOCOL_2_PLUS = 0x80
#: Metadata kept from a checkpoint: plain values, and arrays / lists of at most this many numbers.
MAX_METADATA_ELEMENTS = 65536


def _is_torch_file(path: Path) -> bool:
    if zipfile.is_zipfile(path):
        return True
    with open(path, "rb") as handle:
        return handle.read(1) == bytes([_PICKLE_PROTOCOL_2_PLUS])


def _is_state_dict(value: Any) -> bool:
    return isinstance(value, Mapping) and bool(value) and all(isinstance(v, np.ndarray) for v in value.values())


def _holds_arrays(value: Any) -> bool:
    """Whether ``value`` is (or holds, in any mapping) an array of one or more dimensions."""
    if isinstance(value, np.ndarray):
        return value.ndim >= 1
    if isinstance(value, Mapping):
        return any(_holds_arrays(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(isinstance(v, Mapping) and _holds_arrays(v) for v in value)
    return False


def _plain(value: Any, budget: List[int]) -> Any:
    """``value`` as small plain metadata, or raise ``ValueError`` if it is not (or is too big)."""
    if value is None or isinstance(value, (bool, int, float, str, np.generic)):
        if isinstance(value, str) and len(value) > 10000:
            raise ValueError("long string")
        budget[0] -= 1
        if budget[0] < 0:
            raise ValueError("too many values")
        return value.item() if isinstance(value, np.generic) else value
    if isinstance(value, np.ndarray) and value.dtype.kind in "biuf":
        budget[0] -= value.size
        if budget[0] < 0:
            raise ValueError("too many values")
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v, budget) for v in value]
    if isinstance(value, Mapping) and all(isinstance(k, str) for k in value):
        return {k: _plain(v, budget) for k, v in value.items()}  # argparse.Namespace -> dict too
    raise ValueError(f"a {type(value).__name__}")


def small_metadata(items: Mapping[str, Any]) -> Tuple[Dict[str, Any], List[str]]:
    """``(kept, dropped)``: plain values, strings and small tables kept; state dicts (optimizer, EMA, ...)
    and anything else dropped (``dropped`` names each with the reason)."""
    kept: Dict[str, Any] = {}
    dropped: List[str] = []
    for key, value in items.items():
        if isinstance(value, Mapping) and _holds_arrays(value):
            dropped.append(f"{key} (state with tensors)")
            continue
        try:
            kept[str(key)] = _plain(value, [MAX_METADATA_ELEMENTS])
        except ValueError as exc:
            dropped.append(f"{key} ({exc})")
    return kept, dropped


def _split_torch_checkpoint(obj: Any, path: Path, weights: str = "model"
                            ) -> Tuple[Dict[str, np.ndarray], Dict[str, Any]]:
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path}: expected a dict at the top level, found {type(obj).__name__}")
    if weights not in WEIGHT_CHOICES:
        raise ValueError(f"weights must be one of {', '.join(WEIGHT_CHOICES)}, got {weights!r}")
    candidates = EMA_KEYS if weights == "model_ema" else STATE_DICT_KEYS
    chosen = next((k for k in candidates if k in obj and isinstance(obj[k], Mapping)), None)
    if chosen is None and weights == "model" and _is_state_dict(obj):
        return dict(obj), {}
    if chosen is None:
        raise CheckpointError(f"{path}: no {'EMA ' if weights == 'model_ema' else ''}state dict found (looked for "
                              f"{', '.join(candidates)}{' or a bare state dict' if weights == 'model' else ''}); "
                              f"top-level keys: {', '.join(map(str, obj))}")
    metadata, dropped = small_metadata({k: v for k, v in obj.items() if k != chosen})
    others = [k for k in STATE_DICT_KEYS + EMA_KEYS if k != chosen and _is_state_dict(obj.get(k))]
    logger.info("%s: weights from '%s' (%d tensors)%s; also in the file: %s", path, chosen, len(obj[chosen]),
                f", not {', '.join(repr(k) for k in others)} (choose with weights=/--weights)" if others else "",
                "; ".join([f"metadata {', '.join(metadata)}" if metadata else "no metadata"]
                          + ([f"not kept: {', '.join(dropped)}"] if dropped else [])))
    return dict(obj[chosen]), metadata


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


def decode_metadata(value: Any) -> Any:
    """A checkpoint's JSON metadata value with its encoded numpy arrays (``__ndarray__``) restored."""
    if isinstance(value, dict):
        if "__ndarray__" in value:
            return np.asarray(value["__ndarray__"], dtype=value["dtype"])
        return {k: decode_metadata(v) for k, v in value.items()}
    if isinstance(value, list):
        return [decode_metadata(v) for v in value]
    return value


def read_mindspore_entries(path: PathLike) -> Tuple[Dict[str, np.ndarray], Dict[str, Any]]:
    """Every tensor entry of a MindSpore ``.ckpt`` by its stored name (optimizer state and EMA included), and
    the metadata. :func:`read_checkpoint` picks the weights to load out of them."""
    try:
        raw = ms.load_checkpoint(str(path))
    except (ValueError, RuntimeError, OSError) as exc:
        raise CheckpointError(f"{path}: not a readable MindSpore checkpoint ({exc})") from None
    metadata: Dict[str, Any] = {}
    entries: Dict[str, np.ndarray] = {}
    for name, value in raw.items():
        if name == METADATA_KEY:
            try:
                metadata.update(decode_metadata(json.loads(value)))
            except (TypeError, ValueError) as exc:
                raise CheckpointError(f"{path}: corrupt {METADATA_KEY} entry ({exc})") from None
        elif isinstance(value, str):
            metadata[name] = value
        else:
            entries[name] = value.asnumpy()
    return entries, metadata


def _read_mindspore_checkpoint(path: Path, choice: str) -> Tuple[Dict[str, np.ndarray], Dict[str, Any]]:
    """The ``choice`` weights of a MindSpore ``.ckpt`` (:func:`~.key_mapping.checkpoint_entries` says which
    entries they are), logged in one line with what was skipped."""
    entries, metadata = read_mindspore_entries(path)
    roles = checkpoint_entries(entries)
    try:
        chosen = roles.select(choice)
    except ValueError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    weights = {name: entries[key] for name, key in chosen.items()}
    other = {"model": " (the EMA weights with --weights model_ema)" if roles.ema else "",
             "model_ema": ", not its model weights"}[choice]
    logger.info("%s: %s: loading the %s weights%s; %d optimizer-state entries skipped", path, roles.describe(),
                "EMA" if choice == "model_ema" else "model", other, len(roles.optimizer))
    if roles.kind == "mindspore_official":
        try:
            weights = map_mindspore_state_dict(weights)
            recognised = official_mindspore_metadata(weights, str(path))
        except ValueError as exc:
            raise CheckpointError(f"{path}: {exc}") from None
        for key, value in recognised.items():  # the official files name no model: say which one they hold
            metadata.setdefault(key, value)
    return weights, metadata


def read_checkpoint(path: PathLike, weights: str = "model") -> Tuple[Dict[str, np.ndarray], Dict[str, Any]]:
    """Read ``(weights, metadata)`` from any supported file, with weights under MindSpore names.

    Files: official PyTorch ``.pth``/``.pth.tar`` (``weights`` picks ``model`` or ``model_ema``; only small
    metadata is kept, never other state dicts), ``.safetensors`` (torch-free, header checked first) and
    MindSpore ``.ckpt``: this project's weights files and training checkpoints (``best.ckpt``,
    ``epoch_*.ckpt``: the model's weights, or with ``model_ema`` their EMA; the optimizer state is skipped)
    and official MindSpore DVT checkpoints (optimizer state skipped too).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if is_safetensors_file(path):
        if weights != "model":
            raise CheckpointError(f"{path}: a safetensors file holds one set of weights; use weights 'model'")
        state_dict, metadata = read_safetensors(path)
    elif _is_torch_file(path):
        state_dict, metadata = _split_torch_checkpoint(read_torch_file(path), path, weights)
    else:
        return _read_mindspore_checkpoint(path, weights)
    try:
        return map_state_dict(_strip_module_prefix(state_dict)), metadata
    except ValueError as exc:
        raise CheckpointError(f"{path}: {exc}") from None


def check_state(expected: Mapping[str, Tuple[int, ...]], found: Mapping[str, np.ndarray], header: str) -> None:
    """Raise one :class:`CheckpointMismatchError`, under ``header``, with every missing, unexpected and
    misshapen key of ``found`` against the ``expected`` shapes, grouped by prefix
    (:func:`~.errors.mismatch_lines`)."""
    lines = mismatch_lines(expected, {name: np.shape(value) for name, value in found.items()})
    if lines:
        raise CheckpointMismatchError("\n".join([header] + lines))


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


def load_checkpoint(net: nn.Cell, path: PathLike, exclude: Iterable[str] = (), weights: str = "model"
                    ) -> Dict[str, Any]:
    """Load an official PyTorch (``.pth``/``.pth.tar``, zip or legacy) or MindSpore ``.ckpt`` file.

    Loading is strict and all-or-nothing: nothing is written into ``net`` unless every parameter
    (except the names in ``exclude``) is present with the right shape. Returns the checkpoint's
    metadata (``flops``, ``dynamic_threshold``, ``epoch``, ...). ``weights``: ``"model"`` or
    ``"model_ema"`` (see :func:`read_checkpoint`); ``.safetensors`` files are read too.
    """
    state, metadata = read_checkpoint(path, weights)
    load_state(net, state, path, exclude)
    return metadata


def load_state(net: nn.Cell, weights: Mapping[str, np.ndarray], path: PathLike, exclude: Iterable[str] = ()) -> None:
    """Write the weights :func:`read_checkpoint` gave for ``path`` into ``net``, with the checks of
    :func:`load_checkpoint` (all-or-nothing)."""
    excluded = set(exclude)
    check_compatible(net, weights, path, excluded)
    params = [p for p in net.get_parameters() if p.name not in excluded]
    check_finite({p.name: weights[p.name] for p in params}, path, "parameter ")
    check_dtypes(params, weights, path)
    for param in params:
        param.set_data(ms.Tensor(param_array(weights[param.name], param), dtype=param.dtype))
    logger.info("loaded %d parameters from %s", len(weights) - len(excluded & set(weights)), path)


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
