"""ImageFolder evaluation data with MindData: checked folders, deterministic order, unreadable images skipped.

Layout: ``ROOT/SPLIT/<class>/<image>``. Classes are the sorted sub-folder names of the split (hidden
ones, starting with ``.``, are ignored); labels are their indices. Images are the files with an image
extension, sorted by name, exactly as MindData's ``ImageFolderDataset`` lists them.

Unreadable images. MindData's own ``Decode`` with ``set_error_samples_mode(SKIP)`` does skip corrupt and
truncated files, but (MindSpore 2.10) it writes the offending image to ``./abnormal_image.jpg`` in the
working directory, changes a process-wide setting, and only reports the skipped file in a C++ log line;
and ``ImageFolderDataset`` reads the files itself, so a dangling link or a file the user may not read
stops the whole pipeline. So the pipeline's source is the checked file list (:func:`file_source`: file
index and label), and a Python map operation (:class:`ImageReader`) opens and decodes each file with
:func:`dvt_ms.data.decode.read_rgb` (the decoder of every script), returning a ``valid`` flag and the file
index. Invalid rows travel through the pipeline with a tiny placeholder image and are dropped by
:class:`EvalDataset` when batches are read; every row carries its file index, so the count and the names
of the skipped files are exact. Dangling links are listed (and then skipped and counted), not silently left
out. The transform is :func:`dvt_ms.data.data_config.eval_transforms` of the run's data config (MindData's
C++ resize, center crop, normalization and HWC->CHW), the one every script uses.
"""
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import mindspore.dataset as ds
from PIL import ImageFile

from .data_config import IMAGE_EXTENSIONS, IMAGENET_MEAN, IMAGENET_STD, DataConfig, denormalize, eval_transforms
from .data_config import resize_size  # noqa: F401  (re-exported)
from .decode import read_rgb

logger = logging.getLogger(__name__)

__all__ = [
    "IMAGE_EXTENSIONS", "IMAGENET_MEAN", "IMAGENET_STD", "DatasetError", "ImageFolderInfo", "EvalDataset",
    "check_image_folder", "create_eval_dataset", "eval_transforms", "resize_size", "denormalize",
    "file_source", "ImageReader",
]

PathLike = Union[str, os.PathLike]
_PLACEHOLDER = np.zeros((8, 8, 3), dtype=np.uint8)


class DatasetError(ValueError):
    """A data folder that cannot be used; the message names the path and the numbers at fault."""


@dataclass(frozen=True)
class ImageFolderInfo:
    """A checked split folder: classes, and every image file with its label, in MindData's order."""

    root: Path
    classes: Tuple[str, ...]
    files: Tuple[Path, ...]
    labels: Tuple[int, ...]
    sizes: Tuple[int, ...]
    extensions: Tuple[str, ...]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def num_images(self) -> int:
        return len(self.files)

    @property
    def class_indexing(self) -> Dict[str, int]:
        return {name: i for i, name in enumerate(self.classes)}


def _is_image(entry: os.DirEntry) -> bool:
    """An image file by extension; a dangling link counts too (it is then skipped as unreadable)."""
    return os.path.splitext(entry.name)[1].lower() in IMAGE_EXTENSIONS and (entry.is_file() or entry.is_symlink())


def _size(entry: os.DirEntry) -> int:
    try:
        return entry.stat().st_size
    except OSError:  # a dangling link
        return 0


def check_image_folder(root: PathLike, split: str, num_classes: Optional[int] = None,
                       extra_outputs: int = 0) -> ImageFolderInfo:
    """Check ``root/split`` is a usable ImageFolder and list it.

    Raises :class:`DatasetError` for a missing root or split folder, a split without class folders,
    class folders without images (all of them are named), or ``num_classes`` differing from the number
    of class folders. ``extra_outputs`` (a model's :func:`~dvt_ms.models.model_extra_outputs`, for
    evaluation) also accepts ``num_classes - extra_outputs`` folders, with a warning: the folders are labels
    0..C-1 and the outputs past them are never right, as the official MindSpore DVT's 1001 outputs are
    evaluated on ImageNet's 1000 classes.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: data folder does not exist")
    split_dir = root / split
    if not split_dir.is_dir():
        present = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        raise DatasetError(f"{split_dir}: missing split folder {split!r} "
                           f"(folders in {root}: {', '.join(present) or 'none'})")
    with os.scandir(split_dir) as entries:
        entries = list(entries)
    hidden = sorted(e.name for e in entries if e.name.startswith(".") and e.is_dir())
    if hidden:
        logger.warning("%s: ignoring hidden folder(s) %s", split_dir, ", ".join(hidden))
    classes = sorted(e.name for e in entries if e.is_dir() and not e.name.startswith("."))
    if not classes:
        loose = sum(1 for e in entries if _is_image(e))
        extra = f"; it holds {loose} image(s) directly, which must go into class folders" if loose else ""
        raise DatasetError(f"{split_dir}: no class folders (expected {split_dir}/<class>/<image>){extra}")
    files: List[Path] = []
    labels: List[int] = []
    sizes: List[int] = []
    extensions = set()
    empty = []
    for label, name in enumerate(classes):
        with os.scandir(split_dir / name) as class_entries:
            images = sorted((e for e in class_entries if _is_image(e)), key=lambda e: e.name)
        if not images:
            empty.append(name)
        for entry in images:
            files.append(Path(entry.path))
            labels.append(label)
            sizes.append(_size(entry))
            extensions.add(os.path.splitext(entry.name)[1])
    if empty:
        shown = ", ".join(str(split_dir / n) for n in empty[:10]) + (", ..." if len(empty) > 10 else "")
        raise DatasetError(f"{split_dir}: {len(empty)} of {len(classes)} class folder(s) hold no images "
                           f"({'/'.join(IMAGE_EXTENSIONS)}): {shown}")
    if extra_outputs and num_classes is not None and num_classes - extra_outputs == len(classes):
        logger.warning("%s has %d class folders and the model %d outputs: outputs %d..%d are no label here "
                       "and count as wrong predictions", split_dir, len(classes), num_classes, len(classes),
                       num_classes - 1)
    elif num_classes is not None and num_classes != len(classes):
        raise DatasetError(f"{split_dir} has {len(classes)} class folders but the model has "
                           f"num_classes={num_classes}")
    return ImageFolderInfo(split_dir, tuple(classes), tuple(files), tuple(labels), tuple(sizes),
                           tuple(sorted(extensions)))


class ImageReader:
    """MindData map operation: file index -> ``(image uint8 [H, W, 3], valid, index)``; never raises.

    An unreadable file (see :func:`~dvt_ms.data.decode.read_rgb`) gives a placeholder image and
    ``valid = False``; the reason is logged at debug level (the pipelines report skipped files by name).
    """

    def __init__(self, info: ImageFolderInfo):
        self.files = info.files

    def __call__(self, index: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        i = int(index)
        try:
            image = np.asarray(read_rgb(self.files[i]), dtype=np.uint8)
            return image, np.array(True), np.array(i, dtype=np.int64)
        except OSError as exc:
            logger.debug("%s", exc)
            return _PLACEHOLDER, np.array(False), np.array(i, dtype=np.int64)


def file_source(info: ImageFolderInfo, shuffle: bool = False, num_shards: Optional[int] = None,
                shard_id: Optional[int] = None, sampler=None, num_parallel_workers: int = 1):
    """MindData source of ``(index, label)`` rows over ``info``'s files (in ``info``'s order).

    Sharding, shuffling and samplers behave as for MindData's ``ImageFolderDataset``: shard ``k`` of
    ``S`` gets rows ``k, k + S, ...`` padded by wrapping around to ``ceil(N / S)``; the shuffle follows
    the MindData seed.
    """
    columns = {"index": np.arange(info.num_images, dtype=np.int64),
               "label": np.asarray(info.labels, dtype=np.int32)}
    kwargs = dict(num_parallel_workers=num_parallel_workers)
    if sampler is not None:
        return ds.NumpySlicesDataset(columns, sampler=sampler, **kwargs)
    return ds.NumpySlicesDataset(columns, shuffle=shuffle, num_shards=num_shards, shard_id=shard_id, **kwargs)



def _shard_rows(num_files: int, num_shards: int, shard_id: int) -> Tuple[List[int], int]:
    """File index of each row of a non-shuffled MindData shard, and how many are real (not padding).

    MindData gives shard ``k`` the files ``k, k + S, k + 2S, ...`` and pads every shard to
    ``ceil(N / S)`` rows by wrapping around; padding rows are dropped so that the shards add up to N.
    """
    per_shard = math.ceil(num_files / num_shards)
    positions = [shard_id + i * num_shards for i in range(per_shard)]
    real = sum(1 for p in positions if p < num_files)
    return [p % num_files for p in positions], real


class EvalDataset:
    """Batches ``(images [B, 3, H, W] float32, labels [B] int64)`` of the readable images.

    Iterating reads the MindData pipeline (``dataset``) once, drops unreadable images and fills
    ``skipped`` / ``skipped_files`` (exact after a full pass). Each row's file index is checked against
    the expected order; a mismatch raises ``RuntimeError`` instead of mislabelling.
    """

    def __init__(self, dataset, info: ImageFolderInfo, rows: Sequence[int], real_rows: int, batch_size: int):
        self.dataset = dataset
        self.info = info
        self.rows = list(rows)
        self.real_rows = real_rows
        self.batch_size = batch_size
        self.skipped = 0
        self.skipped_files: List[str] = []

    @property
    def num_files(self) -> int:
        """Images this dataset reads (before skipping)."""
        return self.real_rows

    def __iter__(self) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
        skipped: List[str] = []
        seen = 0
        for images, labels, valid, index in self.dataset.create_tuple_iterator(output_numpy=True, num_epochs=1):
            count = labels.shape[0]
            if seen + count > len(self.rows):
                raise RuntimeError(f"{self.info.root}: MindData produced more rows than the "
                                   f"{len(self.rows)} expected")
            files = np.asarray(self.rows[seen:seen + count])
            keep = np.arange(count) + seen < self.real_rows  # drop shard padding
            mismatch = index.astype(np.int64) != files
            if mismatch.any():
                i = int(np.argmax(mismatch))
                raise RuntimeError(f"{self.info.root}: row {seen + i} is file {int(index[i])}, expected file "
                                   f"{int(files[i])} ({self.info.files[files[i]]})")
            bad = keep & ~valid.astype(bool)
            skipped.extend(str(self.info.files[f]) for f in files[bad])
            keep &= valid.astype(bool)
            seen += count
            if keep.any():
                yield images[keep], labels[keep].astype(np.int64)
        if seen != len(self.rows):
            raise RuntimeError(f"{self.info.root}: MindData produced {seen} rows, expected {len(self.rows)}")
        self.skipped = len(skipped)
        self.skipped_files = skipped
        if skipped:
            logger.warning("%s: skipped %d unreadable image(s) of %d: %s", self.info.root, len(skipped),
                           self.real_rows, ", ".join(skipped[:5]) + (", ..." if len(skipped) > 5 else ""))
        else:
            logger.info("%s: read %d images, none skipped", self.info.root, self.real_rows)


def create_eval_dataset(split_dir: PathLike, batch_size: int, data_config: Union[DataConfig, int] = 224,
                        num_shards: Optional[int] = None, shard_id: Optional[int] = None,
                        crop_pct: Optional[float] = None, interpolation: Optional[str] = None,
                        num_parallel_workers: int = 2, num_classes: Optional[int] = None,
                        indices: Optional[Sequence[int]] = None,
                        info: Optional[ImageFolderInfo] = None) -> EvalDataset:
    """Evaluation pipeline over ``split_dir`` (``ROOT/SPLIT``): deterministic order, no shuffling.

    Read and decode (:func:`~dvt_ms.data.decode.read_rgb`, unreadable files flagged),
    ``eval_transforms(data_config)`` (resize, center crop, normalize, HWC2CHW), ``batch(drop_remainder=False)``.
    ``data_config`` is the run's :class:`DataConfig`; an image size instead builds the ImageNet defaults,
    changed by ``crop_pct`` and ``interpolation``. ``indices`` restricts the
    dataset to those files (in that order); ``num_shards``/``shard_id`` read one shard. The folder is
    checked with :func:`check_image_folder` (against ``num_classes`` if given) unless ``info`` is passed.
    """
    split_dir = Path(split_dir)
    if isinstance(data_config, DataConfig):
        if crop_pct is not None or interpolation is not None:
            raise ValueError("pass crop_pct/interpolation in the data config, not next to it")
    else:
        data_config = DataConfig(input_size=data_config, **({} if crop_pct is None else {"crop_pct": crop_pct}),
                                 **({} if interpolation is None else {"interpolation": interpolation}))
    if info is None:
        info = check_image_folder(split_dir.parent, split_dir.name, num_classes)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        logger.warning("PIL.ImageFile.LOAD_TRUNCATED_IMAGES is set: truncated images will be used, "
                       "not skipped")
    if indices is not None:
        if num_shards is not None:
            raise ValueError("indices and num_shards cannot be combined")
        rows = [int(i) for i in indices]
        if not rows:
            raise ValueError("indices must not be empty")
        bad = [i for i in rows if not 0 <= i < info.num_images]
        if bad:
            raise ValueError(f"{split_dir}: indices {bad[:5]} out of range for {info.num_images} images")
        source = file_source(info, sampler=ds.SubsetSampler(rows))
        real = len(rows)
    elif num_shards is not None:
        if shard_id is None or not 0 <= shard_id < num_shards:
            raise ValueError(f"shard_id must be in [0, {num_shards}), got {shard_id!r}")
        rows, real = _shard_rows(info.num_images, num_shards, shard_id)
        source = file_source(info, num_shards=num_shards, shard_id=shard_id)
    else:
        if shard_id is not None:
            raise ValueError("shard_id needs num_shards")
        rows, real = list(range(info.num_images)), info.num_images
        source = file_source(info)
    pipeline = source.map(ImageReader(info), input_columns=["index"], output_columns=["image", "valid", "index"],
                          num_parallel_workers=num_parallel_workers)
    pipeline = pipeline.project(["image", "label", "valid", "index"])
    pipeline = pipeline.map(eval_transforms(data_config), input_columns=["image"],
                            num_parallel_workers=num_parallel_workers)
    pipeline = pipeline.batch(batch_size, drop_remainder=False)
    return EvalDataset(pipeline, info, rows, real, batch_size)
