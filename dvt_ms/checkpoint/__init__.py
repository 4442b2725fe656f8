"""Checkpoint reading, key mapping and loading."""
from .errors import CheckpointError, CheckpointMismatchError
from .key_mapping import map_key, map_state_dict, map_tensor
from .loader import load_checkpoint, read_checkpoint, save_checkpoint
from .safetensors import read_safetensors
from .torch_pickle import CheckpointFormatError, UnsafeCheckpointError, read_torch_file

__all__ = [
    "CheckpointError", "CheckpointMismatchError", "CheckpointFormatError", "UnsafeCheckpointError",
    "map_key", "map_state_dict", "map_tensor", "load_checkpoint", "read_checkpoint", "save_checkpoint",
    "read_torch_file", "read_safetensors",
]
