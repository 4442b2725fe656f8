"""Named variants: official architectures as defaults, each a function from overrides to a cascade spec."""
from dataclasses import replace
from typing import Any, Dict, Optional, Sequence

from .cascade_spec import CascadeSpec, StageSpec, previous_stage_edges, stage_from_mapping
from .registry import register_model
from .tokenizers import PatchTokenizer, T2TTokenizer, Tokenizer
from .validation import expand_keep_rate, validate_architecture

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
DVT_DEIT_TOKENIZERS = (PatchTokenizer(32, crop=True), PatchTokenizer(23, padding=3, crop=True),
                       PatchTokenizer(16, crop=True))
DVT_T2T_TOKENIZERS = tuple(T2TTokenizer((first,) + T2T_TAIL)
                           for first in ((14, 8, 3), (11, 6, 5), (7, 4, 2)))

# The official MindSpore DVT (Dynamic-Vision-Transformer-MindSpore): two exits, 7x7 then 14x14, DeiT-S
# sizes and 1001 classes, with MindSpore's numerics (LayerNorm eps 1e-7, tanh GELU), a feature-reuse MLP
# that reads the tokens unnormalized (its LayerNorm is computed and dropped), and no gradient into them.
_MINDSPORE_DVT = dict(qkv_bias=True, norm_eps=1e-7, sinusoid_pos_embed=False, gelu="tanh",
                      feature_reuse_norm=False, detach_reused_tokens=True)
MINDSPORE_DVT_TOKENIZERS = (PatchTokenizer(32, crop=True), PatchTokenizer(16, crop=True))
#: Exit GFLOPs the official MindSpore inference reports (DeiT-S at patch 32 and 16, reuse modules not counted).
MINDSPORE_DVT_OFFICIAL_GFLOPS = (1.145, 5.753)

_DVT_DEFAULTS = dict(feature_reuse=True, relation_reuse=True, reuse_feature_dim=48, reuse_hidden_dim=128)
_EVIT_DEFAULTS = dict(keep_rate=0.7, drop_loc=(3, 6, 9), fuse_token=True)
_EVIT_OVERRIDES = frozenset(_EVIT_DEFAULTS)


def _resolve(arch: Dict[str, Any], family_defaults: Dict[str, Any], overrides: Dict[str, Any]) -> Dict[str, Any]:
    cfg = {**_TRAINING_DEFAULTS, **family_defaults, **arch, **overrides}
    validate_architecture(cfg)
    return cfg


def _defaults(arch: Dict[str, Any], family_defaults: Dict[str, Any]) -> Dict[str, Any]:
    return {**_TRAINING_DEFAULTS, **family_defaults, **arch}


def _stage(fixed: Dict[str, Any], cfg: Dict[str, Any], tokenizer: Optional[Tokenizer], **extra: Any) -> StageSpec:
    """A stage with the family's fixed numerics and the resolved sizes."""
    sizes = {k: cfg[k] for k in ("embed_dim", "depth", "num_heads", "mlp_ratio", "qk_scale")}
    if "token_dim" in cfg:
        sizes["token_dim"] = cfg["token_dim"]
    return StageSpec(tokenizer=tokenizer, **fixed, **sizes, **extra)


def _cascade(stages: Sequence[StageSpec], cfg: Dict[str, Any]) -> CascadeSpec:
    return CascadeSpec(tuple(stages), image_size=cfg["image_size"], num_classes=cfg["num_classes"],
                       drop_path_rate=cfg["drop_path_rate"])


def _evit_rates(cfg: Dict[str, Any]) -> Dict[str, Any]:
    return dict(keep_rate=expand_keep_rate(cfg["keep_rate"], cfg["depth"], cfg["drop_loc"]),
                fuse_token=cfg["fuse_token"])


def _register_deit(size: str) -> None:
    @register_model(f"deit_{size}", family="deit", defaults=_defaults(DEIT_ARCHS[size], {}))
    def spec(**overrides: Any) -> CascadeSpec:
        cfg = _resolve(DEIT_ARCHS[size], {}, overrides)
        return _cascade([_stage(_DEIT, cfg, PatchTokenizer(16, crop=True))], cfg)


def _register_evit(size: str) -> None:
    @register_model(f"evit_deit_{size}", family="evit", extra_overrides=_EVIT_OVERRIDES,
                    defaults=_defaults(DEIT_ARCHS[size], _EVIT_DEFAULTS))
    def spec(**overrides: Any) -> CascadeSpec:
        cfg = _resolve(DEIT_ARCHS[size], _EVIT_DEFAULTS, overrides)
        return _cascade([_stage(_DEIT, cfg, PatchTokenizer(16, crop=True), **_evit_rates(cfg))], cfg)


def _register_t2t(depth: str) -> None:
    @register_model(f"t2t_vit_{depth}", family="t2t", extra_overrides=frozenset({"token_dim"}),
                    defaults=_defaults(T2T_ARCHS[depth], {}))
    def spec(**overrides: Any) -> CascadeSpec:
        cfg = _resolve(T2T_ARCHS[depth], {}, overrides)
        return _cascade([_stage(_T2T, cfg, T2TTokenizer())], cfg)


_DVT_OVERRIDES = frozenset(_DVT_DEFAULTS) | {"stages"}


def _dvt_stages(fixed: Dict[str, Any], cfg: Dict[str, Any], tokenizers: Sequence[Tokenizer]) -> list:
    """The official wiring over ``tokenizers``, or the user's ``stages`` list with those defaults."""
    entries = cfg.get("stages")
    if entries is None:
        entries = [{}] * len(tokenizers)
    elif not isinstance(entries, (list, tuple)) or not entries:
        raise ValueError(f"stages must be a non-empty list of stage mappings, got {entries!r}")
    base = _stage(fixed, cfg, None, reuse_feature_dim=cfg["reuse_feature_dim"],
                  reuse_hidden_dim=cfg["reuse_hidden_dim"])
    edges = previous_stage_edges(len(entries), cfg["feature_reuse"], cfg["relation_reuse"])
    stages = []
    for k, (entry, (features_from, relations_from)) in enumerate(zip(entries, edges)):
        default = replace(base, tokenizer=tokenizers[k] if k < len(tokenizers) else None,
                          features_from=features_from, relations_from=relations_from)
        stages.append(stage_from_mapping(entry, default, k, expand_keep_rate))
    return stages


def _register_dvt(name: str, arch: Dict[str, Any], fixed: Dict[str, Any], tokenizers: tuple,
                  family_overrides: frozenset = frozenset(), last_stage_evit: bool = False,
                  extra_outputs: int = 0) -> None:
    extra = _DVT_OVERRIDES | family_overrides | (_EVIT_OVERRIDES if last_stage_evit else frozenset())
    family_defaults = {**_DVT_DEFAULTS, **(_EVIT_DEFAULTS if last_stage_evit else {})}

    @register_model(name, family="dvt", extra_overrides=extra, cascade=True,
                    defaults=_defaults(arch, family_defaults), extra_outputs=extra_outputs)
    def spec(**overrides: Any) -> CascadeSpec:
        cfg = _resolve(arch, family_defaults, overrides)
        stages = _dvt_stages(fixed, cfg, tokenizers)
        if last_stage_evit:
            stages[-1] = replace(stages[-1], **_evit_rates({**cfg, "depth": stages[-1].depth}))
        return _cascade(stages, cfg)


for _size in DEIT_ARCHS:
    _register_deit(_size)
for _size in ("small", "base"):
    _register_evit(_size)
for _depth in T2T_ARCHS:
    _register_t2t(_depth)
    _register_dvt(f"dvt_t2t_vit_{_depth}", T2T_ARCHS[_depth], _T2T, DVT_T2T_TOKENIZERS,
                  frozenset({"token_dim"}))
_register_dvt("dvt_deit_small", DEIT_ARCHS["small"], _DEIT, DVT_DEIT_TOKENIZERS)
_register_dvt("dvt_mindspore_deit_small", {**DEIT_ARCHS["small"], "num_classes": 1001}, _MINDSPORE_DVT,
              MINDSPORE_DVT_TOKENIZERS, extra_outputs=1)
# DVT x EViT: the DeiT-S cascade whose last (14x14) stage prunes at blocks 3, 6 and 9 with token fusion.
_register_dvt("dvt_evit_deit_small", DEIT_ARCHS["small"], _DEIT, DVT_DEIT_TOKENIZERS, last_stage_evit=True)
