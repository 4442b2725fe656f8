"""Model registry: ``create_model(name, **overrides)``, ``model_spec(name, **overrides)`` and ``list_models()``.

Every registered model is a function from overrides to a :class:`~dvt_ms.models.cascade_spec.CascadeSpec`
plus the class that builds it, so a model's structure (its exits, grids, shapes) is known without
building it.
"""
import fnmatch
from dataclasses import dataclass
from typing import Any, Callable, Dict, FrozenSet, List, Mapping, Optional, Union

from mindspore import nn

from ..kernels import KernelChoice
from .cascade_spec import CascadeSpec
from .dvt import DynamicVisionTransformer
from .vision_transformer import VisionTransformer


@dataclass(frozen=True)
class _Entry:
    spec: Callable[..., CascadeSpec]
    overrides: FrozenSet[str]
    family: str
    cascade: bool  # built as a DynamicVisionTransformer (else a plain VisionTransformer)
    defaults: Mapping[str, Any]  # the architecture values its overrides change
    extra_outputs: int  # outputs past the dataset's labels (the official MindSpore DVT: 1001 for 1000)


_REGISTRY: Dict[str, _Entry] = {}

COMMON_OVERRIDES = frozenset({
    "embed_dim", "depth", "num_heads", "mlp_ratio", "num_classes", "drop_path_rate", "image_size",
    "qk_scale",
})


def register_model(name: str, family: str, extra_overrides: FrozenSet[str] = frozenset(), cascade: bool = False,
                   defaults: Optional[Mapping[str, Any]] = None, extra_outputs: int = 0):
    """Register ``spec(**overrides) -> CascadeSpec`` under ``name``; ``defaults`` are the architecture values
    it uses when not overridden (reported by :func:`model_defaults`)."""

    def decorator(spec: Callable[..., CascadeSpec]) -> Callable[..., CascadeSpec]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        _REGISTRY[name] = _Entry(spec, COMMON_OVERRIDES | frozenset(extra_overrides), family, cascade,
                                 dict(defaults or {}), extra_outputs)
        return spec

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


def model_extra_outputs(name: str) -> int:
    """Outputs a model has past its dataset's labels, by convention of its official code (evaluation accepts
    that many fewer class folders): 1 for the official MindSpore DVT's 1001 outputs on ImageNet-1k."""
    return _entry(name).extra_outputs


def _entry(name: str) -> _Entry:
    if name not in _REGISTRY:
        raise KeyError(f"unknown model {name!r}; available: {', '.join(list_models())}")
    return _REGISTRY[name]


def model_spec(name: str, **overrides: Any) -> CascadeSpec:
    """The validated spec of a registered model with ``overrides``, without building it.

    Raises ``KeyError`` for an unknown model, ``TypeError`` naming any unknown override and
    ``ValueError`` naming an impossible value.
    """
    entry = _entry(name)
    unknown = sorted(set(overrides) - entry.overrides)
    if unknown:
        raise TypeError(f"{name}: unknown override(s) {', '.join(map(repr, unknown))}; "
                        f"accepted: {', '.join(sorted(entry.overrides))}")
    return entry.spec(**overrides)


def kernel_choice(cpu_kernels: Union[None, str, KernelChoice] = None,
                  precision: Optional[str] = None) -> KernelChoice:
    """The :class:`KernelChoice` of a model built now, from a mode (or a choice) and a precision."""
    if not isinstance(cpu_kernels, KernelChoice):
        return KernelChoice.resolve(cpu_kernels, precision=precision)
    if precision is not None and precision != cpu_kernels.model_precision:
        raise ValueError(f"precision {precision!r} differs from the given KernelChoice's "
                         f"({cpu_kernels.model_precision!r}); pass one or the other")
    return cpu_kernels


def build_model(spec: CascadeSpec, cascade: bool = True, cpu_kernels: Union[None, str, KernelChoice] = None,
                precision: Optional[str] = None) -> nn.Cell:
    """Build ``spec``: a :class:`DynamicVisionTransformer`, or with ``cascade=False`` a plain
    :class:`VisionTransformer` (one stage). ``cpu_kernels`` is a mode or a :class:`KernelChoice`,
    ``precision`` one of :data:`~dvt_ms.kernels.PRECISIONS` (default fp32)."""
    kernels = kernel_choice(cpu_kernels, precision)
    if cascade:
        return DynamicVisionTransformer(spec, kernels)
    if spec.num_exits != 1:
        raise ValueError(f"a plain VisionTransformer has one stage, the spec has {spec.num_exits}")
    return VisionTransformer(spec, 0, kernels)


def create_model(name: Union[str, CascadeSpec], *, cpu_kernels: Union[None, str, KernelChoice] = None,
                 precision: Optional[str] = None, **overrides: Any) -> nn.Cell:
    """Build a registered model with its official defaults, changed by ``overrides``, or a
    :class:`CascadeSpec` given directly.

    ``cpu_kernels`` (``auto``/``on``/``off`` or a :class:`~dvt_ms.kernels.KernelChoice`; default
    ``$DVT_MS_CPU_KERNELS`` or ``auto``) decides once whether the model runs on the fused CPU kernels, and
    ``precision`` (``fp32`` default, ``bf16``, ``fp16``; :mod:`dvt_ms.kernels.choice`) in what precision;
    the model reports both as ``net.kernels``.
    """
    if isinstance(name, CascadeSpec):
        if overrides:
            raise TypeError("overrides are not accepted with a CascadeSpec: change the spec instead")
        return build_model(name, True, cpu_kernels, precision)
    spec = model_spec(name, **overrides)
    return build_model(spec, _entry(name).cascade, cpu_kernels, precision)
