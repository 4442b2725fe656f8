"""A training pipeline as the training loop sees it: the MindData dataset, epoch by epoch as numpy arrays, and the
record of the unreadable images it skipped (built by :func:`dvt_ms.data.train_transforms.create_train_dataset`)."""
import logging
import math
import threading
from typing import Iterator, List, Set, Tuple

import numpy as np
import mindspore.dataset as ds

from .dataset import ImageFolderInfo

logger = logging.getLogger(__name__)

__all__ = ["SkippedImages", "TrainDataset"]


class SkippedImages:
    """Thread-safe record of the unreadable images met by a pipeline (MindData ``filter`` predicate).

    A corrupt file is met again every epoch (and MindData may run ahead into the next epoch), so the
    record keeps distinct files: ``count`` and ``files`` do not grow with the number of epochs. Rows
    carry their file index, so every file is named exactly.
    """

    def __init__(self, info: ImageFolderInfo):
        self.info = info
        self._lock = threading.Lock()
        self._keys: Set[int] = set()
        self.events = 0

    def __call__(self, valid: np.ndarray, index: np.ndarray) -> bool:
        if bool(valid):
            return True
        key = int(index)
        with self._lock:
            self.events += 1
            new = key not in self._keys
            self._keys.add(key)
        if new:
            logger.warning("%s: skipping unreadable image %s", self.info.root, self.info.files[key])
        return False

    @property
    def count(self) -> int:
        """Distinct unreadable images met so far."""
        with self._lock:
            return len(self._keys)

    @property
    def files(self) -> List[str]:
        """Their paths, in file order."""
        with self._lock:
            keys = sorted(self._keys)
        return [str(self.info.files[key]) for key in keys]


class TrainDataset:
    """A training pipeline: ``dataset`` (MindData, columns ``image`` and ``label``) plus bookkeeping.

    Batches are ``(images float32 [B, 3, S, S], targets)``: soft targets float32 ``[B, num_classes]``
    when ``soft_targets`` (mixup/cutmix/label smoothing), int32 labels ``[B]`` otherwise.

    Iterating (``for images, targets in train_data``) reads one epoch as numpy arrays from a single
    persistent MindData iterator, so successive loops are successive epochs (new shuffle and
    augmentations); a loop left early has the rest of its epoch discarded by the next one. ``dataset``
    can be given to ``mindspore.Model.train`` directly instead; its size is preset to
    ``steps_per_epoch`` (counting every file, skipped ones included) so MindData needs no extra pass.
    """

    def __init__(self, dataset, info: ImageFolderInfo, skipped: SkippedImages, batch_size: int,
                 num_classes: int, soft_targets: bool, rows_per_shard: int, drop_remainder: bool, seed: int):
        self.dataset = dataset
        self.seed = seed
        self.info = info
        self.skipped_images = skipped
        self.batch_size = batch_size
        self.num_classes = num_classes
        self.soft_targets = soft_targets
        self.rows_per_shard = rows_per_shard
        self.drop_remainder = drop_remainder
        self.epochs_done = 0
        self._iterator = None
        self._unfinished = False

    @property
    def steps_per_epoch(self) -> int:
        """Batches per epoch (an upper bound: unreadable images shorten an epoch)."""
        if self.drop_remainder:
            return self.rows_per_shard // self.batch_size
        return math.ceil(self.rows_per_shard / self.batch_size)

    @property
    def skipped(self) -> int:
        """Distinct unreadable images met so far (exact once an epoch has been read)."""
        return self.skipped_images.count

    @property
    def skipped_files(self) -> List[str]:
        return self.skipped_images.files

    def __iter__(self) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
        if self._iterator is None:
            if ds.config.get_seed() != self.seed:
                logger.warning("the MindData seed changed from %d to %d since this pipeline was built; "
                               "its shuffle and augmentations follow the new one", self.seed,
                               ds.config.get_seed())
            self._iterator = self.dataset.create_tuple_iterator(output_numpy=True, num_epochs=-1)
        if self._unfinished:
            discarded = sum(1 for _ in self._iterator)
            logger.debug("discarded the %d unread batch(es) of an unfinished epoch", discarded)
        self._unfinished = True
        for images, targets in self._iterator:
            yield images, targets
        self._unfinished = False
        self.epochs_done += 1
