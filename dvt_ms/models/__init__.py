"""Model definitions and the registry."""
from . import variants  # noqa: F401  (registers the named models)
from .dvt import DynamicVisionTransformer
from .registry import create_model, list_models, model_defaults, model_family, model_overrides, register_model
from .tokenizers import PatchTokenizer, T2TTokenizer
from .vision_transformer import VisionTransformer

__all__ = [
    "DynamicVisionTransformer", "VisionTransformer", "PatchTokenizer", "T2TTokenizer",
    "create_model", "list_models", "model_defaults", "model_family", "model_overrides", "register_model",
]
