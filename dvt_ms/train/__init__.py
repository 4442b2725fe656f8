"""Training library: optimizer, schedules, multi-exit loss, EMA, the training step, checkpoints, metrics,
data parallelism and the whole run.

``scripts/train.py`` is ``Trainer(resolve_train_config(argv)).run()`` (:mod:`dvt_ms.train.loop`). The
pieces it wires together, by hand::

    lr = cosine_lr(scaled_lr(5e-4, global_batch, 512), steps_per_epoch)
    optimizer = create_optimizer(net, "adamw", lr, weight_decay=0.05)
    ema = ModelEMA(net, 0.99996)
    step = TrainStep(net, MultiExitLoss(label_smoothing=0.1), optimizer, ema=ema)
    manager = CheckpointManager(output_dir, keep_last=3, rank=rank)
    meta = manager.resume("auto", net, optimizer, ema)          # None on a fresh run
    for images, targets in batches:
        out = step(images, targets)                              # raises NonFiniteError on NaN/Inf
    manager.save(net, optimizer, ema, epoch, step.global_step, metric=val_top1_last_exit)
"""
from ..config.training import TRAIN_SCHEMA, resolve_train_config
from .checkpoints import CheckpointManager
from .distributed import DistributedContext, DistributedError, init_distributed, launched_distributed, weights_digest
from .ema import ModelEMA
from .loss import MultiExitLoss, check_targets
from .metrics import MetricsLogger, plot_metrics, read_metrics
from .optim import AdamW, create_optimizer, param_groups, scaled_lr, split_decay_params
from .schedule import (cosine_lr, evit_keep_rate, keep_rate_at_step, keep_token_counts, lr_at,
                       quantize_keep_rate)
from .step import NonFiniteError, StepOutput, TrainStep
from .loop import Trainer, TrainingStopped
from .validation import ema_weights
from .weights_init import load_pretrained

__all__ = [
    "AdamW", "CheckpointManager", "DistributedContext", "DistributedError", "MetricsLogger", "ModelEMA",
    "MultiExitLoss", "NonFiniteError", "StepOutput", "TRAIN_SCHEMA", "TrainStep", "Trainer", "TrainingStopped",
    "check_targets", "cosine_lr", "create_optimizer", "ema_weights", "evit_keep_rate", "init_distributed",
    "keep_rate_at_step", "keep_token_counts", "launched_distributed", "load_pretrained", "lr_at", "param_groups",
    "plot_metrics", "quantize_keep_rate", "read_metrics", "resolve_train_config", "scaled_lr",
    "split_decay_params", "weights_digest",
]
