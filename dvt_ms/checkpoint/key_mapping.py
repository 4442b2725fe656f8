"""Pure functions of a checkpoint's key names: mappings from official checkpoints (PyTorch DVT/DeiT/T2T/EViT,
MindSpore DVT) to this project's parameters, which layout the names follow, and which entries of a MindSpore
checkpoint are weights, EMA weights or optimizer state."""
import re
from dataclasses import dataclass
from typing import Dict, Iterable, Tuple

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


# --------------------------------------------------------------------------------------------------
# Official MindSpore DVT (Dynamic-Vision-Transformer-MindSpore): ``less_token.*`` and ``normal_token.*``
# --------------------------------------------------------------------------------------------------
MINDSPORE_STAGE_PREFIXES = ("less_token", "normal_token")
# Entries of official training checkpoints that are optimizer state, not network weights.
OPTIMIZER_STATE_PREFIXES = ("adam_m.", "adam_v.")
OPTIMIZER_STATE_NAMES = ("beta1_power", "beta2_power", "global_step", "learning_rate")

# Applied in order. The patch flattening (channel, row, column), the per-head split of to_q/to_k/to_v
# and the layer-major relation channels are the same as this project's, so no tensor is permuted.
_MS_RENAMES: Tuple[Tuple[str, str], ...] = (
    (r"^(less_token|normal_token)\.",
     lambda m: f"stages.{MINDSPORE_STAGE_PREFIXES.index(m.group(1))}."),
    (r"(^|\.)pos_embedding$", r"\1pos_embed"),
    (r"(^|\.)stem\.patch_to_embedding\.dense\.", r"\1tokenizer.proj."),
    (r"(^|\.)layers\.(\d+)\.", r"\1blocks.\2."),
    (r"\.attn\.to_out\.", ".attn.proj."),
    (r"(^|\.)mlp\.ff(\d)\.dense\.", r"\1mlp.fc\2."),
    (r"\.feature_resuse_mlp\.norm1\.", ".feature_reuse.norm."),
    (r"\.feature_resuse_mlp\.ff(\d)\.dense\.", r".feature_reuse.mlp.fc\1."),
    (r"(^|\.)relation_reuse_conv\.0\.", r"\1relation_reuse.fc1."),
    (r"(^|\.)relation_reuse_conv\.2\.", r"\1relation_reuse.fc2."),
    (r"(^|\.)head\.0\.", r"\1head."),
)
_MS_QKV = re.compile(r"^(?P<block>.*\.attn)\.to_(?P<part>[qkv])\.(?P<leaf>weight|bias)$")
_MS_RELATION_CONV = re.compile(r"(^|\.)relation_reuse\.fc\d\.weight$")


def _ms_rename(key: str) -> str:
    for pattern, replacement in _MS_RENAMES:
        key = re.sub(pattern, replacement, key)
    return key


def map_mindspore_key(key: str) -> str:
    """This project's name for an official MindSpore DVT key (``to_q``/``to_k``/``to_v`` -> ``qkv``)."""
    key = _ms_rename(key)
    qkv = _MS_QKV.match(key)
    if qkv:
        return f"{qkv.group('block')}.qkv.{qkv.group('leaf')}"
    return key


def map_mindspore_state_dict(state: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """Rename and reshape an official MindSpore DVT state dict (network weights only).

    ``to_q``, ``to_k``, ``to_v`` of a layer become one ``qkv`` tensor ``[q; k; v]`` along the output axis;
    the 1x1 relation-reuse convolutions ``[out, in, 1, 1]`` become ``[out, in]`` matrices. Raises
    ``ValueError`` naming the keys for a q/k/v triple with a member missing or of unequal shapes, a
    relation-reuse kernel that is not 1x1, or two keys that map to one name.
    """
    mapped: Dict[str, np.ndarray] = {}
    origin: Dict[str, str] = {}
    triples: Dict[str, Dict[str, Tuple[str, np.ndarray]]] = {}
    for key, value in state.items():
        value = np.asarray(value)
        renamed = _ms_rename(key)
        qkv = _MS_QKV.match(renamed)
        if qkv:
            name = f"{qkv.group('block')}.qkv.{qkv.group('leaf')}"
            triples.setdefault(name, {})[qkv.group("part")] = (key, value)
            continue
        if _MS_RELATION_CONV.search(renamed) and value.ndim == 4:
            if value.shape[2:] != (1, 1):
                raise ValueError(f"{key}: relation-reuse convolution must be 1x1, got shape {value.shape}")
            value = value.reshape(value.shape[0], value.shape[1])
        if renamed in mapped:
            raise ValueError(f"keys {origin[renamed]!r} and {key!r} both map to {renamed!r}")
        mapped[renamed], origin[renamed] = value, key
    for name, parts in triples.items():
        missing = [p for p in "qkv" if p not in parts]
        if missing:
            have = ", ".join(parts[p][0] for p in "qkv" if p in parts)
            raise ValueError(f"{have}: no matching to_{'/to_'.join(missing)} "
                             f"(to_q, to_k and to_v are merged into {name})")
        shapes = {parts[p][0]: parts[p][1].shape for p in "qkv"}
        if len(set(shapes.values())) != 1 or parts["q"][1].ndim not in (1, 2):
            raise ValueError(f"to_q/to_k/to_v merged into {name} must have one shape: "
                             + ", ".join(f"{k} {s}" for k, s in shapes.items()))
        if name in mapped:
            raise ValueError(f"keys {origin[name]!r} and {parts['q'][0]!r} both map to {name!r}")
        mapped[name] = np.concatenate([parts[p][1] for p in "qkv"], axis=0)
        origin[name] = parts["q"][0]
    return mapped


# --------------------------------------------------------------------------------------------------
# Layout detection
# --------------------------------------------------------------------------------------------------
LAYOUTS = ("dvt_ms", "pytorch_official", "mindspore_official")
# Keys that only one layout has. This project's training checkpoints prefix optimizer and EMA copies.
_LAYOUT_MARKERS = {
    "mindspore_official": re.compile(
        r"(^|\.)(stem\.patch_to_embedding\.|pos_embedding$|layers\.\d+\.(attn\.to_(q|k|v|out)|mlp\.ff\d)\.|"
        r"feature_resuse_mlp\.(norm1|ff\d)\.)"),
    "pytorch_official": re.compile(
        r"(^|\.)(patch_embed\.proj\.|tokens_to_token\.|blocks\.\d+\.norm\d\.(weight|bias)$|"
        r"norm\.(weight|bias)$|feature_resuse_mlp\.\d\.)"),
    "dvt_ms": re.compile(
        r"(^|\.)(tokenizer\.|blocks\.\d+\.norm\d\.(gamma|beta)$|relation_reuse\.fc\d\.|feature_reuse\.)"),
}
#: Entry prefixes of this project's training checkpoints (:mod:`dvt_ms.train.checkpoints`).
OPTIMIZER_PREFIX = "optimizer."
EMA_PREFIX = "ema."
_PROJECT_STATE_PREFIXES = (OPTIMIZER_PREFIX, EMA_PREFIX)


def _layouts_of(keys: Iterable[str]) -> Dict[str, int]:
    counts = {layout: 0 for layout in LAYOUTS}
    for key in keys:
        for prefix in _PROJECT_STATE_PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix):]
        for layout, marker in _LAYOUT_MARKERS.items():
            if marker.search(key):
                counts[layout] += 1
    return {layout: n for layout, n in counts.items() if n}


def detect_layout(keys: Iterable[str]) -> str:
    """Which naming ``keys`` follow: ``"dvt_ms"`` (this project), ``"pytorch_official"`` (official DVT,
    DeiT, T2T-ViT, EViT ``.pth``) or ``"mindspore_official"`` (official MindSpore DVT ``.ckpt``).

    Raises ``ValueError`` if the keys follow none of them, or mix several.
    """
    keys = list(keys)
    found = _layouts_of(keys)
    if len(found) == 1:
        return next(iter(found))
    sample = ", ".join(keys[:5]) + (", ..." if len(keys) > 5 else "")
    if not found:
        raise ValueError(f"parameter names follow no known layout ({', '.join(LAYOUTS)}): "
                         f"{len(keys)} key(s), e.g. {sample or '(none)'}")
    raise ValueError("parameter names mix layouts: "
                     + ", ".join(f"{n} key(s) {layout}" for layout, n in found.items()))


def mindspore_official_layout(keys: Iterable[str]) -> bool:
    """Whether ``keys`` are those of an official MindSpore DVT checkpoint (no error for other layouts)."""
    return set(_layouts_of(keys)) == {"mindspore_official"}


# --------------------------------------------------------------------------------------------------
# The roles of a MindSpore checkpoint's entries
# --------------------------------------------------------------------------------------------------
#: ``weights`` choices (``--weights``): the trained weights, or their exponential moving average.
WEIGHT_CHOICES = ("model", "model_ema")
_KINDS = {"training": "a dvt_ms training checkpoint", "mindspore_official": "an official MindSpore DVT checkpoint",
          "weights": "a weights file"}


def _official_optimizer_state(key: str) -> bool:
    return key.startswith(OPTIMIZER_STATE_PREFIXES) or key in OPTIMIZER_STATE_NAMES


@dataclass(frozen=True)
class CheckpointEntries:
    """The entry names of a MindSpore checkpoint by role (as stored, before any renaming)."""

    kind: str                    # "training", "mindspore_official" or "weights"
    model: Tuple[str, ...]       # the network's weights
    ema: Tuple[str, ...]         # their exponential moving average (``ema.<parameter>``)
    optimizer: Tuple[str, ...]   # optimizer state, never loaded into a network

    def describe(self) -> str:
        """E.g. ``a dvt_ms training checkpoint (152 model weights, 152 EMA weights, 258 optimizer-state
        entries)``."""
        counts = [f"{len(self.model)} model weights"] + ([f"{len(self.ema)} EMA weights"] if self.ema else [])
        counts += [f"{len(self.optimizer)} optimizer-state entries"] if self.optimizer else []
        return f"{_KINDS[self.kind]} ({', '.join(counts)})"

    def select(self, weights: str = "model") -> Dict[str, str]:
        """Parameter name -> entry name of the ``weights`` (``"model"`` or ``"model_ema"``) to load.

        Raises ``ValueError`` for another choice, and for ``"model_ema"`` without EMA entries (saying what the
        file holds instead).
        """
        if weights not in WEIGHT_CHOICES:
            raise ValueError(f"weights must be one of {', '.join(WEIGHT_CHOICES)}, got {weights!r}")
        if weights == "model":
            return {key: key for key in self.model}
        if not self.ema:
            trained = " (the run was trained with model_ema false)" if self.kind == "training" else ""
            raise ValueError(f"--weights model_ema: no EMA weights (no '{EMA_PREFIX}*' entries) in {self.describe()}"
                             f"{trained}; load its model weights with --weights model")
        return {key[len(EMA_PREFIX):]: key for key in self.ema}


def checkpoint_entries(keys: Iterable[str]) -> CheckpointEntries:
    """Sort a MindSpore checkpoint's entry names by role, from the names alone.

    - this project's training checkpoints (``best.ckpt``, ``epoch_*.ckpt``): ``optimizer.*`` is optimizer
      state, ``ema.*`` the EMA weights, the rest the model's weights;
    - official MindSpore DVT checkpoints: ``adam_m.*``, ``adam_v.*``, ``beta1_power``, ``beta2_power``,
      ``global_step`` and ``learning_rate`` are optimizer state;
    - any other file: every entry is a model weight.

    Nothing else is set aside: an entry of an unknown kind stays a model weight, so a file that fits no
    layout still fails the strict load, with its keys listed.
    """
    keys = list(keys)
    if any(key.startswith(_PROJECT_STATE_PREFIXES) for key in keys):
        return CheckpointEntries(
            "training", model=tuple(k for k in keys if not k.startswith(_PROJECT_STATE_PREFIXES)),
            ema=tuple(k for k in keys if k.startswith(EMA_PREFIX)),
            optimizer=tuple(k for k in keys if k.startswith(OPTIMIZER_PREFIX)))
    if mindspore_official_layout(keys):
        return CheckpointEntries("mindspore_official", model=tuple(k for k in keys if not _official_optimizer_state(k)),
                                 ema=(), optimizer=tuple(k for k in keys if _official_optimizer_state(k)))
    return CheckpointEntries("weights", model=tuple(keys), ema=(), optimizer=())
