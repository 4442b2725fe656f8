"""Export a DVT cascade as one MindIR file per stage, with a JSON manifest that wires them together.

Every stage file has a dynamic batch dimension. Its inputs and outputs are those of the cascade spec's
``stage_io``: the images plus what it reuses from earlier stages (final tokens, stacked attention
logits), and its logits plus what later stages reuse. ``dvt_export.json`` lists the files, each input's source (the images or an output of the
previous stage), the preprocessing, the exit rule and the checkpoint's thresholds, so that a runtime
can run the cascade with early exits without this package.
"""
import json
import logging
import os
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Union

import mindspore as ms
import numpy as np

from .data.data_config import DataConfig, preprocessing_manifest
from .infer import EngineStage, stage_input_specs
from .models.cascade_spec import TensorSpec
from .models.dvt import DynamicVisionTransformer
from .utils.atomic import atomic_path

logger = logging.getLogger(__name__)

__all__ = ["export_cascade", "MANIFEST_NAME", "SUPPORTED_FORMATS"]

MANIFEST_NAME = "dvt_export.json"
SUPPORTED_FORMATS = ("MINDIR",)
MANIFEST_VERSION = 1
EXIT_RULE = ("softmax the logits of exit k; a sample leaves at the first exit k with max(softmax) >= "
             "thresholds[k] (float32 comparison); the others go on to stage k + 1 with their rows of "
             "the images and of stage k's reuse outputs")


def _stage_file(index: int) -> str:
    return f"dvt_stage{index}.mindir"


def _entry(tensor: TensorSpec) -> Dict[str, Any]:
    """A manifest entry of a stage input or output; -1 is the dynamic batch dimension."""
    return {"name": tensor.name, "shape": [-1 if d is None else int(d) for d in tensor.shape], "dtype": tensor.dtype}


def _thresholds_entry(metadata: Mapping[str, Any], n_exits: int) -> Optional[Dict[str, Any]]:
    if "dynamic_threshold" not in metadata:
        return None
    table = np.asarray(metadata["dynamic_threshold"], dtype=np.float64)
    if table.ndim != 2 or table.shape[1] != n_exits:
        raise ValueError(f"checkpoint metadata 'dynamic_threshold' must have shape [steps, {n_exits}], "
                         f"got {table.shape}")
    return {"table": table.astype(np.float32).tolist(),
            "rows": f"row i holds the thresholds of budget step p = i + 1 (p = 1..{table.shape[0]})"}


def export_cascade(model: DynamicVisionTransformer, output_dir: Union[str, os.PathLike], *,
                   file_format: str = "MINDIR", metadata: Optional[Mapping[str, Any]] = None,
                   overwrite: bool = False, data_config: Optional[DataConfig] = None) -> Path:
    """Write one file per stage and ``dvt_export.json`` into ``output_dir``; return the manifest path.

    ``metadata`` is the checkpoint's (its ``model``, ``model_overrides``, ``dynamic_threshold`` and
    ``flops`` go into the manifest). ``data_config`` (default: the ImageNet defaults at the model's size)
    is stored as ``data_config`` and spelled out as ``preprocessing``. Only ``MINDIR`` is supported.
    Existing export files are replaced only with ``overwrite``.
    """
    if not isinstance(model, DynamicVisionTransformer):
        raise TypeError(f"only DVT cascades can be exported here, got {type(model).__name__}")
    fmt = str(file_format).upper()
    if fmt not in SUPPORTED_FORMATS:
        raise ValueError(f"export format {file_format!r} is not supported: only MINDIR is "
                         "supported (MindSpore 2.10 has no ONNX converter for ops these models use, e.g. Unstack)")
    metadata = dict(metadata or {})
    out = Path(output_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out}: exists and is not a directory")
    n_exits = int(model.num_exits)
    targets = [out / MANIFEST_NAME] + [out / _stage_file(k) for k in range(n_exits)]
    existing = [p.name for p in targets if p.exists()]
    if existing and not overwrite:
        raise ValueError(f"{out}: already contains {', '.join(existing)} (pass --overwrite to replace)")
    thresholds = _thresholds_entry(metadata, n_exits)
    out.mkdir(parents=True, exist_ok=True)
    for path in targets:
        if path.exists():  # MindSpore writes MindIR files read-only
            path.unlink()

    model.set_train(False)
    spec = model.spec
    stages = []
    for k, stage in enumerate(model.stages):
        io = stage.io
        cell = EngineStage(stage)
        specs = stage_input_specs(spec, k)
        cell.set_inputs(*specs)
        path = out / _stage_file(k)
        with model.kernels.stock():  # a file for other machines; and the fused kernels need static shapes
            ms.export(cell, *specs, file_name=str(path.with_suffix("")), file_format=fmt)
            file_precision = model.kernels.precision  # fp32 for a fused-kernel model, else the model's own
        if not path.is_file():
            raise RuntimeError(f"MindSpore did not write {path}")
        inputs = []
        for tensor in io.inputs:
            entry = _entry(tensor)
            if tensor.source is None:
                entry["source"] = "images"
            else:
                source, name = tensor.source
                entry["source"] = {"stage": source, "output": spec.stage_io(source).output_names.index(name),
                                   "name": name}
            inputs.append(entry)
        stages.append({"exit": k, "file": path.name, "grid_size": spec.grid_size(k),
                       "inputs": inputs, "outputs": [_entry(t) for t in io.outputs]})
        logger.info("wrote %s (%s -> %s)", path, ", ".join(io.input_names), ", ".join(io.output_names))

    image_size = spec.image_size
    if data_config is None:
        data_config = DataConfig(input_size=image_size, num_classes=spec.num_classes)
    if data_config.input_size != image_size:
        raise ValueError(f"the data config is for {data_config.input_size}-pixel images, the model takes {image_size}")
    manifest = {
        "format": fmt,
        "version": MANIFEST_VERSION,
        "model": metadata.get("model"),
        "model_overrides": metadata.get("model_overrides"),
        "num_exits": n_exits,
        "num_classes": spec.num_classes,
        "image_size": image_size,
        "preprocessing": preprocessing_manifest(data_config),
        "data_config": data_config.to_dict(),
        "batch_dimension": "dynamic (-1 in the shapes below)",
        "exit_rule": EXIT_RULE,
        "last_threshold": -1e8,
        "thresholds": thresholds,
        "flops": np.asarray(metadata["flops"]).tolist() if "flops" in metadata else None,
        # the precision of the graphs in the files, and the one the model was built for (a CPU bf16 model
        # is written with MindSpore's float32 ops, so its files are fp32)
        "precision": {"files": file_precision, "model": model.kernels.model_precision},
        "stages": stages,
    }
    manifest_path = out / MANIFEST_NAME
    with atomic_path(manifest_path) as tmp_name:
        Path(tmp_name).write_text(json.dumps(manifest, indent=2))
    logger.info("wrote %s", manifest_path)
    return manifest_path
