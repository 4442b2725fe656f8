"""Train a DVT cascade, DeiT or EViT on an ImageFolder (DATA_DIR/train/<class>/..., DATA_DIR/val/<class>/...).

    python scripts/train.py --config configs/dvt_deit_small.yaml --data_dir /path/to/imagenet \\
        [--num_classes N] [--epochs 300] [--batch_size 64] [--output_dir outputs/dvt_deit_small] \\
        [--device_target CPU|GPU|Ascend] [--resume auto|PATH] [--pretrained PATH] [--seed 0] \\
        [--plot outputs/curves.png] [--key value ...]

Every key of the config file is a flag and the command line wins; everything is checked before any
work starts and an error names the key (see dvt_ms/config/sections.py, section "training"). The output folder
gets config.yaml (the resolved config), epoch_XXXX.ckpt (the last keep_checkpoints epochs), best.ckpt
(best last-exit val top-1), metrics.jsonl (one record per epoch) and final_weights.ckpt (plain weights
for scripts/eval.py). Data parallel: scripts/run_msrun.sh or scripts/run_distributed_ascend.sh.

SIGTERM/SIGINT (Ctrl-C): the current step is finished, a step checkpoint is written and one line says
where the run stopped and how to resume (--resume auto continues mid-epoch, as if never stopped); a
second signal stops at once. One run per output folder: a second one is refused while the first lives.

Exit status: 0 done, 2 bad config/data/checkpoint or output folder in use (one line on stderr), 3 stopped
by a NaN/Inf loss, 130/143 stopped by SIGINT/SIGTERM (with a checkpoint).
"""
import logging
import sys

from dvt_ms.checkpoint import CheckpointError
from dvt_ms.config.training import resolve_train_config
from dvt_ms.train.distributed import DistributedError
from dvt_ms.train.loop import Trainer, TrainingInterrupted, TrainingStopped
from dvt_ms.utils.cli import quiet_mindspore, run_cli, setup_logging

logger = logging.getLogger("train")


def _print_results(results) -> None:
    val = results["val"]
    print(f"\nfinal validation of {results['model']} ({val.num_images} images, {val.skipped} unreadable skipped):")
    print("exit  tokens   top-1   top-5")
    for k, name in enumerate(results["exits"]):
        top5 = "-" if val.top5[k] is None else f"{val.top5[k]:.2f}"
        print(f"{k + 1:>4}  {name:>6}  {val.top1[k]:>6.2f}  {top5:>6}")
    if results.get("ema_val") is not None:
        print("EMA weights top-1: " + ", ".join(f"exit {k + 1} {v:.2f}" for k, v in enumerate(results["ema_val"].top1)))
    if len(results["exits"]) > 1:
        gain = val.top1[-1] - val.top1[0]
        verdict = "beats" if gain > 0 else "does NOT beat"
        print(f"the last exit ({results['exits'][-1]} tokens) {verdict} the first ({results['exits'][0]} tokens): "
              f"{val.top1[-1]:.2f}% vs {val.top1[0]:.2f}% top-1 ({gain:+.2f} points)")
    if results.get("best_metric") is not None:
        print(f"best last-exit top-1 {results['best_metric']:.2f}% at epoch {results['best_epoch']}; "
              f"checkpoints in {results['output_dir']}")


def main(argv=None) -> int:
    quiet_mindspore()
    config = resolve_train_config(argv, description=__doc__)
    setup_logging(config.verbose)
    trainer = Trainer(config)
    try:
        results = trainer.run()
    except TrainingInterrupted as exc:
        logger.warning("%s", exc)
        return exc.exit_status
    except TrainingStopped as exc:
        logger.error("%s", exc)
        print(f"error: {exc}", file=sys.stderr)
        return 3
    except (CheckpointError, DistributedError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if results["rank"] == 0:
        _print_results(results)
    return 0


if __name__ == "__main__":
    run_cli(main)
