"""Config sections of the inference, export, conversion, visualization and benchmark scripts.

They sit beside :mod:`dvt_ms.config`'s ``COMMON``/``EVAL``/``TRAIN`` and follow the same rules (every key
a flag, one YAML file for all scripts, precedence default < file < command line). Options that two
scripts share (``checkpoint``, ``weights``, ``output``, ``thresholds``, ``budget_step``, ``overwrite``) are one
:class:`~dvt_ms.config.Option` each. :data:`SCRIPT_SECTIONS` lists them for
:func:`dvt_ms.config.all_file_sections`, so a config file may hold any script's keys.
"""
import math
from pathlib import Path
from typing import Any, Dict, List, Optional

from .schema import ConfigError, Option, Schema
from .sections import CHECKPOINT, OUTPUT, WEIGHTS, non_empty, non_negative, positive

__all__ = [
    "THRESHOLDS", "BUDGET_STEP", "OVERWRITE", "INFER", "EXPORT", "CONVERT", "VISUALIZE", "EXITS", "EVIT",
    "BENCHMARK", "SCRIPT_SECTIONS", "parse_threshold_list", "require_checkpoint", "output_suffix",
]


def parse_threshold_list(text: str) -> List[float]:
    """``"0.8,0.6,-1e8"`` as floats; ``ValueError`` naming the bad item for anything else (NaN included)."""
    values = []
    for item in str(text).split(","):
        try:
            values.append(float(item))
        except ValueError:
            raise ValueError(f"{item.strip()!r} is not a number (expected comma-separated numbers, e.g. "
                             f"0.8,0.6,-1e8), in {text!r}") from None
    if any(math.isnan(v) for v in values):
        raise ValueError(f"thresholds must not be NaN: {text!r}")
    return values


def _thresholds(text: Optional[str]) -> None:
    if text is not None:
        parse_threshold_list(text)


def require_checkpoint(values: Dict[str, Any], sources: Dict[str, str]) -> None:
    """Cross-key check: a ``checkpoint`` is needed."""
    if not values["checkpoint"]:
        raise ConfigError("missing required key 'checkpoint': pass --checkpoint PATH")


def output_suffix(*suffixes: str):
    """Cross-key check: ``output`` (if given) must end in one of ``suffixes``."""

    def check(values: Dict[str, Any], sources: Dict[str, str]) -> None:
        path = values.get("output")
        if path is not None and Path(path).suffix.lower() not in suffixes:
            where = "--output" if sources.get("output") == "command line" else f"{sources.get('output')}: output"
            raise ConfigError(f"{where} {path}: the output must end in {' or '.join(suffixes)}")

    return check


def _one_threshold_source(values: Dict[str, Any], sources: Dict[str, str]) -> None:
    if values["budget_step"] is not None and values["thresholds"] is not None:
        raise ConfigError("pass one of --thresholds and --budget_step, not both")


THRESHOLDS = Option("thresholds", str, nullable=True, validator=_thresholds,
                    help="comma-separated confidence threshold per exit (the last normally -1e8)")
BUDGET_STEP = Option("budget_step", int, nullable=True, validator=positive,
                     help="use row P (1..59) of the checkpoint's dynamic_threshold table")
OVERWRITE = Option("overwrite", bool, default=False, help="replace existing output files")

#: scripts/infer.py
INFER = Schema("inference", [
    Option("inputs", list, default=[], positional=True, help="image files and/or folders (walked recursively)"),
    CHECKPOINT, WEIGHTS, THRESHOLDS, BUDGET_STEP, OUTPUT,
    Option("topk", int, nullable=True, validator=positive, help="also report the top-k classes"),
    Option("class_names", str, nullable=True, validator=non_empty,
           help="text file with one class name per line (or a JSON list/class index); default: the names "
                "stored in the checkpoint's data config (the training class folders)"),
    Option("shape_mode", str, default="buckets", choices=("dynamic", "buckets"),
           help="one dynamic-batch graph per stage, or static graphs for bucketed batch sizes"),
], checks=[require_checkpoint, _one_threshold_source, output_suffix(".csv", ".json")])

#: scripts/export.py
EXPORT = Schema("export", [
    CHECKPOINT, WEIGHTS,
    Option("export_dir", str, nullable=True, validator=non_empty,
           help="folder for dvt_stage*.mindir and dvt_export.json"),
    Option("format", str, default="MINDIR", help="export format (only MINDIR is supported)"),
    OVERWRITE,
], checks=[require_checkpoint])

#: scripts/convert_checkpoint.py
CONVERT = Schema("conversion", [
    Option("src", str, nullable=True, positional=True, validator=non_empty,
           help="official PyTorch checkpoint (.pth / .pth.tar), .safetensors, or .ckpt (official MindSpore DVT "
                "or this project's)"),
    Option("dst", str, nullable=True, positional=True, validator=non_empty, help="MindSpore checkpoint to write (.ckpt)"),
    WEIGHTS,
    OVERWRITE,
])

#: scripts/visualize.py (both modes)
VISUALIZE = Schema("visualization", [
    CHECKPOINT, WEIGHTS,
    Option("images", str, nullable=True, validator=non_empty, help="image folder (recursive) or one image"),
    OUTPUT,
    Option("max_images", int, default=32, validator=positive, help="draw at most this many images"),
], checks=[require_checkpoint, output_suffix(".png")])
#: scripts/visualize.py exits
EXITS = Schema("exits", [
    BUDGET_STEP, THRESHOLDS,
    Option("columns", int, default=8, validator=positive, help="thumbnails per row"),
    Option("thumb_size", int, default=112, validator=positive, help="thumbnail size in pixels"),
])
#: scripts/visualize.py evit
EVIT = Schema("evit", [
    Option("panel_size", int, default=160, validator=positive, help="size of each panel in pixels"),
])


def _sums_to_one(value: list) -> None:
    if any(not isinstance(f, (int, float)) or f < 0 for f in value) or abs(sum(value) - 1) > 1e-6:
        raise ValueError(f"must be >= 0 and sum to 1, got {value!r}")


def _positive_list(value: list) -> None:
    if not value or any(isinstance(b, bool) or not isinstance(b, int) or b < 1 for b in value):
        raise ValueError(f"must be positive integers, got {value!r}")


def _names(value: list) -> None:
    if not value or not all(isinstance(v, str) and v for v in value):
        raise ValueError(f"must be model names, got {value!r}")


#: scripts/benchmark.py
BENCHMARK = Schema("benchmark", [
    Option("models", list, default=["deit_small", "dvt_deit_small", "dvt_t2t_vit_12"], validator=_names,
           help="registered model names"),
    Option("batch_sizes", list, default=[1, 8], validator=_positive_list, help="batch sizes"),
    Option("rounds", int, default=4, validator=positive, help="interleaved rounds over all measurements"),
    Option("seconds", float, default=5.0, validator=positive,
           help="time budget per measurement per round (at least min_iters calls)"),
    Option("iters", int, nullable=True, validator=positive,
           help="fixed calls per measurement per round (replaces seconds)"),
    Option("min_iters", int, default=2, validator=positive, help="least calls per measurement per round"),
    Option("warmup", int, default=2, validator=non_negative, help="calls discarded after the compiling call"),
    Option("gemm_size", int, default=2048, validator=positive, help="side of the square GEMM for the peak"),
    Option("no_torch", bool, default=False, help="skip the PyTorch baseline"),
    Option("image_size", int, default=224, validator=positive, help="input size of the benchmarked models"),
    Option("json", str, nullable=True, validator=non_empty, help="also write the results to this file"),
    Option("suite", str, default="inference", choices=("inference", "early_exit", "all", "train"),
           help="throughput table (inference), early-exit engine vs full cascade (early_exit), both (all), "
                "or training steps (train)"),
    Option("exit_batch", int, default=64, validator=positive, help="early_exit: images in the fixed batch"),
    Option("exit_fractions", list, default=[0.60, 0.25, 0.15], validator=_sums_to_one,
           help="early_exit: share of the batch that leaves at each exit"),
    Option("exit_seed", int, default=0, validator=non_negative, help="early_exit: seed of the random images"),
    Option("exit_cascade_chunk", int, default=16, validator=positive,
           help="early_exit: images per call of the full cascade (one call on 64 images needs about 14 GB of "
                "MindSpore CPU workspace)"),
    Option("train_models", list, default=["deit_small", "dvt_deit_small"], validator=_names,
           help="train: MindSpore models whose training step is timed"),
    Option("train_batch", int, default=8, validator=positive, help="train: images per step"),
    Option("stock_baseline", bool, default=False,
           help="also time deit_small built on MindSpore's own ops (an A/B of the fused kernels)"),
])

#: Every script section, for the config file check of :func:`dvt_ms.config.all_file_sections`.
SCRIPT_SECTIONS = (INFER, EXPORT, CONVERT, VISUALIZE, EXITS, EVIT, BENCHMARK)
