"""The set-up of a training run (:class:`TrainerSetup`): steps 1-4 of the order of work in
:mod:`dvt_ms.train.loop`, everything before the first step. Every config or data problem is raised from here,
and nothing is written into the output folder (rank 0 takes its lock).
"""
import logging
import math
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import mindspore as ms
import numpy as np
from mindspore import Tensor

from ..config import Config, ConfigError
from ..data import check_image_folder, resolve_data_config
from ..layers.token_reorganization import kept_token_count
from ..models import create_model, exit_names, model_family, model_image_size, model_num_classes, num_exits
from ..precision import resolve_training_precision
from ..run import configure_device, log_model
from ..utils.gears import keep_count_gears, uses_gears
from .checkpoints import CheckpointManager
from .distributed import DistributedContext, init_distributed
from .ema import ModelEMA
from .lock import RunLock
from .loss import MultiExitLoss
from .metrics import MetricsLogger
from .optim import create_optimizer, scaled_lr
from .schedule import cosine_lr, keep_rate_at_step, quantize_keep_rate
from .step import TrainStep
from .weights_init import load_pretrained, reinit_fan_in

logger = logging.getLogger(__name__)

__all__ = ["TrainerSetup", "train_model_overrides"]


def train_model_overrides(config: Config) -> Dict[str, Any]:
    """``create_model`` overrides for training: ``model_overrides`` + ``num_classes`` + ``drop_path``."""
    overrides = dict(config.model_overrides)
    if config.num_classes is not None:
        overrides["num_classes"] = config.num_classes
    overrides["drop_path_rate"] = float(config.drop_path)
    return overrides


class TrainerSetup:
    """A training run of ``config`` up to its first step: :meth:`setup` builds and checks everything
    (:class:`~dvt_ms.train.loop.Trainer` trains it)."""

    def __init__(self, config: Config, dist: Optional[DistributedContext] = None):
        self.config = config
        self.dist = dist
        self.output_dir = Path(config.output_dir)

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

    def close(self) -> None:
        """Release the output folder's lock (done by :meth:`~dvt_ms.train.loop.Trainer.run` when it ends, however
        it ends)."""
        lock = getattr(self, "lock", None)
        if lock is not None:
            lock.release()
