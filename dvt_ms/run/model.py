"""The model of a run: the config's ``model``/``model_overrides`` reconciled with a checkpoint's, built,
loaded, logged once, with its data config.

A ``.ckpt`` written by this project names its model, architecture (``model_overrides``) and data config
(``data_config``), which is enough for every script: the config may leave ``model`` unset. A config value
that contradicts the checkpoint is an error naming both (the key with its source, and the checkpoint).
Official PyTorch files name nothing, so the config must name the model.
"""
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from ..checkpoint import detect_layout, load_state, read_checkpoint
from ..config.sources import where
from ..data.data_config import resolve_data_config
from ..models import create_model, model_defaults, model_spec

logger = logging.getLogger(__name__)

__all__ = ["LoadedModel", "normalize", "reconcile_model", "describe_model", "log_model", "parameter_count",
           "load_model"]

PathLike = Union[str, Path]


def normalize(value: Any) -> Any:
    """Plain Python containers and scalars (tuples as lists, numpy as Python), for comparisons."""
    if isinstance(value, Mapping):
        return {str(k): normalize(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [normalize(v) for v in value]
    if isinstance(value, np.ndarray):
        return normalize(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    return value


def _layout(checkpoint: PathLike) -> str:
    try:
        return f"its weights are in the {detect_layout(read_checkpoint(checkpoint)[0])} layout"
    except ValueError as exc:
        return str(exc)


def reconcile_model(model: Optional[str], overrides: Mapping[str, Any], metadata: Mapping[str, Any],
                    checkpoint: PathLike, sources: Optional[Mapping[str, str]] = None) -> Tuple[str, Dict[str, Any]]:
    """The model name and overrides to build for ``checkpoint``.

    One rule: a checkpoint that records its model and architecture (``model_overrides``) is built as recorded.
    A config ``model`` or override that would build another one is a ``ValueError`` naming the key (and where
    its value came from), both values and the file; config values that spell out the recorded architecture
    (a default written out) are accepted. Overrides that keep every parameter shape (``qk_scale``,
    ``keep_rate``, ``fuse_token``) are caught here, where loading would not. A checkpoint that records nothing
    (official files) is built from the config, which must then name the model.
    """
    stored_name = metadata.get("model")
    if model is not None and stored_name is not None and model != stored_name:
        raise ValueError(f"{where('model', sources)} is {model!r} but {checkpoint} holds a {stored_name!r} model")
    name = model if stored_name is None else str(stored_name)
    if name is None:
        raise ValueError(f"{checkpoint} does not name its model ({_layout(checkpoint)}): pass --model NAME "
                         "(and --model_overrides.KEY VALUE for a changed architecture)")
    if "model_overrides" not in metadata:
        return name, dict(overrides)
    stored = metadata["model_overrides"] or {}
    if not isinstance(stored, Mapping):
        raise ValueError(f"{checkpoint}: model_overrides metadata is not a mapping: {stored!r}")
    merged = {**dict(stored), **dict(overrides)}
    differ = sorted(k for k in overrides if k not in stored or normalize(stored[k]) != normalize(overrides[k]))
    if not differ:
        return name, merged
    if _same_architecture(name, stored, merged):
        logger.info("%s: model_overrides %s only spell out what the checkpoint records", checkpoint, ", ".join(differ))
        return name, merged
    defaults = normalize(model_defaults(name))
    recorded = {k: f"{k}: {normalize(stored[k])!r}" if k in stored else f"no {k} (default {defaults.get(k)!r})"
                for k in differ}
    raise ValueError("; ".join(f"{where('model_overrides.' + k, sources)} is {normalize(overrides[k])!r} but "
                               f"{checkpoint} was written with {recorded[k]}" for k in differ))


def _same_architecture(name: str, stored: Mapping[str, Any], merged: Mapping[str, Any]) -> bool:
    try:
        return model_spec(name, **stored) == model_spec(name, **merged)
    except (TypeError, ValueError, KeyError):
        return False


def parameter_count(net) -> int:
    """Number of parameter values of a network."""
    return int(sum(int(np.prod(p.shape)) for p in net.get_parameters()))


def describe_model(name: str, overrides: Mapping[str, Any], net) -> str:
    """``name``, every architecture value that differs from the registered default, and the parameter count."""
    defaults = normalize(model_defaults(name))
    changed = []
    for key in sorted(overrides):
        value = normalize(overrides[key])
        if key not in defaults:
            changed.append(f"{key} {value!r}")
        elif defaults[key] != value:
            changed.append(f"{key} {value!r} (default {defaults[key]!r})")
    what = ", ".join(changed) if changed else "the registered architecture, no value changed"
    return f"model {name}: {what}; {parameter_count(net):,} parameters"


def log_model(name: str, overrides: Mapping[str, Any], net) -> None:
    """Log :func:`describe_model` and the precision and kernels the model runs on (once per run, by whoever
    builds the run's model)."""
    kernels = getattr(net, "kernels", None)
    runs_on = f"; precision {kernels.precision}, {kernels.describe()}" if kernels is not None else ""
    logger.info("%s%s", describe_model(name, overrides, net), runs_on)


@dataclass
class LoadedModel:
    """A built and loaded network with the model name, overrides and data config it was resolved to."""

    net: Any
    metadata: Dict[str, Any]
    name: str
    overrides: Dict[str, Any]
    data_config: Any  # dvt_ms.data.DataConfig


def load_model(config: Mapping[str, Any], checkpoint: PathLike, sources: Optional[Mapping[str, str]] = None,
               class_names: Optional[Sequence[str]] = None) -> LoadedModel:
    """Build the model of ``config`` (``model``, ``model_overrides`` and the data keys) and ``checkpoint``.

    The checkpoint's model and overrides are used, checked against the config (:func:`reconcile_model`);
    the network is loaded strictly; the data config is the checkpoint's, changed by the config's
    ``crop_pct``/``interpolation``/``mean``/``std`` and by ``class_names``.
    """
    weights, metadata = read_checkpoint(checkpoint, config.get("weights") or "model")  # read once
    name, overrides = reconcile_model(config.get("model"), config.get("model_overrides") or {}, metadata,
                                      checkpoint, sources)
    net = create_model(name, cpu_kernels=config.get("cpu_kernels"), precision=config.get("precision"), **overrides)
    load_state(net, weights, checkpoint)
    net.set_train(False)
    metadata["model"], metadata["model_overrides"] = name, overrides
    log_model(name, overrides, net)
    data_config = resolve_data_config(name, net, stored=metadata.get("data_config"), config=config,
                                      class_names=class_names, source=str(checkpoint))
    return LoadedModel(net, metadata, name, overrides, data_config)
