"""The training run behind ``scripts/train.py``: :class:`Trainer` runs the set-up (:mod:`.assembly`) and the
epochs (:mod:`.epochs`), and after each epoch its validation, metrics record, checkpoint and plot; it takes the
stop signals and writes the final weights.

:func:`dvt_ms.config.training.resolve_train_config` reads ``--config FILE.yaml`` and ``--key value`` flags (schema
:data:`TRAIN_SCHEMA` = ``COMMON + TRAIN`` + ``plot``); :class:`Trainer` does the rest::

    config = resolve_train_config(argv)
    results = Trainer(config).run()

Order of work (everything that can be wrong with the config or the data fails before step 5; steps 1-4 are
:mod:`.assembly`, the steps of step 5 :mod:`.epochs`):

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

Determinism and resume: :mod:`.epochs`.

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
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

from ..checkpoint import save_checkpoint
from ..config import save_config
from ..plots import PlotUnavailable
from .epochs import EpochResult, EpochTrainer, TrainingStopped, format_duration
from .interrupt import StopSignals, TrainingInterrupted
from .metrics import plot_metrics
from .validation import ValResult, ema_weights

logger = logging.getLogger(__name__)

__all__ = ["Trainer", "TrainingInterrupted", "TrainingStopped"]

CONFIG_NAME = "config.yaml"
WEIGHTS_NAME = "final_weights.ckpt"


def _fmt_acc(values: Sequence[Optional[float]]) -> str:
    return "/".join("-" if v is None or not math.isfinite(v) else f"{v:.2f}" for v in values)


class Trainer(EpochTrainer):
    """One training run of ``config`` (a :data:`TRAIN_SCHEMA` config); :meth:`run` does it all: the set-up
    (:class:`~dvt_ms.train.assembly.TrainerSetup`), the epochs (:class:`~dvt_ms.train.epochs.EpochTrainer`),
    and after each epoch its validation, metrics record, checkpoint and plot."""

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

    def _save(self, result: EpochResult) -> None:
        self.manager.save(self.net, self.optimizer, self.ema, result.epoch, result.global_step,
                          metric=result.val.top1[-1] if result.val else None,
                          extra=self.checkpoint_metadata(result.lr, result.val))

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
            with StopSignals() as self.stop_signals:
                return self._run()
        finally:
            self.stop_signals = None
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
                            format_duration(result.epoch_time), " ".join(f"{v:.4f}" for v in result.train_loss),
                            _fmt_acc(result.val.top1), _fmt_acc(result.val.top5), result.val.num_images, ema,
                            result.images_per_sec, result.skipped_images)
            self.metrics.log(self._record(result))
            self._save(result)
            if dist.enabled:  # no rank goes on (or exits) before rank 0's file is complete
                dist.all_reduce_sum([0.0])
            if config.plot and dist.is_main:
                self._plot()
            last = result
            signum = self.stop_agreed()
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
