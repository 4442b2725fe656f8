"""Checkpoint reading, key mapping and loading."""
from .errors import CheckpointError, CheckpointMismatchError, group_by_prefix, mismatch_lines
from .key_mapping import (EMA_PREFIX, OPTIMIZER_PREFIX, WEIGHT_CHOICES, CheckpointEntries, checkpoint_entries,
                          detect_layout, map_key, map_mindspore_key, map_mindspore_state_dict, map_state_dict,
                          map_tensor)
from .loader import load_checkpoint, load_state, read_checkpoint, read_mindspore_entries, save_checkpoint
from .safetensors import read_safetensors
from .torch_pickle import CheckpointFormatError, UnsafeCheckpointError, read_torch_file

__all__ = [
    "CheckpointError", "CheckpointMismatchError", "CheckpointFormatError", "UnsafeCheckpointError",
    "group_by_prefix", "mismatch_lines", "EMA_PREFIX", "OPTIMIZER_PREFIX", "WEIGHT_CHOICES", "CheckpointEntries",
    "checkpoint_entries", "detect_layout", "map_key", "map_mindspore_key", "map_mindspore_state_dict",
    "map_state_dict", "map_tensor", "load_checkpoint", "load_state", "read_checkpoint", "read_mindspore_entries",
    "save_checkpoint", "read_torch_file", "read_safetensors",
]
