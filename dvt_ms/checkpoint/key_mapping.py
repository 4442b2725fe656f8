"""Pure mapping from official PyTorch state-dict keys and tensors to this project's parameters."""
import re
from typing import Dict, Tuple

import numpy as np

# Official DVT stage prefixes, from fewest tokens to most.
DVT_STAGE_PREFIXES = ("less_less_token", "less_token", "normal_token")

# (pattern, replacement) applied in order to every key.
_RENAMES: Tuple[Tuple[str, str], ...] = (
    (r"^(less_less_token|less_token|normal_token)\.",
     lambda m: f"stages.{DVT_STAGE_PREFIXES.index(m.group(1))}."),
    (r"\.feature_resuse_mlp\.0\.", ".feature_reuse.norm."),
    (r"\.feature_resuse_mlp\.1\.", ".feature_reuse.mlp."),
    (r"(^|\.)relation_reuse_conv\.0\.", r"\1relation_reuse.fc1."),
    (r"(^|\.)relation_reuse_conv\.2\.", r"\1relation_reuse.fc2."),
    (r"(^|\.)patch_embed\.proj\.", r"\1tokenizer.proj."),
    (r"(^|\.)tokens_to_token\.attention(\d+)\.",
     lambda m: f"{m.group(1)}tokenizer.attentions.{int(m.group(2)) - 1}."),
    (r"(^|\.)tokens_to_token\.project\.", r"\1tokenizer.project."),
    (r"(\.attentions\.\d+\.mlp)\.0\.", r"\1.fc1."),
    (r"(\.attentions\.\d+\.mlp)\.2\.", r"\1.fc2."),
    (r"(\.attentions\.\d+)\.w$", r"\1.random_features"),
)

# Modules that are LayerNorms once renamed; their weight/bias become gamma/beta.
_LAYER_NORM = re.compile(r"(^|\.)(norm\d*|feature_reuse\.norm)\.(weight|bias)$")
# Convolutions that this project computes as matrix products: [out, in, kh, kw] -> [out, in*kh*kw].
_CONV_AS_MATRIX = re.compile(r"(tokenizer\.proj|relation_reuse\.fc\d)\.weight$")


def map_key(key: str) -> str:
    """MindSpore parameter name for an official PyTorch state-dict key."""
    for pattern, replacement in _RENAMES:
        key = re.sub(pattern, replacement, key)
    norm = _LAYER_NORM.search(key)
    if norm:
        suffix = "gamma" if norm.group(3) == "weight" else "beta"
        key = key[: norm.start(3)] + suffix
    return key


def map_tensor(mapped_key: str, value: np.ndarray) -> np.ndarray:
    """Reshape a tensor into the layout of the parameter ``mapped_key``."""
    if _CONV_AS_MATRIX.search(mapped_key) and value.ndim == 4:
        return value.reshape(value.shape[0], -1)
    return value


def map_state_dict(state_dict: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """Rename and reshape a whole official state dict. Raises if two keys map to one name."""
    mapped: Dict[str, np.ndarray] = {}
    origin: Dict[str, str] = {}
    for key, value in state_dict.items():
        name = map_key(key)
        if name in mapped:
            raise ValueError(f"state-dict keys {origin[name]!r} and {key!r} both map to {name!r}")
        mapped[name] = map_tensor(name, np.asarray(value))
        origin[name] = key
    return mapped
