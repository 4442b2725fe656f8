"""Checkpoint reading, key mapping and loading."""
from .errors import CheckpointError, CheckpointMismatchError
from .key_mapping import (detect_layout, map_key, map_mindspore_key, map_mindspore_state_dict, map_state_dict,
                          map_tensor, split_optimizer_state)
from .loader import load_checkpoint, load_state, read_checkpoint, save_checkpoint
from .safetensors import read_safetensors
from .torch_pickle import CheckpointFormatError, UnsafeCheckpointError, read_torch_file

__all__ = [
    "CheckpointError", "CheckpointMismatchError", "CheckpointFormatError", "UnsafeCheckpointError",
    "detect_layout", "map_key", "map_mindspore_key", "map_mindspore_state_dict", "map_state_dict", "map_tensor",
    "split_optimizer_state", "load_checkpoint", "load_state", "read_checkpoint", "save_checkpoint",
    "read_torch_file", "read_safetensors",
]
