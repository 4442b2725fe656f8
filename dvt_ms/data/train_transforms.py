"""Training data: the DeiT/DVT augmentation recipe as a MindData pipeline over an ImageFolder split.

Per image: decode (PIL, as for evaluation: unreadable files are dropped and counted), then MindData's
``RandomResizedCrop`` (scale 0.08-1, bicubic), ``RandomHorizontalFlip``, ``RandAugment``, ``Normalize``
(ImageNet mean/std) and ``HWC2CHW``. Labels: MindData's ``OneHot`` with its ``smoothing_rate`` (off-class
value ``s / C``, on-class ``1 - s + s / C``, as timm). Per batch: random erasing (see below), then
MindData's ``MixUpBatch`` or ``CutMixBatch``; ``transforms.RandomChoice`` picks one of the two for each
batch and ``transforms.RandomApply`` applies the pick with probability ``mixup_prob``.

Differences from timm that MindData imposes (all documented on the functions below):

* ``RandAugment`` is the torchvision-style operation: every chosen op is applied (timm: each with
  probability 0.5) at a fixed magnitude; the timm level ``m`` (0-10) maps to ``m / 10`` of the range
  (bin ``round(m * 3)`` of 31), ``mstd`` (magnitude noise) is not available and is ignored, and only the
  increasing-severity op set (timm's ``inc1``) exists.
* ``MixUpBatch`` draws one ``lam ~ Beta(alpha, alpha)`` per batch and mixes every image with a random
  permutation of the batch (timm: the reversed batch); ``CutMixBatch`` draws a box and ``lam`` per image.
  Targets are weighted by the actual pasted area.
* ``RandomChoice`` has no weights: ``mixup_switch_prob`` is realised by listing ``CutMixBatch`` k times
  and ``MixUpBatch`` n - k times with ``k / n`` the closest fraction with ``n <= 20`` (exact for 0.5).
* Random erasing is :class:`BatchRandomErasing`, not MindData's ``vision.RandomErasing``. That one does
  work on CHW float32 images with ``value='random'``, but it is a Python operation drawing from the
  process-wide ``random``/``numpy.random`` streams, so its output depends on thread scheduling (with more
  than one worker) and on every other user of those streams, including other pipelines' prefetching.
  :class:`BatchRandomErasing` runs as the batch operation's ``per_batch_map`` (timm's pixel mode, one box)
  with a generator keyed by (seed, shard, epoch, batch), so it is reproducible with any number of workers.

Determinism. MindData seeds the shuffle and its C++ random operations from
``mindspore.dataset.config.get_seed()`` *when an iterator is created*; random erasing takes the seed in
force when the pipeline is built. ``seed=`` sets it (``set_seed``) at build time, so build a pipeline and
iterate it without changing the seed in between.
"""
import logging
import math
import os
import re
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import mindspore as ms
import mindspore.dataset as ds
from mindspore.dataset import transforms, vision
from mindspore.dataset.vision import Inter
from PIL import ImageFile

from .dataset import IMAGENET_MEAN, IMAGENET_STD, ImageFolderInfo, ImageReader, check_image_folder, file_source
from .train_dataset import SkippedImages, TrainDataset

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_AUTO_AUGMENT", "BatchRandomErasing", "RandAugmentConfig", "batch_mix_op", "create_train_dataset", "parse_rand_augment", "train_transforms",
]

PathLike = Union[str, os.PathLike]
DEFAULT_AUTO_AUGMENT = "rand-m9-mstd0.5-inc1"
RAND_AUGMENT_BINS = 31
_MAX_SWITCH_DENOMINATOR = 20
_INTERPOLATIONS = ("bicubic", "bilinear")


def _inter(interpolation: str):
    modes = {"bicubic": Inter.BICUBIC, "bilinear": Inter.BILINEAR}
    if interpolation not in modes:
        raise ValueError(f"interpolation must be one of {', '.join(modes)}, got {interpolation!r}")
    return modes[interpolation]


def _check_int(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_prob(name: str, value, upper_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a number in [0, 1{')' if upper_open else ']'}, got {value!r}")
    if value < 0 or value > 1 or (upper_open and value == 1):
        raise ValueError(f"{name} must be in [0, 1{')' if upper_open else ']'}, got {value!r}")
    return float(value)


def _check_alpha(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a Beta-distribution alpha >= 0 (0 disables it), got {value!r}")
    return float(value)


@dataclass(frozen=True)
class RandAugmentConfig:
    """A parsed timm-style RandAugment string, e.g. ``rand-m9-mstd0.5-inc1``."""

    num_ops: int = 2
    magnitude: float = 9.0
    magnitude_std: float = 0.0
    increasing: bool = True

    @property
    def mindspore_magnitude(self) -> int:
        """Magnitude bin of MindData's ``RandAugment`` (31 bins) matching timm's level (0-10)."""
        return int(round(self.magnitude / 10 * (RAND_AUGMENT_BINS - 1)))

    def to_op(self, interpolation: str = "bicubic"):
        """MindData ``vision.RandAugment`` for this configuration; areas moved in are filled with the
        ImageNet mean colour (as timm)."""
        if self.magnitude_std:
            logger.info("RandAugment: magnitude noise (mstd%g) is not available in MindData; using the "
                        "fixed magnitude %d/%d", self.magnitude_std, self.mindspore_magnitude,
                        RAND_AUGMENT_BINS - 1)
        fill = tuple(int(round(m * 255)) for m in IMAGENET_MEAN)
        return vision.RandAugment(num_ops=self.num_ops, magnitude=self.mindspore_magnitude,
                                  num_magnitude_bins=RAND_AUGMENT_BINS, interpolation=_inter(interpolation),
                                  fill_value=fill)


def parse_rand_augment(spec: str) -> RandAugmentConfig:
    """Parse ``rand-m<level>[-n<ops>][-mstd<std>][-inc<0|1>]`` (timm's syntax, level in [0, 10]).

    Raises ``ValueError`` for other augmentation policies, unknown or malformed keys, and ``inc0``
    (MindData only implements the increasing-severity operations).
    """
    if not isinstance(spec, str):
        raise ValueError(f"auto_augment must be a string like {DEFAULT_AUTO_AUGMENT!r} or None, got {spec!r}")
    parts = spec.split("-")
    if parts[0] != "rand":
        raise ValueError(f"auto_augment {spec!r}: only RandAugment ('rand-m9-...') is supported")
    values: Dict[str, float] = {}
    for part in parts[1:]:
        match = re.fullmatch(r"([a-z]+)(\d+(?:\.\d*)?)", part)
        if match is None or match.group(1) not in ("m", "n", "mstd", "inc"):
            raise ValueError(f"auto_augment {spec!r}: cannot use {part!r} (known: m<level>, n<ops>, "
                             f"mstd<std>, inc<0|1>)")
        values[match.group(1)] = float(match.group(2))
    config = RandAugmentConfig(num_ops=int(values.get("n", 2)), magnitude=values.get("m", 9.0),
                               magnitude_std=values.get("mstd", 0.0), increasing=values.get("inc", 1.0) != 0)
    if config.num_ops < 1 or config.num_ops != values.get("n", 2):
        raise ValueError(f"auto_augment {spec!r}: n must be a positive integer")
    if not 0 <= config.magnitude <= 10:
        raise ValueError(f"auto_augment {spec!r}: m must be in [0, 10], got {config.magnitude:g}")
    if not config.increasing:
        raise ValueError(f"auto_augment {spec!r}: MindData's RandAugment only has the increasing-severity "
                         "operations; use inc1")
    return config


def train_transforms(image_size: int = 224, auto_augment: Optional[str] = DEFAULT_AUTO_AUGMENT,
                     hflip: float = 0.5, interpolation: str = "bicubic",
                     scale: Tuple[float, float] = (0.08, 1.0)) -> list:
    """MindData operations from a decoded RGB ``uint8`` HWC image to a normalized float32 CHW one:
    ``RandomResizedCrop``, ``RandomHorizontalFlip`` (if ``hflip > 0``), ``RandAugment`` (unless
    ``auto_augment`` is None or empty), ``Normalize``, ``HWC2CHW``."""
    image_size = _check_int("image_size", image_size)
    hflip = _check_prob("hflip", hflip)
    inter = _inter(interpolation)
    if (not isinstance(scale, (tuple, list)) or len(scale) != 2
            or not all(isinstance(s, (int, float)) and not isinstance(s, bool) for s in scale)
            or not 0 < scale[0] <= scale[1] <= 1):
        raise ValueError(f"scale must be (min, max) with 0 < min <= max <= 1, got {scale!r}")
    ops = [vision.RandomResizedCrop(image_size, scale=tuple(float(s) for s in scale), interpolation=inter)]
    if hflip > 0:
        ops.append(vision.RandomHorizontalFlip(hflip))
    if auto_augment:
        ops.append(parse_rand_augment(auto_augment).to_op(interpolation))
    ops += [vision.Normalize([m * 255 for m in IMAGENET_MEAN], [s * 255 for s in IMAGENET_STD]),
            vision.HWC2CHW()]
    return ops


def batch_mix_op(mixup: float = 0.8, cutmix: float = 1.0, switch_prob: float = 0.5, mix_prob: float = 1.0):
    """Batch-level MindData operation on ``(images NCHW, one-hot labels [B, C])``, or None when off.

    ``mixup``/``cutmix`` are the Beta alphas (0 disables one); with both on, each batch gets CutMix with
    probability ``switch_prob`` (as the closest fraction with denominator <= 20) and MixUp otherwise;
    the whole step is applied to a batch with probability ``mix_prob``.
    """
    mixup, cutmix = _check_alpha("mixup", mixup), _check_alpha("cutmix", cutmix)
    switch_prob, mix_prob = _check_prob("mixup_switch_prob", switch_prob), _check_prob("mixup_prob", mix_prob)
    if mix_prob == 0 or (mixup == 0 and cutmix == 0):
        return None
    mix_op = vision.MixUpBatch(alpha=mixup) if mixup > 0 else None
    cut_op = vision.CutMixBatch(vision.ImageBatchFormat.NCHW, alpha=cutmix, prob=1.0) if cutmix > 0 else None
    if mix_op is None or switch_prob == 1:
        op = cut_op if cut_op is not None else mix_op
    elif cut_op is None or switch_prob == 0:
        op = mix_op
    else:
        frac = Fraction(switch_prob).limit_denominator(_MAX_SWITCH_DENOMINATOR)
        if frac.numerator == 0 or frac.numerator == frac.denominator:
            op = cut_op if frac.numerator else mix_op
        else:
            op = transforms.RandomChoice([cut_op] * frac.numerator
                                         + [mix_op] * (frac.denominator - frac.numerator))
        if float(frac) != switch_prob:
            logger.warning("mixup_switch_prob=%g is applied as %s (MindData's RandomChoice is uniform)",
                           switch_prob, frac)
    return transforms.RandomApply([op], prob=mix_prob) if mix_prob < 1 else op


class BatchRandomErasing:
    """Random erasing of each image of a batch, as MindData ``batch(per_batch_map=...)`` (timm's pixel mode).

    Each CHW image is, with probability ``prob``, given one box of area ``uniform(*scale)`` of the image
    and aspect ratio log-uniform in ``ratio`` (up to ``max_attempts`` draws until it fits), filled with
    N(0, 1) noise (the normalized space's mean and spread). Draws come from a generator keyed by
    ``(seed, stream, epoch, batch)``, so results do not depend on threads or on other random users.
    """

    def __init__(self, prob: float = 0.25, scale: Tuple[float, float] = (0.02, 1 / 3),
                 ratio: Tuple[float, float] = (0.3, 1 / 0.3), seed: int = 0, stream: int = 0,
                 max_attempts: int = 10):
        self.prob = _check_prob("reprob", prob)
        if not 0 < scale[0] <= scale[1] <= 1 or not 0 < ratio[0] <= ratio[1]:
            raise ValueError(f"bad erasing scale {scale!r} or ratio {ratio!r}")
        self.scale = (float(scale[0]), float(scale[1]))
        self.log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
        self.seed = int(seed)
        self.stream = int(stream)
        self.max_attempts = int(max_attempts)

    def erase(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One image ``[C, H, W]``: erased copy, or the image itself when not erased."""
        if rng.random() >= self.prob:
            return image
        channels, height, width = image.shape
        for _ in range(self.max_attempts):
            area = rng.uniform(*self.scale) * height * width
            aspect = math.exp(rng.uniform(*self.log_ratio))
            h = int(round(math.sqrt(area * aspect)))
            w = int(round(math.sqrt(area / aspect)))
            if 0 < h < height and 0 < w < width:
                top = int(rng.integers(0, height - h + 1))
                left = int(rng.integers(0, width - w + 1))
                out = np.array(image, copy=True)
                out[:, top:top + h, left:left + w] = rng.standard_normal((channels, h, w), dtype=np.float32)
                return out
        return image

    def __call__(self, images: List[np.ndarray], batch_info) -> Tuple[List[np.ndarray]]:
        key = [self.seed, self.stream, batch_info.get_epoch_num(), batch_info.get_batch_num()]
        rng = np.random.default_rng(key)
        return ([self.erase(image, rng) for image in images],)


def create_train_dataset(root_split_dir: PathLike, batch_size: int, num_classes: int, image_size: int = 224,
                         num_shards: Optional[int] = None, shard_id: Optional[int] = None,
                         seed: Optional[int] = None, num_parallel_workers: int = 2,
                         auto_augment: Optional[str] = DEFAULT_AUTO_AUGMENT, reprob: float = 0.25,
                         mixup: float = 0.8, cutmix: float = 1.0, mixup_switch_prob: float = 0.5,
                         mixup_prob: float = 1.0, label_smoothing: float = 0.1, hflip: float = 0.5,
                         interpolation: str = "bicubic", drop_remainder: bool = True,
                         scale: Sequence[float] = (0.08, 1.0),
                         info: Optional[ImageFolderInfo] = None) -> TrainDataset:
    """Shuffled, augmented training pipeline over ``root_split_dir`` (``ROOT/SPLIT``), DeiT/DVT recipe.

    ``mixup``/``cutmix`` are Beta alphas (0 disables); targets are soft (float32 ``[B, num_classes]``,
    label smoothing folded in) if any of mixup, cutmix or ``label_smoothing`` is on, else int32 labels.
    ``seed``, if given, is passed to ``mindspore.dataset.config.set_seed`` (process-wide; it also seeds
    ``random`` and ``numpy.random``); without it the current MindData seed is used (see the module notes
    on when MindData reads it). ``num_shards`` /
    ``shard_id`` read one shard of a shuffle shared by all shards (MindData pads the shards to equal
    length). Unreadable images are dropped and counted (``TrainDataset.skipped``). The folder is checked
    with :func:`~dvt_ms.data.dataset.check_image_folder` against ``num_classes`` unless ``info`` is given.
    Invalid arguments raise ``ValueError`` before anything is built.
    """
    batch_size = _check_int("batch_size", batch_size)
    num_classes = _check_int("num_classes", num_classes)
    image_size = _check_int("image_size", image_size)
    num_parallel_workers = _check_int("num_parallel_workers", num_parallel_workers)
    if seed is not None:
        seed = _check_int("seed", seed, minimum=0)
    if num_shards is not None:
        num_shards = _check_int("num_shards", num_shards)
        if isinstance(shard_id, bool) or not isinstance(shard_id, int) or not 0 <= shard_id < num_shards:
            raise ValueError(f"shard_id must be an integer in [0, {num_shards}), got {shard_id!r}")
    elif shard_id is not None:
        raise ValueError("shard_id needs num_shards")
    reprob = _check_prob("reprob", reprob)
    label_smoothing = _check_prob("label_smoothing", label_smoothing, upper_open=True)
    if not isinstance(drop_remainder, bool):
        raise ValueError(f"drop_remainder must be True or False, got {drop_remainder!r}")
    image_ops = train_transforms(image_size, auto_augment, hflip, interpolation, scale)
    mix_op = batch_mix_op(mixup, cutmix, mixup_switch_prob, mixup_prob)
    soft_targets = mix_op is not None or label_smoothing > 0

    split_dir = Path(root_split_dir)
    if info is None:
        info = check_image_folder(split_dir.parent, split_dir.name, num_classes)
    elif info.num_classes != num_classes:
        raise ValueError(f"{info.root} has {info.num_classes} classes but num_classes={num_classes}")
    rows = math.ceil(info.num_images / (num_shards or 1))
    if drop_remainder and rows < batch_size:
        raise ValueError(f"{info.root}: {rows} image(s) per shard is less than batch_size={batch_size}, "
                         "so drop_remainder=True would give no batch")
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        logger.warning("PIL.ImageFile.LOAD_TRUNCATED_IMAGES is set: truncated images will be used, "
                       "not skipped")
    if seed is not None:
        ds.config.set_seed(seed)

    skipped = SkippedImages(info)
    source = file_source(info, shuffle=True, num_shards=num_shards, shard_id=shard_id)
    pipeline = source.map(ImageReader(info), input_columns=["index"], output_columns=["image", "valid", "index"],
                          num_parallel_workers=num_parallel_workers)
    pipeline = pipeline.filter(skipped, input_columns=["valid", "index"], num_parallel_workers=1)
    pipeline = pipeline.project(["image", "label"])
    pipeline = pipeline.map(image_ops, input_columns=["image"], num_parallel_workers=num_parallel_workers)
    if soft_targets:
        label_ops = [transforms.OneHot(num_classes, smoothing_rate=label_smoothing),
                     transforms.TypeCast(ms.float32)]
    else:
        label_ops = [transforms.TypeCast(ms.int32)]
    pipeline = pipeline.map(label_ops, input_columns=["label"], num_parallel_workers=1)
    if reprob > 0:
        erasing = BatchRandomErasing(reprob, seed=ds.config.get_seed(), stream=shard_id or 0)
        pipeline = pipeline.batch(batch_size, drop_remainder=drop_remainder, per_batch_map=erasing,
                                  input_columns=["image"], num_parallel_workers=num_parallel_workers)
    else:
        pipeline = pipeline.batch(batch_size, drop_remainder=drop_remainder)
    if mix_op is not None:
        pipeline = pipeline.map(mix_op, input_columns=["image", "label"],
                                num_parallel_workers=num_parallel_workers)
    result = TrainDataset(pipeline, info, skipped, batch_size, num_classes, soft_targets, rows, drop_remainder,
                          ds.config.get_seed())
    pipeline.dataset_size = result.steps_per_epoch
    logger.info("%s: %d images%s, %d batches of %d per epoch, %s targets", info.root, info.num_images,
                f" (shard {shard_id}/{num_shards}: {rows})" if num_shards else "", result.steps_per_epoch,
                batch_size, "soft" if soft_targets else "hard")
    return result
