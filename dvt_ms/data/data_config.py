"""One data config per model, and the one evaluation transform built from it.

A :class:`DataConfig` holds everything that decides what a model sees of an image at evaluation time:
the input size, the resize (``int(input_size / crop_pct)`` on the shorter side) and center crop, the
interpolation, the mean and std, and the classes (their number and, when known, their names: the
folder names of the training ImageFolder). It is resolved once per run by :func:`resolve_data_config`
(the model's family defaults, then the checkpoint's stored data config, then the config keys), stored
in every checkpoint this project writes (``metadata["data_config"]``) and in the export manifest.

:func:`eval_transforms` is the only definition of the evaluation preprocessing. The MindData
evaluation pipeline (``scripts/eval.py``, the training validation) maps its operations over a dataset;
:func:`preprocess` / :func:`load_image` (``scripts/infer.py``, ``scripts/visualize.py``) apply the same
operations to one image, so one image gives the same input tensor, and the same logits, through every
script. Images are decoded by :func:`dvt_ms.data.decode.read_rgb` in both.
"""
import functools
import logging
import math
import os
from dataclasses import asdict, dataclass
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
from mindspore.dataset import transforms, vision
from mindspore.dataset.vision import Inter

from ..models import model_family
from .decode import read_rgb

logger = logging.getLogger(__name__)

__all__ = [
    "IMAGENET_MEAN", "IMAGENET_STD", "IMAGE_EXTENSIONS", "INTERPOLATIONS", "FAMILY_DEFAULTS", "DataConfig",
    "default_data_config", "resolve_data_config", "resize_size", "eval_transforms", "preprocess",
    "load_image", "preprocessing_manifest", "denormalize",
]

PathLike = Union[str, os.PathLike]
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: File extensions read as images, by the ImageFolder checks and by the folder walks of infer/visualize.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm")
INTERPOLATIONS = ("bicubic", "bilinear")

_IMAGENET = dict(crop_pct=0.875, interpolation="bicubic", mean=IMAGENET_MEAN, std=IMAGENET_STD)
#: Evaluation preprocessing of each model family (``dvt_ms.models.model_family``): every family here was
#: trained on ImageNet with the DeiT recipe, evaluated at crop 0.875 (256 -> 224) with bicubic resizing.
FAMILY_DEFAULTS: Dict[str, Dict[str, Any]] = {family: dict(_IMAGENET) for family in ("deit", "t2t", "evit", "dvt")}
_FIELDS = ("input_size", "crop_pct", "interpolation", "mean", "std", "num_classes", "class_names")


def resize_size(input_size: int, crop_pct: float = 0.875) -> int:
    """Shorter-side length before the center crop: ``int(input_size / crop_pct)`` (256 for 224)."""
    return int(math.floor(input_size / crop_pct))


def _three_numbers(value: Any, what: str) -> Tuple[float, float, float]:
    try:
        numbers = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be three numbers (R, G, B), got {value!r}") from None
    if len(numbers) != 3 or not all(math.isfinite(v) for v in numbers):
        raise ValueError(f"{what} must be three finite numbers (R, G, B), got {value!r}")
    return numbers  # type: ignore[return-value]


@dataclass(frozen=True)
class DataConfig:
    """Evaluation preprocessing and classes of one model; checked on construction."""

    input_size: int
    crop_pct: float = 0.875
    interpolation: str = "bicubic"
    mean: Tuple[float, float, float] = IMAGENET_MEAN
    std: Tuple[float, float, float] = IMAGENET_STD
    num_classes: Optional[int] = None
    class_names: Optional[Tuple[str, ...]] = None

    def __post_init__(self) -> None:
        if isinstance(self.input_size, bool) or not isinstance(self.input_size, int) or self.input_size < 1:
            raise ValueError(f"input_size must be a positive integer, got {self.input_size!r}")
        if not isinstance(self.crop_pct, (int, float)) or not 0 < self.crop_pct <= 1:
            raise ValueError(f"crop_pct must be in (0, 1], got {self.crop_pct!r}")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {', '.join(INTERPOLATIONS)}, got {self.interpolation!r}")
        object.__setattr__(self, "crop_pct", float(self.crop_pct))
        object.__setattr__(self, "mean", _three_numbers(self.mean, "mean"))
        std = _three_numbers(self.std, "std")
        if min(std) <= 0:
            raise ValueError(f"std must be positive, got {self.std!r}")
        object.__setattr__(self, "std", std)
        if self.num_classes is not None and (isinstance(self.num_classes, bool) or
                                             not isinstance(self.num_classes, int) or self.num_classes < 1):
            raise ValueError(f"num_classes must be a positive integer, got {self.num_classes!r}")
        if self.class_names is not None:
            names = tuple(str(n) for n in self.class_names)
            if self.num_classes is not None and len(names) != self.num_classes:
                raise ValueError(f"{len(names)} class names for {self.num_classes} classes")
            object.__setattr__(self, "class_names", names)

    @property
    def resize(self) -> int:
        """Shorter side after the resize, before the center crop."""
        return resize_size(self.input_size, self.crop_pct)

    def replace(self, **changes: Any) -> "DataConfig":
        """A checked copy with ``changes``."""
        return DataConfig(**{**asdict(self), **changes})

    def to_dict(self) -> Dict[str, Any]:
        """JSON/YAML-able dict (lists for tuples), as stored in checkpoints and manifests."""
        data = asdict(self)
        for key in ("mean", "std", "class_names"):
            if data[key] is not None:
                data[key] = list(data[key])
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "data_config") -> "DataConfig":
        """Read :meth:`to_dict`'s output; errors name ``source`` and the key."""
        if not isinstance(data, Mapping):
            raise ValueError(f"{source}: data_config must be a mapping, got {type(data).__name__}")
        unknown = sorted(set(data) - set(_FIELDS))
        if unknown:
            raise ValueError(f"{source}: unknown data_config key(s) {', '.join(map(repr, unknown))}")
        if "input_size" not in data:
            raise ValueError(f"{source}: data_config has no input_size")
        try:
            return cls(**{k: (tuple(v) if k in ("mean", "std", "class_names") and v is not None else v)
                          for k, v in data.items()})
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{source}: bad data_config ({exc})") from None


def default_data_config(model: str) -> Dict[str, Any]:
    """The evaluation preprocessing defaults of a registered model (by its family)."""
    return dict(FAMILY_DEFAULTS[model_family(model)])


def resolve_data_config(model: str, net: Any, *, stored: Optional[Mapping[str, Any]] = None,
                        config: Optional[Mapping[str, Any]] = None, class_names: Optional[Sequence[str]] = None,
                        source: str = "the checkpoint") -> DataConfig:
    """The data config of a run: family defaults < ``stored`` (a checkpoint's) < ``config`` keys.

    ``input_size`` and ``num_classes`` come from ``net``; a stored data config that disagrees with the
    network is an error naming ``source``. ``config`` values of ``crop_pct``, ``interpolation``, ``mean``
    and ``std`` win when not ``None``. ``class_names`` (the training folders) win over stored ones.
    """
    values: Dict[str, Any] = default_data_config(model)
    input_size, num_classes = int(net.spec.image_size), int(net.spec.num_classes)
    names = None
    if stored:
        saved = DataConfig.from_dict(stored, source)
        if saved.input_size != input_size or (saved.num_classes not in (None, num_classes)):
            raise ValueError(f"{source}: its data_config is for {saved.input_size}-pixel images and "
                             f"{saved.num_classes} classes, but the model takes {input_size} pixels and has "
                             f"{num_classes} classes")
        values.update(crop_pct=saved.crop_pct, interpolation=saved.interpolation, mean=saved.mean, std=saved.std)
        names = saved.class_names
    for key in ("crop_pct", "interpolation", "mean", "std"):
        if config is not None and config.get(key) is not None:
            values[key] = config[key]
    if class_names is not None:
        names = tuple(class_names)
    if names is not None and len(names) != num_classes:
        raise ValueError(f"{len(names)} class names but the model has {num_classes} classes")
    return DataConfig(input_size=input_size, num_classes=num_classes, class_names=names, **values)


def eval_transforms(data_config: DataConfig) -> list:
    """The evaluation transform, as MindData operations from RGB ``uint8`` HWC to normalized float32 CHW.

    Shorter side resized to ``data_config.resize`` (``int(input_size / crop_pct)``) with its interpolation,
    center crop of ``input_size``, ``(x - 255 * mean) / (255 * std)``, HWC to CHW.
    """
    modes = {"bicubic": Inter.BICUBIC, "bilinear": Inter.BILINEAR}
    return [
        vision.Resize(data_config.resize, modes[data_config.interpolation]),
        vision.CenterCrop(data_config.input_size),
        vision.Normalize([m * 255 for m in data_config.mean], [s * 255 for s in data_config.std]),
        vision.HWC2CHW(),
    ]


@functools.lru_cache(maxsize=8)
def _composed(data_config: DataConfig):
    return transforms.Compose(eval_transforms(data_config))


def preprocess(image: Any, data_config: DataConfig) -> np.ndarray:
    """Apply :func:`eval_transforms` to one RGB image (``PIL.Image`` or ``uint8 [H, W, 3]``): ``[3, S, S]``."""
    pixels = np.asarray(image, dtype=np.uint8)
    if pixels.ndim != 3 or pixels.shape[2] != 3 or 0 in pixels.shape:
        raise ValueError(f"expected an RGB image [H, W, 3], got shape {pixels.shape}")
    return np.ascontiguousarray(_composed(data_config)(pixels), dtype=np.float32)


def load_image(path: PathLike, data_config: Union[DataConfig, int] = 224) -> np.ndarray:
    """Read (:func:`read_rgb`) and :func:`preprocess` one image file as the model's float32 ``[3, S, S]``
    input; ``OSError`` naming the file if unreadable. ``data_config`` is the run's :class:`DataConfig` (an
    image size gives the ImageNet defaults)."""
    if not isinstance(data_config, DataConfig):
        data_config = DataConfig(input_size=data_config)
    return preprocess(read_rgb(path), data_config)


def preprocessing_manifest(data_config: DataConfig) -> Dict[str, Any]:
    """What :func:`eval_transforms` does, spelled out for a runtime without this package."""
    return {
        "layout": "NCHW", "dtype": "float32", "channels": "RGB", "decode": "8-bit RGB",
        "resize_shorter_side": data_config.resize, "interpolation": data_config.interpolation,
        "center_crop": data_config.input_size, "crop_pct": data_config.crop_pct,
        "scale": 1.0 / 255.0, "mean": list(data_config.mean), "std": list(data_config.std),
        "formula": "(pixel / 255 - mean) / std after the resize and the center crop",
    }


def denormalize(image: np.ndarray, data_config: Optional[DataConfig] = None) -> np.ndarray:
    """Undo the normalization of one ``[3, H, W]`` image: RGB ``uint8 [H, W, 3]``."""
    mean_rgb = data_config.mean if data_config is not None else IMAGENET_MEAN
    std_rgb = data_config.std if data_config is not None else IMAGENET_STD
    mean = np.asarray(mean_rgb, dtype=np.float32)[:, None, None] * 255
    std = np.asarray(std_rgb, dtype=np.float32)[:, None, None] * 255
    return np.clip(np.rint(image * std + mean), 0, 255).astype(np.uint8).transpose(1, 2, 0)

