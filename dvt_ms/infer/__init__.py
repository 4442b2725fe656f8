"""Early-exit inference: the engine (:mod:`.engine`), exit thresholds (:mod:`.thresholds`), a model from a
checkpoint (:mod:`.loading`), image files (:mod:`.images`) and class-name files (:mod:`.class_names`)."""
from ..data.data_config import load_image
from ..evaluate import softmax
from .class_names import read_class_names
from .engine import (SHAPE_MODES, AdaptiveClassifier, EngineStage, ExitResult, default_buckets, exit_probabilities,
                     stage_input_specs, topk)
from .images import iter_image_batches, iter_image_paths
from .loading import model_from_checkpoint
from .thresholds import budget_thresholds, check_thresholds, exit_fraction_summary, thresholds_for_fractions

__all__ = [
    "AdaptiveClassifier", "EngineStage", "ExitResult", "SHAPE_MODES", "default_buckets", "stage_input_specs",
    "softmax", "topk", "exit_probabilities", "thresholds_for_fractions",
    "check_thresholds", "budget_thresholds", "model_from_checkpoint", "load_image",
    "iter_image_paths", "iter_image_batches", "read_class_names", "exit_fraction_summary",
]
