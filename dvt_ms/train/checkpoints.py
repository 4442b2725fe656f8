"""Training checkpoints: weights + optimizer state + EMA + metadata in one file, keep-k, best, resume.

One ``.ckpt`` per saved epoch, ``epoch_XXXX.ckpt`` (epoch number zero-padded to 4), and step
checkpoints inside an epoch, ``epoch_XXXX_step_YYYYYY.ckpt`` (epoch ``XXXX`` after ``YYYYYY`` of its
steps: written every ``save_interval_steps`` and when a run is stopped by a signal), hold:

- the network's parameters under their own names (so :func:`dvt_ms.load_checkpoint` reads it);
- ``optimizer.<name>``: the optimizer's state (``adam_m.*``/``adam_v.*`` moments, ``global_step``,
  ``adam_updates``; the learning-rate schedule itself comes from the config, its position is
  ``global_step``);
- ``ema.<name>``: the EMA weights;
- metadata: ``epoch`` (the last *finished* epoch), ``epoch_step`` (steps done in the next one: 0 for
  epoch files), ``global_step``, ``metric``, ``best_metric``, ``best_epoch``, ``ema_updates``,
  the optimizer class and whatever ``extra`` holds (the resolved config, the lr at that step, ...).

Files are written by :func:`dvt_ms.checkpoint.save_checkpoint`: under a temporary name in the same
folder and renamed into place, so an existing file is never lost to a failed save and a crash never
leaves a partial ``epoch_*.ckpt``. ``best.ckpt`` is a copy of the epoch file with the best ``metric``
(higher is better, e.g. the last exit's validation top-1), replaced the same way. Only the last
``keep_last`` epoch files are kept, and only the newest step file, until an epoch file after it is
written. :meth:`CheckpointManager.latest` is the newest of all of them. Only ``rank`` 0 writes; every
rank can resume (the folder must be shared).
"""
import json
import logging
import math
import os
import re
import shutil
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import mindspore as ms
import numpy as np
from mindspore import Tensor, nn

from ..checkpoint.errors import CheckpointError
from ..checkpoint.key_mapping import EMA_PREFIX, OPTIMIZER_PREFIX, checkpoint_entries
from ..checkpoint.loader import (METADATA_KEY, check_compatible, check_dtypes, check_finite, decode_metadata,
                                 check_state, param_array, read_mindspore_entries, save_checkpoint)
from ..utils.atomic import atomic_path
from .ema import ModelEMA
from .optim import optimizer_state_params

logger = logging.getLogger(__name__)

__all__ = ["CheckpointManager", "FORMAT", "TRAINING_STATE_KEYS", "OPTIMIZER_PREFIX", "EMA_PREFIX",
           "BEST_NAME"]

PathLike = Union[str, os.PathLike]
FORMAT = "dvt_ms.train/1"
BEST_NAME = "best.ckpt"
_EPOCH_FILE = re.compile(r"^epoch_(\d+)\.ckpt$")
_STEP_FILE = re.compile(r"^epoch_(\d+)_step_(\d+)\.ckpt$")
#: Metadata that describes a run's training state: a converted or exported copy of the weights drops it.
TRAINING_STATE_KEYS = frozenset({"format", "epoch", "epoch_step", "global_step", "metric", "best_metric",
                                 "best_epoch", "ema_updates", "optimizer", "has_optimizer", "has_ema"})


def _position(path: Path) -> Optional[Tuple[int, int]]:
    """(finished epochs, steps into the next epoch) of a checkpoint file name, or ``None``."""
    match = _EPOCH_FILE.match(path.name)
    if match:
        return int(match.group(1)), 0
    match = _STEP_FILE.match(path.name)
    if match and int(match.group(1)) >= 1:
        return int(match.group(1)) - 1, int(match.group(2))
    return None


def _check_format(path: PathLike, metadata: Mapping[str, Any]) -> None:
    if metadata.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a training checkpoint (format {metadata.get('format')!r}, "
                              f"expected {FORMAT!r}); load plain weights with dvt_ms.load_checkpoint")


def _scalar_shapes(state: Dict[str, np.ndarray], params) -> Dict[str, np.ndarray]:
    """Read a one-element ``(1,)`` entry as the 0-d value a scalar state parameter holds.

    Checkpoints written after a resume by earlier versions hold ``adam_updates`` as ``(1,)``; the value is
    the same, so such files stay resumable.
    """
    shapes = {p.name: tuple(p.shape) for p in params}
    return {k: (v.reshape(()) if shapes.get(k) == () and v.shape == (1,) else v) for k, v in state.items()}


class CheckpointManager:
    """Save, prune and resume training checkpoints in ``output_dir`` (see the module docstring)."""

    def __init__(self, output_dir: PathLike, keep_last: Optional[int] = 3, rank: int = 0):
        if keep_last is not None and (not isinstance(keep_last, int) or keep_last < 1):
            raise ValueError(f"keep_last must be a positive integer or None (keep all), got {keep_last!r}")
        self.output_dir = Path(output_dir)
        self.keep_last = keep_last
        self.rank = int(rank)
        self.best_metric: Optional[float] = None
        self.best_epoch: Optional[int] = None

    @property
    def is_writer(self) -> bool:
        """Whether this process writes files (rank 0 only)."""
        return self.rank == 0

    def epoch_path(self, epoch: int) -> Path:
        """``output_dir/epoch_XXXX.ckpt``."""
        return self.output_dir / f"epoch_{epoch:04d}.ckpt"

    def epoch_files(self) -> List[Path]:
        """Complete-looking epoch files (temporary files ignored), oldest epoch first."""
        return [p for p in self.checkpoint_files() if _EPOCH_FILE.match(p.name)]

    def step_path(self, epoch: int, step: int) -> Path:
        """``output_dir/epoch_XXXX_step_YYYYYY.ckpt``: epoch ``epoch`` after ``step`` of its steps."""
        return self.output_dir / f"epoch_{epoch:04d}_step_{step:06d}.ckpt"

    def checkpoint_files(self) -> List[Path]:
        """Epoch and step files (temporary files ignored), oldest position first."""
        if not self.output_dir.is_dir():
            return []
        files = [p for p in self.output_dir.iterdir() if p.is_file() and _position(p) is not None]
        return sorted(files, key=_position)

    # ---------------------------------------------------------------------------------------- save
    def save(self, net: nn.Cell, optimizer: Optional[nn.Optimizer] = None, ema: Optional[ModelEMA] = None,
             epoch: int = 0, global_step: int = 0, metric: Optional[float] = None,
             extra: Optional[Mapping[str, Any]] = None, epoch_step: int = 0) -> Optional[Path]:
        """Write ``epoch_XXXX.ckpt`` (and ``best.ckpt`` if ``metric`` is the best so far); prune old epochs.

        With ``epoch_step > 0`` the file is the step checkpoint ``epoch_{epoch+1}_step_{epoch_step}``:
        ``epoch`` finished epochs and ``epoch_step`` steps of the next (it has no ``metric``). Returns the
        path written, or ``None`` on ranks other than 0.
        """
        if not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f"epoch must be a non-negative integer, got {epoch!r}")
        if not isinstance(global_step, int) or global_step < 0:
            raise ValueError(f"global_step must be a non-negative integer, got {global_step!r}")
        if not isinstance(epoch_step, int) or epoch_step < 0:
            raise ValueError(f"epoch_step must be a non-negative integer, got {epoch_step!r}")
        if epoch_step and metric is not None:
            raise ValueError("a step checkpoint (epoch_step > 0) has no metric")
        if metric is not None and not (isinstance(metric, (int, float)) and math.isfinite(metric)):
            raise ValueError(f"metric must be a finite number or None, got {metric!r}")
        extra = dict(extra or {})
        clashes = sorted(TRAINING_STATE_KEYS & set(extra))
        if clashes:
            raise ValueError(f"extra metadata must not use the reserved key(s) {', '.join(clashes)}")
        if not self.is_writer:
            return None
        if optimizer is not None:
            opt_step = int(optimizer.global_step.asnumpy().reshape(-1)[0])
            if opt_step != global_step:
                logger.warning("saving global_step %d but the optimizer's global_step is %d", global_step,
                               opt_step)

        improved = metric is not None and (self.best_metric is None or metric > self.best_metric)
        best_metric = float(metric) if improved else self.best_metric
        best_epoch = epoch if improved else self.best_epoch
        entries = [{"name": p.name, "data": p} for p in net.get_parameters()]
        if optimizer is not None:
            entries += [{"name": OPTIMIZER_PREFIX + p.name, "data": p} for p in optimizer_state_params(optimizer)]
        if ema is not None:
            entries += [{"name": EMA_PREFIX + name, "data": Tensor(value)} for name, value in ema.state().items()]
        metadata = dict(extra, format=FORMAT, epoch=epoch, epoch_step=epoch_step, global_step=global_step,
                        metric=None if metric is None else float(metric), best_metric=best_metric,
                        best_epoch=best_epoch, has_optimizer=optimizer is not None, has_ema=ema is not None,
                        optimizer=type(optimizer).__name__ if optimizer is not None else None,
                        ema_updates=ema.updates if ema is not None else None)
        target = self.step_path(epoch + 1, epoch_step) if epoch_step else self.epoch_path(epoch)
        path = save_checkpoint(entries, target, metadata)
        if improved:
            self._copy_atomic(path, self.output_dir / BEST_NAME)
            self.best_metric, self.best_epoch = best_metric, best_epoch
            logger.info("new best metric %.4f at epoch %d", best_metric, epoch)
        self._prune(keep=path)
        logger.info("saved %s", path)
        return path

    def _copy_atomic(self, src: Path, dst: Path) -> None:
        with atomic_path(dst, suffix=".tmp.ckpt") as tmp_name:
            shutil.copyfile(src, tmp_name)

    def _prune(self, keep: Path) -> None:
        position = _position(keep)
        for path in self.checkpoint_files():  # step files before the new file are superseded by it
            if path != keep and _STEP_FILE.match(path.name) and _position(path) < position:
                path.unlink()
                logger.info("removed step checkpoint %s", path)
        if self.keep_last is None:
            return
        files = self.epoch_files()
        for path in files[:-self.keep_last]:
            if path != keep:
                path.unlink()
                logger.info("removed old checkpoint %s", path)

    # -------------------------------------------------------------------------------------- resume
    @staticmethod
    def read_metadata(path: PathLike) -> Dict[str, Any]:
        """A training checkpoint's metadata, reading only what is needed to check the file is whole."""
        path = Path(path)
        try:
            raw = ms.load_checkpoint(str(path), choice_func=lambda name: name == METADATA_KEY)
        except (ValueError, RuntimeError, OSError) as exc:
            raise CheckpointError(f"{path}: not a readable MindSpore checkpoint ({exc})") from None
        if METADATA_KEY not in raw:
            raise CheckpointError(f"{path}: no metadata; not a dvt_ms training checkpoint")
        try:
            metadata = decode_metadata(json.loads(raw[METADATA_KEY]))
        except (TypeError, ValueError) as exc:
            raise CheckpointError(f"{path}: corrupt metadata ({exc})") from None
        _check_format(path, metadata)
        return metadata

    def latest(self) -> Optional[Path]:
        """The newest epoch or step file that reads back as a complete training checkpoint, or ``None``."""
        for path in reversed(self.checkpoint_files()):
            try:
                self.read_metadata(path)
            except CheckpointError as exc:
                logger.warning("skipping unreadable checkpoint %s: %s", path, exc)
                continue
            return path
        return None

    def resume(self, path: Union[PathLike, str], net: nn.Cell, optimizer: Optional[nn.Optimizer] = None,
               ema: Optional[ModelEMA] = None) -> Optional[Dict[str, Any]]:
        """Restore weights, optimizer state and EMA from ``path`` (or the latest file with ``"auto"``).

        Strict and all-or-nothing: every part asked for must be in the file with matching names and
        shapes, or nothing is changed. Returns the metadata (``epoch`` is the last *finished* epoch,
        ``epoch_step`` the steps done in the next one, ``global_step`` the next step's schedule index);
        ``None`` for ``"auto"`` with no checkpoint.
        """
        if str(path) == "auto":
            found = self.latest()
            if found is None:
                logger.info("no checkpoint to resume in %s; starting from scratch", self.output_dir)
                return None
            path = found
        path = Path(path)
        entries, metadata = read_mindspore_entries(path)
        _check_format(path, metadata)
        roles = checkpoint_entries(entries)
        net_w = {k: entries[k] for k in roles.model}
        opt_w = {k[len(OPTIMIZER_PREFIX):]: entries[k] for k in roles.optimizer}
        ema_w = {k[len(EMA_PREFIX):]: entries[k] for k in roles.ema}

        check_compatible(net, net_w, path)
        check_finite(net_w, path)
        check_dtypes(net.get_parameters(), net_w, path)
        opt_params = []
        if optimizer is not None:
            if not metadata.get("has_optimizer"):
                raise CheckpointError(f"{path}: has no optimizer state to resume")
            opt_params = optimizer_state_params(optimizer)
            opt_w = _scalar_shapes(opt_w, opt_params)
            check_state({p.name: tuple(p.shape) for p in opt_params}, opt_w,
                        f"{path}: optimizer state ({type(optimizer).__name__} vs {metadata.get('optimizer')}) "
                        "does not match:")
            check_finite(opt_w, path, OPTIMIZER_PREFIX)
        if ema is not None:
            if not metadata.get("has_ema"):
                raise CheckpointError(f"{path}: has no EMA weights to resume")
            check_state({p.name: tuple(p.shape) for p in net.get_parameters()}, ema_w,
                        f"{path}: EMA weights do not match:")
            check_finite(ema_w, path, EMA_PREFIX)

        for param in net.get_parameters():
            param.set_data(Tensor(param_array(net_w[param.name], param), dtype=param.dtype))
        for param in opt_params:
            param.set_data(Tensor(param_array(opt_w[param.name], param), dtype=param.dtype))
        if ema is not None:
            ema.load(ema_w, updates=metadata.get("ema_updates"))
        self.best_metric = metadata.get("best_metric")
        self.best_epoch = metadata.get("best_epoch")
        metadata.setdefault("epoch_step", 0)
        logger.info("resumed %s: epoch %s, global step %s", path, metadata.get("epoch"),
                    metadata.get("global_step"))
        return metadata
