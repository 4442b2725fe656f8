"""A model for inference from a checkpoint file (the run's model assembly, :func:`dvt_ms.run.load_model`)."""
import os
from typing import Any, Dict, Mapping, Optional, Tuple, Union

from mindspore import nn

from ..run import load_model

__all__ = ["model_from_checkpoint"]


def model_from_checkpoint(path: Union[str, os.PathLike], model_name: Optional[str] = None,
                          overrides: Optional[Mapping[str, Any]] = None,
                          cpu_kernels: Optional[str] = None,
                          precision: Optional[str] = None, weights: str = "model") -> Tuple[nn.Cell, Dict[str, Any]]:
    """Build the model a checkpoint was converted from and load it, with ``cpu_kernels`` and ``precision``
    (:func:`dvt_ms.models.create_model`); returns ``(model, metadata)``. ``weights``: ``"model"`` or
    ``"model_ema"`` (the EMA of a training checkpoint or an official training file).

    A ``.ckpt`` of this project names its model (``model``, ``model_overrides``), and so does an official
    MindSpore DVT ``.ckpt``, recognised from its keys; ``model_name``/``overrides`` must then agree with it.
    Official PyTorch files name no model and need ``model_name`` (:func:`dvt_ms.run.load_model`).
    """
    loaded = load_model({"model": model_name, "model_overrides": dict(overrides or {}), "cpu_kernels": cpu_kernels,
                         "precision": precision, "weights": weights}, path)
    return loaded.net, loaded.metadata
