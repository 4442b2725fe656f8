"""dvt-ms: adaptive-token Vision Transformers (DVT and EViT) in MindSpore."""
import logging

from .checkpoint import load_checkpoint
from .models import create_model, list_models

logging.getLogger(__name__).addHandler(logging.NullHandler())

__version__ = "0.1.0"
__all__ = ["create_model", "list_models", "load_checkpoint", "__version__"]
