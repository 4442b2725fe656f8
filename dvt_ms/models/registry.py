"""Model registry: ``create_model(name, **overrides)`` and ``list_models()``."""
import fnmatch
from dataclasses import dataclass
from typing import Any, Callable, Dict, FrozenSet, List, Mapping, Optional

from mindspore import nn


@dataclass(frozen=True)
class _Entry:
    builder: Callable[..., nn.Cell]
    overrides: FrozenSet[str]
    family: str
    defaults: Mapping[str, Any]


_REGISTRY: Dict[str, _Entry] = {}

COMMON_OVERRIDES = frozenset({
    "embed_dim", "depth", "num_heads", "mlp_ratio", "num_classes", "drop_path_rate", "image_size",
    "qk_scale",
})


def register_model(name: str, family: str, extra_overrides: FrozenSet[str] = frozenset(),
                   defaults: Optional[Mapping[str, Any]] = None):
    """Register ``builder(**overrides) -> nn.Cell`` under ``name``; ``defaults`` are the architecture values
    it uses when not overridden (reported by :func:`model_defaults`)."""

    def decorator(builder: Callable[..., nn.Cell]) -> Callable[..., nn.Cell]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        _REGISTRY[name] = _Entry(builder, COMMON_OVERRIDES | frozenset(extra_overrides), family,
                                 dict(defaults or {}))
        return builder

    return decorator


def list_models(pattern: Optional[str] = None) -> List[str]:
    """Registered model names, sorted, optionally filtered by a shell-style ``pattern``."""
    names = sorted(_REGISTRY)
    return [n for n in names if fnmatch.fnmatch(n, pattern)] if pattern else names


def model_family(name: str) -> str:
    """Family of a registered model: ``deit``, ``t2t``, ``evit`` or ``dvt``."""
    return _entry(name).family


def model_overrides(name: str) -> FrozenSet[str]:
    """Override keys that ``create_model(name, ...)`` accepts."""
    return _entry(name).overrides


def model_defaults(name: str) -> Dict[str, Any]:
    """The registered architecture values of a model (what its overrides change), without building it."""
    return dict(_entry(name).defaults)


def _entry(name: str) -> _Entry:
    if name not in _REGISTRY:
        raise KeyError(f"unknown model {name!r}; available: {', '.join(list_models())}")
    return _REGISTRY[name]


def create_model(name: str, **overrides: Any) -> nn.Cell:
    """Build a registered model with its official defaults, changed by ``overrides``.

    Raises ``KeyError`` for an unknown model and ``TypeError`` naming any unknown override.
    """
    entry = _entry(name)
    unknown = sorted(set(overrides) - entry.overrides)
    if unknown:
        raise TypeError(f"{name}: unknown override(s) {', '.join(map(repr, unknown))}; "
                        f"accepted: {', '.join(sorted(entry.overrides))}")
    return entry.builder(**overrides)
