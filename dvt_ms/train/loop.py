"""The training run behind ``scripts/train.py``: set-up, the epoch loop, validation, logging, checkpoints.

:func:`dvt_ms.config.training.resolve_train_config` reads ``--config FILE.yaml`` and ``--key value`` flags (schema
:data:`TRAIN_SCHEMA` = ``COMMON + TRAIN`` + ``plot``); :class:`Trainer` does the rest::

    config = resolve_train_config(argv)
    results = Trainer(config).run()

Order of work (everything that can be wrong with the config or the data fails before step 5):

1. device, data parallelism (:mod:`dvt_ms.train.distributed`), seeds;
2. the ImageFolder splits (missing ``train``/``val``, empty class folders, ``num_classes`` mismatch);
3. the model (``model_overrides`` + ``num_classes`` + ``drop_path``), ``--pretrained`` weights
   (classifier heads of another class count are re-initialized with a warning);
4. optimizer (AdamW, no decay for norms/biases/pos_embed/cls_token), the per-iteration cosine schedule
   with the linearly scaled rate, EMA, the compiled :class:`~dvt_ms.train.step.TrainStep`, resume;
5. per epoch: a freshly seeded training pipeline, the steps (progress line every ``log_interval``),
   validation of the weights (and of the EMA) on every rank's shard of ``val`` summed over ranks, one
   ``metrics.jsonl`` record, one checkpoint (rank 0; last ``keep_checkpoints`` + ``best.ckpt`` by the
   last exit's top-1), the optional plot.

Determinism and resume. The pipeline of epoch ``e`` is built with the MindData seed
``epoch_seed(seed, e)``, so an epoch's shuffle and augmentations depend only on (seed, epoch), not on
how many epochs this process ran before: a run resumed from the checkpoint of epoch ``e`` sees the same
data from epoch ``e + 1`` on as an uninterrupted run, and with one data worker it reaches the same
weights. Random numbers drawn inside the compiled graph (drop path) restart their stream in a new
process, so with ``drop_path > 0`` a resumed run is equal in distribution, not bit for bit.

A step checkpoint (every ``save_interval_steps``, and on a stop signal) also resumes exactly: the
epoch's pipeline is rebuilt with its seed and read past the batches already trained on, and the
epoch's loss sums so far come from the file.

Interruptions and the output folder. :meth:`Trainer.run` takes SIGTERM/SIGINT (:mod:`.interrupt`):
the step in progress finishes, the ranks agree on the stop (all-gather of the flag after every step,
only when distributed), a step checkpoint is written and :class:`TrainingInterrupted` is raised (exit
status ``128 + signal``). :meth:`Trainer.setup` takes ``output_dir/.lock`` (:mod:`.lock`, rank 0) and
writes nothing: ``config.yaml`` is written, and later epochs' metrics dropped, only when a run starts
training, so a refused or no-op resume leaves the folder as it was.

Errors. A NaN/Inf loss stops the run with :class:`TrainingStopped` naming the global step and the last
good checkpoint (which is never touched by a failing epoch: checkpoints are written atomically, after
a complete epoch or at a step boundary).
"""
import logging
import math
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import mindspore as ms
import numpy as np
from mindspore import Tensor

from ..checkpoint import save_checkpoint
from ..config import Config, ConfigError, save_config
from ..data import check_image_folder, create_eval_dataset, create_train_dataset, resolve_data_config
from ..layers.token_reorganization import kept_token_count
from ..models import create_model, exit_names, model_family, model_image_size, model_num_classes, num_exits
from ..plots import PlotUnavailable
from ..precision import resolve_training_precision
from ..run import configure_device, log_model
from ..utils.gears import keep_count_gears, uses_gears
from .checkpoints import CheckpointManager
from .distributed import DistributedContext, init_distributed
from .ema import ModelEMA
from .interrupt import StopSignals, TrainingInterrupted
from .lock import RunLock
from .loss import MultiExitLoss
from .metrics import MetricsLogger, plot_metrics
from .optim import create_optimizer, scaled_lr
from .schedule import cosine_lr, keep_rate_at_step, quantize_keep_rate
from .step import NonFiniteError, TrainStep
from .validation import ValResult, counts_to_result, ema_weights, evaluate_shard
from .weights_init import load_pretrained, reinit_fan_in

logger = logging.getLogger(__name__)

__all__ = ["Trainer", "TrainingInterrupted", "TrainingStopped", "EpochResult", "epoch_seed", "train_model_overrides"]

CONFIG_NAME = "config.yaml"
WEIGHTS_NAME = "final_weights.ckpt"


class TrainingStopped(RuntimeError):
    """The run cannot go on (a non-finite loss); the message names the step and the last good checkpoint."""


def train_model_overrides(config: Config) -> Dict[str, Any]:
    """``create_model`` overrides for training: ``model_overrides`` + ``num_classes`` + ``drop_path``."""
    overrides = dict(config.model_overrides)
    if config.num_classes is not None:
        overrides["num_classes"] = config.num_classes
    overrides["drop_path_rate"] = float(config.drop_path)
    return overrides


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


def _fmt_time(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def _fmt_acc(values: Sequence[Optional[float]]) -> str:
    return "/".join("-" if v is None or not math.isfinite(v) else f"{v:.2f}" for v in values)


class Trainer:
    """One training run of ``config`` (a :data:`TRAIN_SCHEMA` config); :meth:`run` does it all."""

    def __init__(self, config: Config, dist: Optional[DistributedContext] = None):
        self.config = config
        self.dist = dist
        self.output_dir = Path(config.output_dir)
        self._stop: Optional[StopSignals] = None

    # ---------------------------------------------------------------------------------------- set-up
    def setup(self) -> None:
        """Everything before the first step; every config or data problem is raised from here."""
        config = self.config
        self.device = configure_device(config.device_target, config.ms_mode, config.cpu_kernels)
        if self.dist is None:
            self.dist = init_distributed(config.distributed)
        dist = self.dist
        ms.set_seed(config.seed)  # identical initial weights on every rank

        self.precision = resolve_training_precision(config.precision, config.amp_level, self.device, config.cpu_kernels)
        overrides = train_model_overrides(config)
        self.net = create_model(config.model, cpu_kernels=config.cpu_kernels,
                                precision=self.precision.model_precision, **overrides)
        log_model(config.model, overrides, self.net)
        if self.net.kernels.model_precision != self.precision.model_precision:  # cpu_kernels auto fell back
            self.precision = resolve_training_precision(self.net.kernels.model_precision, "O0", self.device,
                                                        config.cpu_kernels)
        logger.info("training precision: %s", self.precision.describe())
        self.num_classes = model_num_classes(self.net)
        self.image_size = model_image_size(self.net)
        self.num_exits = num_exits(self.net)
        self.exit_names = exit_names(self.net)
        self.train_info = check_image_folder(config.data_dir, config.train_split, self.num_classes)
        self.val_info = check_image_folder(config.data_dir, config.val_split, self.num_classes)
        if self.train_info.classes != self.val_info.classes:
            diff = sorted(set(self.train_info.classes) ^ set(self.val_info.classes))
            raise ValueError(f"{self.train_info.root} and {self.val_info.root} have different class folders "
                             f"(only in one of them: {', '.join(diff[:10])})")
        self.data_config = resolve_data_config(config.model, self.net, config=config,
                                               class_names=self.train_info.classes)
        self.global_batch = config.batch_size * dist.world_size
        rows = math.ceil(self.train_info.num_images / dist.world_size)
        full_steps = rows // config.batch_size
        if full_steps < 1:
            raise ValueError(f"{self.train_info.root}: {self.train_info.num_images} image(s) give {rows} per "
                             f"worker, fewer than batch_size={config.batch_size}; lower --batch_size")
        self.steps_per_epoch = min(full_steps, config.steps_per_epoch or full_steps)
        self.total_epochs = config.epochs + config.cooldown_epochs

        if config.weight_init == "fan_in":
            reinit_fan_in(self.net)
        if config.pretrained:
            load_pretrained(self.net, config.pretrained, config.weights)

        self._setup_optimizer()
        self.family = model_family(config.model)
        self._setup_keep_rate()
        self._setup_step()

        # nothing is written into output_dir before run() trains a step: a refused or no-op resume leaves
        # it as it was; the lock (rank 0) keeps a second run out of it from here on
        self.lock = RunLock(self.output_dir).acquire() if dist.is_main else None
        try:
            self.manager = CheckpointManager(self.output_dir, keep_last=config.keep_checkpoints, rank=dist.rank)
            self.metrics = MetricsLogger(self.output_dir, rank=dist.rank)
            self.start_epoch, self.start_step, self.partial = 1, 0, None
            if config.resume:
                self._resume()
            else:
                earlier = self.manager.latest()
                if earlier is not None:
                    raise ValueError(f"{self.output_dir} already holds a run's checkpoint ({earlier.name}); pass "
                                     "--resume auto to continue it, or choose another --output_dir")
        except BaseException:
            self.close()
            raise
        logger.info("%s: %d classes, %d exit(s) %s, image size %d; %d train / %d val images; global batch %d "
                    "(%d x %d worker(s)), %d steps/epoch, %d epochs (+%d cooldown), peak lr %.3g",
                    config.model, self.num_classes, self.num_exits, ", ".join(self.exit_names), self.image_size,
                    self.train_info.num_images, self.val_info.num_images, self.global_batch, config.batch_size,
                    dist.world_size, self.steps_per_epoch, config.epochs, config.cooldown_epochs, self.peak_lr)

    def _setup_optimizer(self) -> None:
        config = self.config
        self.peak_lr = (scaled_lr(config.lr, self.global_batch, config.lr_batch_size)
                        if config.lr_scaling == "linear" else float(config.lr))
        min_lr, warmup_lr = min(config.min_lr, self.peak_lr), min(config.warmup_lr, self.peak_lr)
        self.lr_schedule = cosine_lr(self.peak_lr, self.steps_per_epoch, min_lr=min_lr, warmup_lr=warmup_lr,
                                     warmup_epochs=config.warmup_epochs, cooldown_epochs=config.cooldown_epochs,
                                     epochs=config.epochs, per_epoch=not config.lr_per_step)
        self.optimizer = create_optimizer(self.net, config.opt, self.lr_schedule, config.weight_decay,
                                          betas=tuple(config.opt_betas), eps=config.opt_eps,
                                          momentum=config.momentum, no_decay_norm_bias=config.no_decay_norm_bias)

    def _setup_keep_rate(self) -> None:
        """EViT: target keep rate and token count for the keep-rate schedule."""
        config = self.config
        self.keep_target: Optional[float] = None
        self.keep_gears: Optional[Tuple[int, ...]] = None
        if self.family != "evit" or not config.keep_rate_schedule:
            return
        rates = sorted({float(r) for r in self.net.keep_rate if r < 1})
        if not rates:
            logger.info("keep_rate_schedule: the model prunes no tokens (keep_rate 1); no schedule")
            return
        if len(rates) > 1:
            raise ConfigError(f"keep_rate_schedule needs one keep rate but model_overrides.keep_rate gives "
                              f"{rates}; set keep_rate_schedule: false to train with the per-layer rates")
        self.keep_target = rates[0]
        self.num_image_tokens = int(self.net.grid_size) ** 2
        if uses_gears(self.device):
            self.keep_gears = keep_count_gears(kept_token_count(self.keep_target, self.num_image_tokens),
                                               self.num_image_tokens)
            logger.info("%s compile budget: the EViT keep rates snap to %d first-block token counts %s "
                        "(keep_rate_token_step is not used)", self.device, len(self.keep_gears), list(self.keep_gears))
        logger.info("EViT keep rate: 1 until epoch %d, cosine down to %g at epoch %d (token step %d)",
                    config.shrink_start_epoch, self.keep_target, config.shrink_start_epoch + config.shrink_epochs,
                    config.keep_rate_token_step)

    def keep_rate_at(self, global_step: int) -> Optional[float]:
        """The (quantized) EViT keep rate of ``global_step``, or ``None`` (the model's own)."""
        if self.keep_target is None:
            return None
        config = self.config
        rate = keep_rate_at_step(global_step, self.steps_per_epoch, self.keep_target,
                                 start_epoch=config.shrink_start_epoch,
                                 end_epoch=config.shrink_start_epoch + config.shrink_epochs)
        return quantize_keep_rate(rate, self.num_image_tokens, config.keep_rate_token_step, self.keep_gears)

    def _setup_step(self) -> None:
        config = self.config
        precision = self.precision
        loss_scale = {"auto": "dynamic" if precision.loss_scaling else None, "dynamic": "dynamic",
                      "static": config.loss_scale_value, "none": 1.0}[config.loss_scale]
        self.ema = ModelEMA(self.net, config.model_ema_decay) if config.model_ema else None
        self.loss_fn = MultiExitLoss(weights=config.exit_weights, label_smoothing=config.label_smoothing)
        self.step = TrainStep(self.net, self.loss_fn, self.optimizer, ema=self.ema, clip_grad_norm=config.clip_grad,
                              amp_level=precision.amp_level, loss_scale=loss_scale, num_classes=self.num_classes,
                              amp_dtype="bf16" if precision.compute == "bf16" else "fp16")

    def _resume(self) -> None:
        config = self.config
        meta = self.manager.resume(config.resume, self.net, self.optimizer, self.ema)
        if meta is None:
            return
        if config.pretrained:
            logger.info("resumed from a checkpoint: --pretrained %s was only used to build the start point of "
                        "the original run", config.pretrained)
        done = int(meta["epoch"])
        saved = meta.get("train_state") or {}
        if saved.get("steps_per_epoch") not in (None, self.steps_per_epoch) or \
                saved.get("global_batch") not in (None, self.global_batch):
            logger.warning("the checkpoint was written with %s steps per epoch and a global batch of %s; this run "
                           "has %d and %d, so the schedules continue from global step %d of the new ones",
                           saved.get("steps_per_epoch"), saved.get("global_batch"), self.steps_per_epoch,
                           self.global_batch, self.step.global_step)
        scaler = self.step.loss_scaler
        if scaler is not None and saved.get("loss_scale") is not None and hasattr(scaler, "scale_value"):
            scaler.scale_value.set_data(Tensor(np.float32(saved["loss_scale"])))
        self.start_epoch = done + 1
        self.start_step = int(meta.get("epoch_step") or 0)
        self.partial = (meta.get("partial_epoch") or {}).get("sums") if self.start_step else None
        if self.start_step:
            logger.info("resuming in epoch %d after step %d of %d at global step %d", self.start_epoch,
                        self.start_step, self.steps_per_epoch, self.step.global_step)
        else:
            logger.info("resuming after epoch %d at global step %d", done, self.step.global_step)

    # ---------------------------------------------------------------------------------------- epochs
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
                if self._stop is not None:
                    self._stop.refresh()
                interrupted = self._stop_agreed()
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

    def _stop_agreed(self) -> Optional[int]:
        """The stop signal if this rank or any other got one (an all-gather when distributed), else ``None``."""
        stop = self._stop
        local = stop.signum if stop is not None and stop.requested else 0
        if not self.dist.enabled:
            return local or None
        return int(self.dist.all_gather([local], exact_ints=True)[:, 0].max()) or None

    def _save_step(self, epoch: int, steps: int, acc: np.ndarray, lr: float) -> Path:
        """Step checkpoint after ``steps`` steps of ``epoch`` (every rank calls it; rank 0 writes)."""
        sums = self.dist.all_reduce_sum(acc)  # every rank's steps and loss sums of this epoch so far
        extra = self._extra(lr, None, partial_epoch=dict(sums=sums.tolist()))
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
                    out.loss, exits, lr, keep, rate, _fmt_time(left_epoch), _fmt_time(left_run))

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

    def _record(self, result: EpochResult) -> Dict[str, Any]:
        record = dict(epoch=result.epoch, lr=result.lr, train_loss=result.train_loss,
                      train_loss_total=result.train_loss_total,
                      val_top1=result.val.top1 if result.val else None,
                      val_top5=result.val.top5 if result.val else None,
                      images_per_sec=result.images_per_sec, epoch_time=result.epoch_time,
                      skipped_images=result.skipped_images, global_step=result.global_step, steps=result.steps,
                      val_images=result.val.num_images if result.val else None,
                      val_skipped=result.val.skipped if result.val else None, weights_digest=result.digest)
        if result.ema_val is not None:
            record.update(ema_val_top1=result.ema_val.top1, ema_val_top5=result.ema_val.top5)
        if result.keep_rate is not None:
            record["keep_rate"] = result.keep_rate
        return record

    def _extra(self, lr: float, val: Optional[ValResult], **more: Any) -> Dict[str, Any]:
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

    def _save(self, result: EpochResult) -> None:
        self.manager.save(self.net, self.optimizer, self.ema, result.epoch, result.global_step,
                          metric=result.val.top1[-1] if result.val else None, extra=self._extra(result.lr, result.val))

    def _plot(self) -> None:
        try:
            plot_metrics(self.metrics.path, self.config.plot)
        except PlotUnavailable as exc:
            if not getattr(self, "_plot_warned", False):
                logger.warning("--plot %s not written: %s", self.config.plot, exc)
                self._plot_warned = True

    def _write_weights(self, epoch: int, val: ValResult) -> Optional[Path]:
        """Plain weights of the final model (readable by scripts/eval.py and dvt_ms.load_checkpoint)."""
        if not self.dist.is_main:
            return None
        meta = dict(model=self.config.model,
                    model_overrides=dict(self.config.model_overrides, num_classes=self.num_classes),
                    epoch=epoch, val_top1=val.top1, data_config=self.data_config.to_dict())
        return save_checkpoint(self.net, self.output_dir / WEIGHTS_NAME, meta)

    def close(self) -> None:
        """Release the output folder's lock (done by :meth:`run` when it ends, however it ends)."""
        lock = getattr(self, "lock", None)
        if lock is not None:
            lock.release()

    def _begin(self) -> None:
        """The first writes of a run that trains: ``config.yaml``, and the metrics of later epochs dropped."""
        config, dist = self.config, self.dist
        self.metrics.drop_after(self.start_epoch - 1)
        if dist.is_main:
            header = (f"resolved config of {config.config_file or 'the command line'}; world size "
                      f"{dist.world_size}, global batch {self.global_batch}, peak lr {self.peak_lr:.6g} "
                      f"({config.lr_scaling} scaling of lr {config.lr:g} given for a global batch of "
                      f"{config.lr_batch_size}); {self.steps_per_epoch} steps per epoch")
            save_config(config, self.output_dir / CONFIG_NAME, header=header)

    def _interrupted(self, signum: int, epoch: int, steps: Optional[int]) -> TrainingInterrupted:
        """The exception (and its one log line, rank 0) of a run stopped by ``signum``."""
        if steps is None:
            where, path = f"after epoch {epoch}", self.manager.epoch_path(epoch)
        else:
            where, path = f"in epoch {epoch} after step {steps} of {self.steps_per_epoch}", \
                self.manager.step_path(epoch, steps)
        config_file = self.output_dir / CONFIG_NAME
        message = (f"stopped by {signal.Signals(signum).name} {where} (global step {self.step.global_step}); "
                   f"checkpoint {path}; resume with: python scripts/train.py --config {config_file} --resume auto "
                   f"(or the same command with --resume auto)")
        return TrainingInterrupted(message, signum)

    def run(self) -> Dict[str, Any]:
        """Set up (if not done), train the remaining epochs, return the final results.

        SIGINT/SIGTERM stop the run after the current step with a step checkpoint
        (:class:`TrainingInterrupted`; a second signal stops at once); the lock is released on any exit.
        """
        if not hasattr(self, "step"):
            self.setup()
        try:
            with StopSignals() as self._stop:
                return self._run()
        finally:
            self._stop = None
            self.close()

    def _run(self) -> Dict[str, Any]:
        config, dist = self.config, self.dist
        last: Optional[EpochResult] = None
        if self.start_epoch > self.total_epochs:
            logger.info("%s: all %d epochs are already done; nothing to train", self.output_dir, self.total_epochs)
        else:
            self._begin()
        for epoch in range(self.start_epoch, self.total_epochs + 1):
            first = epoch == self.start_epoch
            result = self.train_epoch(epoch, self.start_step if first else 0, self.partial if first else None)
            if result.interrupted:
                raise self._interrupted(result.interrupted, epoch, result.steps)
            result.digest = dist.check_replicas(self.net)
            if dist.enabled:
                logger.info("rank %d: weights identical on all %d ranks after epoch %d (digest %s)", dist.rank,
                            dist.world_size, epoch, result.digest)
            result.val = self.validate()
            if self.ema is not None and config.model_ema_eval:
                with ema_weights(self.net, self.ema):
                    result.ema_val = self.validate()
            if dist.is_main:
                ema = (f" | EMA top-1 {_fmt_acc(result.ema_val.top1)}" if result.ema_val is not None else "")
                logger.info("epoch %d/%d done in %s: loss %s | val top-1 %s top-5 %s (%d images)%s | %.1f img/s | "
                            "%d unreadable train image(s) skipped", epoch, self.total_epochs,
                            _fmt_time(result.epoch_time), " ".join(f"{v:.4f}" for v in result.train_loss),
                            _fmt_acc(result.val.top1), _fmt_acc(result.val.top5), result.val.num_images, ema,
                            result.images_per_sec, result.skipped_images)
            self.metrics.log(self._record(result))
            self._save(result)
            if dist.enabled:  # no rank goes on (or exits) before rank 0's file is complete
                dist.all_reduce_sum([0.0])
            if config.plot and dist.is_main:
                self._plot()
            last = result
            signum = self._stop_agreed()
            if signum and epoch < self.total_epochs:
                raise self._interrupted(signum, epoch, None)
        val = self.validate() if last is None else last.val
        logger.info("graphs compiled: %d training step graph(s) (one per distinct EViT keep rate), 1 validation "
                    "graph", self.step.graphs_compiled)
        existing = self.output_dir / WEIGHTS_NAME
        if last is None and existing.is_file():  # nothing trained: the file is left as it is
            weights = existing if dist.is_main else None
        else:
            weights = self._write_weights(self.start_epoch - 1 if last is None else last.epoch, val)
        return dict(model=config.model, exits=self.exit_names, epochs=self.total_epochs, val=val,
                    ema_val=None if last is None else last.ema_val, best_metric=self.manager.best_metric,
                    best_epoch=self.manager.best_epoch, output_dir=str(self.output_dir),
                    weights=None if weights is None else str(weights), rank=dist.rank, world_size=dist.world_size)
