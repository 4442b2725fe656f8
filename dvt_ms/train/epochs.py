"""The epochs of a training run (:class:`EpochTrainer`): the seeded training pipeline, the steps with their
progress lines, step checkpoints, and the validation summed over ranks.

Determinism and resume. The pipeline of epoch ``e`` is built with the MindData seed
``epoch_seed(seed, e)``, so an epoch's shuffle and augmentations depend only on (seed, epoch), not on
how many epochs this process ran before: a run resumed from the checkpoint of epoch ``e`` sees the same
data from epoch ``e + 1`` on as an uninterrupted run, and with one data worker it reaches the same
weights. Random numbers drawn inside the compiled graph (drop path) restart their stream in a new
process, so with ``drop_path > 0`` a resumed run is equal in distribution, not bit for bit.

A step checkpoint (every ``save_interval_steps``, and on a stop signal) also resumes exactly: the
epoch's pipeline is rebuilt with its seed and read past the batches already trained on, and the
epoch's loss sums so far come from the file.
"""
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
from mindspore import Tensor

from ..data import create_eval_dataset, create_train_dataset
from .assembly import TrainerSetup
from .interrupt import StopSignals
from .step import NonFiniteError
from .validation import ValResult, counts_to_result, evaluate_shard

logger = logging.getLogger(__name__)

__all__ = ["EpochResult", "EpochTrainer", "TrainingStopped", "epoch_seed", "format_duration"]


class TrainingStopped(RuntimeError):
    """The run cannot go on (a non-finite loss); the message names the step and the last good checkpoint."""


def epoch_seed(seed: int, epoch: int) -> int:
    """MindData seed of epoch ``epoch``'s pipeline: a function of (seed, epoch) only."""
    return int(np.random.SeedSequence([int(seed), int(epoch)]).generate_state(1)[0] % (2 ** 31 - 1))


@dataclass
class EpochResult:
    """One epoch's numbers, as written to ``metrics.jsonl``."""

    epoch: int
    train_loss: List[float]
    train_loss_total: float
    lr: float
    steps: int
    images_per_sec: float
    epoch_time: float
    skipped_images: int
    global_step: int
    val: Optional[ValResult] = None
    ema_val: Optional[ValResult] = None
    keep_rate: Optional[float] = None
    digest: Optional[str] = None
    interrupted: Optional[int] = None  # the stop signal that ended the epoch early (a step checkpoint holds it)


def format_duration(seconds: float) -> str:
    """``H:MM:SS`` (``?`` when not finite)."""
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class EpochTrainer(TrainerSetup):
    """The epochs of a set-up run: :meth:`train_epoch` and :meth:`validate`."""

    #: the stop signals while :meth:`~dvt_ms.train.loop.Trainer.run` trains (``None`` outside it)
    stop_signals: Optional[StopSignals] = None

    def _train_data(self, epoch: int):
        config, dist = self.config, self.dist
        data = create_train_dataset(
            self.train_info.root, config.batch_size, self.num_classes, image_size=self.image_size,
            num_shards=dist.num_shards, shard_id=dist.shard_id, seed=epoch_seed(config.seed, epoch),
            num_parallel_workers=config.num_parallel_workers, auto_augment=config.auto_augment or None,
            reprob=config.reprob, mixup=config.mixup, cutmix=config.cutmix,
            mixup_switch_prob=config.mixup_switch_prob, mixup_prob=config.mixup_prob,
            label_smoothing=config.label_smoothing, hflip=config.hflip, interpolation=self.data_config.interpolation,
            drop_remainder=True, scale=tuple(config.crop_scale), info=self.train_info)
        return data

    def train_epoch(self, epoch: int, start_step: int = 0, partial: Optional[Sequence[float]] = None) -> EpochResult:
        """One epoch of steps; raises :class:`TrainingStopped` on a non-finite loss.

        ``start_step`` > 0 continues an epoch from a step checkpoint: the epoch's pipeline (same seed, so
        the same order and augmentations) is read past its first ``start_step`` batches, and ``partial``
        (the checkpoint's summed ``[steps, loss, exit losses...]`` of those steps, over all ranks) is
        carried by rank 0, so the epoch's record is the one of an uninterrupted epoch. A stop signal ends
        the epoch after the current step with a step checkpoint (``EpochResult.interrupted``).
        """
        config, dist = self.config, self.dist
        data = self._train_data(epoch)
        iterator = data.dataset.create_tuple_iterator(output_numpy=True, num_epochs=1)
        # this rank's [steps, loss sum, exit loss sums...]; rank 0 also carries a resumed epoch's earlier steps
        acc = np.zeros(2 + self.num_exits)
        if partial is not None and dist.is_main:
            if len(partial) != acc.size:
                raise ValueError(f"the step checkpoint's partial epoch has {len(partial)} sums, expected {acc.size}")
            acc[:] = np.asarray(partial, dtype=np.float64)
        steps = start_step
        run_steps = 0
        start = time.perf_counter()
        timed_start, timed_steps = None, 0
        window_start, window_steps = start, 0
        lr = float("nan")
        keep_rate = None
        interrupted = None
        interval = config.save_interval_steps
        try:
            for _ in range(start_step):  # the batches the checkpointed part of the epoch trained on
                if next(iterator, None) is None:
                    raise RuntimeError(f"epoch {epoch}: the data ran out while skipping the {start_step} steps "
                                       "done before the checkpoint; was the training folder changed?")
            for index in range(start_step, self.steps_per_epoch):
                batch = next(iterator, None)
                if dist.enabled:  # every rank takes a step only if every rank has a batch
                    have = dist.all_reduce_sum([0.0 if batch is None else 1.0])[0]
                    if have < dist.world_size:
                        break
                elif batch is None:
                    break
                images, targets = batch
                global_step = self.step.global_step
                keep_rate = self.keep_rate_at(global_step)
                lr = float(self.lr_schedule[min(global_step, len(self.lr_schedule) - 1)])
                try:
                    out = self.step(Tensor(images), Tensor(targets), keep_rate)
                except NonFiniteError as exc:
                    last = self.manager.latest()
                    where = f"the last good checkpoint is {last}" if last else "no checkpoint was written yet"
                    raise TrainingStopped(f"epoch {epoch}, step {index + 1}: {exc}; stopping the run, "
                                          f"{where}") from exc
                steps += 1
                run_steps += 1
                acc += np.concatenate([[1.0, out.loss], np.asarray(out.exit_losses[:self.num_exits], np.float64)])
                now = time.perf_counter()
                if run_steps == 1:  # the first step compiles the graph: leave it out of the speed
                    timed_start = window_start = now
                    window_steps = 0
                else:
                    timed_steps += 1
                    window_steps += 1
                if dist.is_main and (steps % config.log_interval == 0 or steps == self.steps_per_epoch):
                    self._log_progress(epoch, steps, out, lr, keep_rate, now, timed_start, timed_steps,
                                       window_start, window_steps)
                    window_start, window_steps = now, 0
                if self.stop_signals is not None:
                    self.stop_signals.refresh()
                interrupted = self.stop_agreed()
                if interrupted:
                    break
                if interval and steps % interval == 0 and steps < self.steps_per_epoch:
                    self._save_step(epoch, steps, acc, lr)
        finally:
            iterator.stop()
        elapsed = time.perf_counter() - start
        if interrupted:
            self._save_step(epoch, steps, acc, lr)
            return EpochResult(epoch=epoch, train_loss=[], train_loss_total=math.nan, lr=lr, steps=steps,
                               images_per_sec=math.nan, epoch_time=elapsed, skipped_images=0,
                               global_step=self.step.global_step, keep_rate=keep_rate, interrupted=interrupted)
        skipped = data.skipped
        sums = dist.all_reduce_sum(np.concatenate([[acc[0], skipped, acc[1]], acc[2:]]))
        ranks_steps = max(sums[0], 1.0)
        mean_losses = (sums[3:] / ranks_steps).tolist()
        if timed_steps and timed_start is not None:
            speed = self.global_batch * timed_steps / (time.perf_counter() - timed_start)
        else:  # a single step: its time includes the graph compile, if any
            speed = self.global_batch * run_steps / elapsed if run_steps else math.nan
        if steps < self.steps_per_epoch:
            logger.warning("epoch %d ended after %d of %d steps (unreadable images shortened a shard)", epoch,
                           steps, self.steps_per_epoch)
        return EpochResult(epoch=epoch, train_loss=mean_losses, train_loss_total=float(sums[2] / ranks_steps),
                           lr=lr, steps=steps, images_per_sec=speed, epoch_time=elapsed,
                           skipped_images=int(sums[1]), global_step=self.step.global_step, keep_rate=keep_rate)

    def stop_agreed(self) -> Optional[int]:
        """The stop signal if this rank or any other got one (an all-gather when distributed), else ``None``."""
        stop = self.stop_signals
        local = stop.signum if stop is not None and stop.requested else 0
        if not self.dist.enabled:
            return local or None
        return int(self.dist.all_gather([local], exact_ints=True)[:, 0].max()) or None

    def _save_step(self, epoch: int, steps: int, acc: np.ndarray, lr: float) -> Path:
        """Step checkpoint after ``steps`` steps of ``epoch`` (every rank calls it; rank 0 writes)."""
        sums = self.dist.all_reduce_sum(acc)  # every rank's steps and loss sums of this epoch so far
        extra = self.checkpoint_metadata(lr, None, partial_epoch=dict(sums=sums.tolist()))
        self.manager.save(self.net, self.optimizer, self.ema, epoch - 1, self.step.global_step, extra=extra,
                          epoch_step=steps)
        if self.dist.enabled:  # no rank goes on (or exits) before rank 0's file is complete
            self.dist.all_reduce_sum([0.0])
        return self.manager.step_path(epoch, steps)

    def _log_progress(self, epoch, steps, out, lr, keep_rate, now, timed_start, timed_steps, window_start,
                      window_steps) -> None:
        per_step = (now - timed_start) / timed_steps if timed_steps else math.nan
        speed = self.global_batch * window_steps / (now - window_start) if window_steps else math.nan
        left_epoch = (self.steps_per_epoch - steps) * per_step
        left_run = left_epoch + (self.total_epochs - epoch) * self.steps_per_epoch * per_step
        exits = " ".join(f"{v:.4f}" for v in out.exit_losses)
        keep = f" | keep {keep_rate:.3f}" if keep_rate is not None else ""
        rate = f"{speed:.1f} img/s" if math.isfinite(speed) else "first step (compiling)"
        logger.info("epoch %d/%d step %d/%d (global %d) | loss %.4f (exits %s) | lr %.3e%s | %s | "
                    "ETA epoch %s, run %s", epoch, self.total_epochs, steps, self.steps_per_epoch, out.step + 1,
                    out.loss, exits, lr, keep, rate, format_duration(left_epoch), format_duration(left_run))

    def validate(self) -> ValResult:
        """Per-exit top-1/top-5 of the current weights over the whole val split (summed over ranks)."""
        config, dist = self.config, self.dist
        data = create_eval_dataset(self.val_info.root, config.batch_size, self.data_config,
                                   num_shards=dist.num_shards, shard_id=dist.shard_id,
                                   num_parallel_workers=config.num_parallel_workers, info=self.val_info)
        # the network as the step runs it: under amp O2/O3 (which casts self.net to float16 in place) the
        # wrapper's outputs are float32
        counts = evaluate_shard(self.step.net, data, config.batch_size, self.num_exits)
        self.net.set_train(True)
        total = dist.all_reduce_sum(counts, exact_ints=True)
        if total[0] == 0:
            raise ValueError(f"{self.val_info.root}: no readable validation image")
        return counts_to_result(total, self.num_exits, self.num_classes)

    def checkpoint_metadata(self, lr: float, val: Optional[ValResult], **more: Any) -> Dict[str, Any]:
        """A checkpoint's metadata: model, config, training state (schedule, loss scale), validation."""
        config = self.config
        scaler = self.step.loss_scaler
        state = dict(steps_per_epoch=self.steps_per_epoch, global_batch=self.global_batch,
                     world_size=self.dist.world_size, total_epochs=self.total_epochs, lr=lr,
                     loss_scale=float(scaler.scale_value.asnumpy()) if scaler is not None else None)
        return dict(more, model=config.model,
                    model_overrides=dict(config.model_overrides, num_classes=self.num_classes),
                    config=config.to_dict(), train_state=state, data_config=self.data_config.to_dict(),
                    val_top1=val.top1 if val else None, val_top5=val.top5 if val else None)
