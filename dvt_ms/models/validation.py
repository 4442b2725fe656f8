"""Up-front checks of model hyper-parameters, with errors that name the offending key."""
from numbers import Real
from typing import Any, Dict, Sequence


def check_positive_int(key: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{key} must be a positive integer, got {value!r}")


def _check_bool(key: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{key} must be true or false, got {value!r}")


def check_rate(key: str, value: Any, low: float, high: float, include_low: bool) -> None:
    ok = isinstance(value, Real) and not isinstance(value, bool)
    ok = ok and (low <= value if include_low else low < value) and value <= high
    if not ok:
        bracket = "[" if include_low else "("
        raise ValueError(f"{key} must be a number in {bracket}{low}, {high}], got {value!r}")


def validate_architecture(cfg: Dict[str, Any]) -> None:
    """Check the keys shared by every family (plus any family keys present)."""
    for key in ("embed_dim", "depth", "num_heads", "image_size", "token_dim", "reuse_feature_dim",
                "reuse_hidden_dim"):
        if key in cfg:
            check_positive_int(key, cfg[key])
    if isinstance(cfg["num_classes"], bool) or not isinstance(cfg["num_classes"], int) \
            or cfg["num_classes"] < 0:
        raise ValueError(f"num_classes must be a non-negative integer, got {cfg['num_classes']!r}")
    if cfg["embed_dim"] % cfg["num_heads"]:
        raise ValueError(f"embed_dim ({cfg['embed_dim']}) must be divisible by num_heads "
                         f"({cfg['num_heads']})")
    check_rate("mlp_ratio", cfg["mlp_ratio"], 0.0, float("inf"), include_low=False)
    if cfg["mlp_ratio"] * cfg["embed_dim"] < 1:
        raise ValueError(f"mlp_ratio {cfg['mlp_ratio']} leaves an empty MLP")
    check_rate("drop_path_rate", cfg["drop_path_rate"], 0.0, 0.999999, include_low=True)
    if cfg.get("qk_scale") is not None:
        check_rate("qk_scale", cfg["qk_scale"], 0.0, float("inf"), include_low=False)
    for key in ("feature_reuse", "relation_reuse", "fuse_token"):
        if key in cfg:
            _check_bool(key, cfg[key])


def expand_keep_rate(keep_rate: Any, depth: int, drop_loc: Sequence[int]) -> tuple:
    """EViT keep rates per layer from a float (applied at ``drop_loc``) or a per-layer sequence."""
    if isinstance(keep_rate, (list, tuple)):
        if len(keep_rate) != depth:
            raise ValueError(f"keep_rate has {len(keep_rate)} entries but depth is {depth}")
        rates = tuple(keep_rate)
    else:
        if not isinstance(drop_loc, (list, tuple)) or not drop_loc:
            raise ValueError(f"drop_loc must be a non-empty list of layer indices, got {drop_loc!r}")
        for loc in drop_loc:
            if isinstance(loc, bool) or not isinstance(loc, int) or not 0 <= loc < depth:
                raise ValueError(f"drop_loc entry {loc!r} is not a layer index in [0, {depth})")
        rates = tuple(keep_rate if i in drop_loc else 1.0 for i in range(depth))
    for i, rate in enumerate(rates):
        check_rate(f"keep_rate[{i}]", rate, 0.0, 1.0, include_low=False)
    return tuple(float(r) for r in rates)
