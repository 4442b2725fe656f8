"""Model definitions and the registry: cascade specs, the one ViT class, the DVT cascade."""
from . import variants  # noqa: F401  (registers the named models)
from .cascade_spec import CascadeSpec, StageIO, StageSpec, TensorSpec
from .dvt import CascadeStage, DynamicVisionTransformer
from .registry import (build_model, create_model, list_models, model_defaults, model_extra_outputs, model_family,
                       model_overrides, model_spec, register_model)
from .net_spec import exit_names, model_image_size, model_num_classes, num_exits
from .tokenizers import PatchTokenizer, T2TTokenizer
from .vision_transformer import VisionTransformer

__all__ = [
    "CascadeSpec", "StageSpec", "StageIO", "TensorSpec", "CascadeStage", "DynamicVisionTransformer",
    "VisionTransformer", "PatchTokenizer", "T2TTokenizer", "build_model", "create_model", "list_models",
    "model_defaults", "model_extra_outputs", "model_family", "model_overrides", "model_spec", "register_model",
    "exit_names", "model_image_size", "model_num_classes", "num_exits",
]
