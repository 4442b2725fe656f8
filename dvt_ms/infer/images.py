"""Image files for inference: found under the given paths and read in batches, preprocessed by the model's data
config (:func:`dvt_ms.data.load_image`); unreadable files are skipped and reported."""
import logging
import os
from pathlib import Path
from typing import Iterable, Iterator, List, Tuple, Union

import numpy as np

from ..data.data_config import IMAGE_EXTENSIONS, DataConfig, load_image

logger = logging.getLogger(__name__)

__all__ = ["iter_image_paths", "iter_image_batches"]


def iter_image_paths(inputs: Iterable[Union[str, os.PathLike]]) -> Iterator[Path]:
    """Files named in ``inputs`` and image files (by extension) under the folders there, walked lazily in
    sorted order. A path that does not exist raises ``FileNotFoundError`` when it is reached."""
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            for folder, dirs, files in os.walk(path):
                dirs.sort()
                for name in sorted(files):
                    if Path(name).suffix.lower() in IMAGE_EXTENSIONS:
                        yield Path(folder) / name
        elif path.exists():
            yield path
        else:
            raise FileNotFoundError(f"{path}: no such file or directory")


def iter_image_batches(paths: Iterable[Union[str, os.PathLike]], batch_size: int,
                       data_config: Union[DataConfig, int] = 224,
                       ) -> Iterator[Tuple[List[Path], np.ndarray, List[Path]]]:
    """Yield ``(paths, images [b, 3, S, S], skipped_paths)`` batches preprocessed by :func:`load_image`;
    unreadable files are logged and skipped. A last batch with only skipped files has an empty image array."""
    if not isinstance(data_config, DataConfig):
        data_config = DataConfig(input_size=data_config)
    image_size = data_config.input_size
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    good: List[Path] = []
    arrays: List[np.ndarray] = []
    skipped: List[Path] = []
    for path in paths:
        try:
            arrays.append(load_image(path, data_config))
            good.append(Path(path))
        except OSError as exc:
            logger.warning("skipping %s", exc)
            skipped.append(Path(path))
        if len(good) == batch_size:
            yield good, np.stack(arrays), skipped
            good, arrays, skipped = [], [], []
    if good or skipped:
        images = np.stack(arrays) if arrays else np.zeros((0, 3, image_size, image_size), np.float32)
        yield good, images, skipped
