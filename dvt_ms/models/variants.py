"""Named variants: official architectures as defaults, built from the one VisionTransformer class."""
from typing import Any, Dict

from mindspore import nn

from .dvt import DynamicVisionTransformer
from .registry import register_model
from .tokenizers import PatchTokenizer, T2TTokenizer
from .validation import expand_keep_rate, validate_architecture
from .vision_transformer import VisionTransformer

_TRAINING_DEFAULTS = dict(num_classes=1000, drop_path_rate=0.0, image_size=224, qk_scale=None)

# DeiT: learned position embedding, qkv bias, LayerNorm eps 1e-6, 16x16 patches.
_DEIT = dict(qkv_bias=True, norm_eps=1e-6, sinusoid_pos_embed=False)
DEIT_ARCHS = {
    "tiny": dict(embed_dim=192, depth=12, num_heads=3, mlp_ratio=4.0),
    "small": dict(embed_dim=384, depth=12, num_heads=6, mlp_ratio=4.0),
    "base": dict(embed_dim=768, depth=12, num_heads=12, mlp_ratio=4.0),
}
# T2T-ViT: performer tokens-to-token, frozen sinusoidal positions, no qkv bias, LayerNorm eps 1e-5.
_T2T = dict(qkv_bias=False, norm_eps=1e-5, sinusoid_pos_embed=True)
T2T_ARCHS = {
    "12": dict(embed_dim=256, depth=12, num_heads=4, mlp_ratio=2.0, token_dim=64),
    "14": dict(embed_dim=384, depth=14, num_heads=6, mlp_ratio=3.0, token_dim=64),
}
T2T_TAIL = ((3, 2, 1), (3, 2, 1))

# DVT exits: 7x7, 10x10 and 14x14 tokens at 224 pixels.
DVT_DEIT_TOKENIZERS = (PatchTokenizer(32), PatchTokenizer(23, padding=3), PatchTokenizer(16))
DVT_T2T_TOKENIZERS = tuple(T2TTokenizer((first,) + T2T_TAIL)
                           for first in ((14, 8, 3), (11, 6, 5), (7, 4, 2)))

_DVT_DEFAULTS = dict(feature_reuse=True, relation_reuse=True, reuse_feature_dim=48, reuse_hidden_dim=128)
_EVIT_DEFAULTS = dict(keep_rate=0.7, drop_loc=(3, 6, 9), fuse_token=True)


def _resolve(arch: Dict[str, Any], family_defaults: Dict[str, Any], overrides: Dict[str, Any]) -> Dict[str, Any]:
    cfg = {**_TRAINING_DEFAULTS, **family_defaults, **arch, **overrides}
    validate_architecture(cfg)
    return cfg


def _defaults(arch: Dict[str, Any], family_defaults: Dict[str, Any]) -> Dict[str, Any]:
    return {**_TRAINING_DEFAULTS, **family_defaults, **arch}


def _vit(fixed: Dict[str, Any], cfg: Dict[str, Any], **extra: Any) -> VisionTransformer:
    return VisionTransformer(**fixed, **cfg, **extra)


def _register_deit(size: str) -> None:
    @register_model(f"deit_{size}", family="deit", defaults=_defaults(DEIT_ARCHS[size], {}))
    def build(**overrides: Any) -> nn.Cell:
        return _vit(_DEIT, _resolve(DEIT_ARCHS[size], {}, overrides), tokenizer=PatchTokenizer(16))


def _register_evit(size: str) -> None:
    @register_model(f"evit_deit_{size}", family="evit",
                    extra_overrides=frozenset({"keep_rate", "drop_loc", "fuse_token"}),
                    defaults=_defaults(DEIT_ARCHS[size], _EVIT_DEFAULTS))
    def build(**overrides: Any) -> nn.Cell:
        cfg = _resolve(DEIT_ARCHS[size], _EVIT_DEFAULTS, overrides)
        cfg["keep_rate"] = expand_keep_rate(cfg["keep_rate"], cfg["depth"], cfg.pop("drop_loc"))
        return _vit(_DEIT, cfg, tokenizer=PatchTokenizer(16))


def _register_t2t(depth: str) -> None:
    @register_model(f"t2t_vit_{depth}", family="t2t", extra_overrides=frozenset({"token_dim"}),
                    defaults=_defaults(T2T_ARCHS[depth], {}))
    def build(**overrides: Any) -> nn.Cell:
        return _vit(_T2T, _resolve(T2T_ARCHS[depth], {}, overrides), tokenizer=T2TTokenizer())


_DVT_OVERRIDES = frozenset(_DVT_DEFAULTS)


def _register_dvt(name: str, arch: Dict[str, Any], fixed: Dict[str, Any], tokenizers: tuple,
                  family_overrides: frozenset = frozenset()) -> None:
    @register_model(name, family="dvt", extra_overrides=_DVT_OVERRIDES | family_overrides,
                    defaults=_defaults(arch, _DVT_DEFAULTS))
    def build(**overrides: Any) -> nn.Cell:
        cfg = _resolve(arch, _DVT_DEFAULTS, overrides)
        return DynamicVisionTransformer(tokenizers, **fixed, **cfg)


for _size in DEIT_ARCHS:
    _register_deit(_size)
for _size in ("small", "base"):
    _register_evit(_size)
for _depth in T2T_ARCHS:
    _register_t2t(_depth)
    _register_dvt(f"dvt_t2t_vit_{_depth}", T2T_ARCHS[_depth], _T2T, DVT_T2T_TOKENIZERS,
                  frozenset({"token_dim"}))
_register_dvt("dvt_deit_small", DEIT_ARCHS["small"], _DEIT, DVT_DEIT_TOKENIZERS)
