"""Evaluate a DVT (or plain ViT/EViT) checkpoint on an ImageFolder: anytime and budgeted classification.

    dvt-ms eval --checkpoint CKPT --data_dir DIR [--config FILE.yaml] [--weights model|model_ema] \\
        [--mode anytime|saved|saved-thresholds|fit] [--fit_samples 50000] [--device_target CPU|GPU|Ascend] \\
        [--batch_size N] [--output results.json] [--plot curve.png] [--predictions probs.npz]
    (or python scripts/eval.py ...)

The model comes from the checkpoint (a .ckpt written by this project names its model, architecture and
data config; a training run's own config.yaml also works as --config), else from --model and
--model_overrides.KEY VALUE; a config value that contradicts the checkpoint is an error naming both. The
images get the evaluation transform of the model's data config (dvt_ms.data.data_config), as in infer.py.

Modes:
  anytime           top-1/top-5 of every exit on DATA_DIR/val (also reported by the two modes below)
  saved             print the results stored in an official DVT checkpoint (no data, no model run)
  saved-thresholds  the checkpoint's dynamic_threshold (p = 1..59) applied to DATA_DIR/val
  fit               thresholds fitted on --fit_samples random DATA_DIR/train images (--seed), then val

Every key of the config file is also a flag; flags win. Costs are GMACs from dvt_ms.flops (1e9
multiply-accumulates per image); a checkpoint's stored "flops" are reported separately, as stored.
"""
import json
import logging
import os
from pathlib import Path

os.environ.setdefault("GLOG_v", "3")  # hide MindSpore's C++ plug-in warnings

import numpy as np

from dvt_ms.checkpoint import read_checkpoint
from dvt_ms.config import COMMON, EVAL, ConfigError, Schema, resolve_config
from dvt_ms.data import check_image_folder, create_eval_dataset
from dvt_ms.evaluate import (anytime_results, budget_results, collect_predictions, exit_gmacs, fit_subset_indices,
                             saved_results, stored_flops, stored_thresholds)
from dvt_ms.models import exit_names, model_extra_outputs, model_num_classes, num_exits
from dvt_ms.plots import PlotUnavailable, matplotlib_available, plot_budget_curve
from dvt_ms.run import configure_device, load_model
from dvt_ms.utils.atomic import atomic_path
from dvt_ms.utils.cli import run_cli, setup_logging

logger = logging.getLogger("eval")

GMACS_NOTE = ("multiply-accumulates per image counted by dvt_ms.flops.count, in units of 1e9 (the "
              "'GFLOPs' of the DeiT/T2T-ViT/DVT papers)")
STORED_NOTE = "the checkpoint's own 'flops' metadata, copied as stored (units of the official code)"


def _require_inputs(values, sources) -> None:
    if not values["checkpoint"]:
        raise ConfigError("missing required key 'checkpoint': pass --checkpoint PATH")
    if values["mode"] != "saved" and not values["data_dir"]:
        raise ConfigError(f"mode {values['mode']!r} needs data: pass --data_dir DIR (an ImageFolder root "
                          "with val/ and, for --mode fit, train/)")


SCHEMA = COMMON + EVAL + Schema("eval.py checks", checks=[_require_inputs])


def _write_json(path: Path, data) -> None:
    with atomic_path(path) as tmp_name, open(tmp_name, "w", encoding="utf-8") as out:
        json.dump(data, out, indent=1)
        out.write("\n")


def _write_predictions(path: Path, preds, names, classes) -> None:
    with atomic_path(path) as tmp_name, open(tmp_name, "wb") as out:
        np.savez(out, probs=preds.probs, targets=preds.targets, exit_names=np.asarray(names),
                 class_names=np.asarray(classes), skipped_files=np.asarray(preds.skipped_files, dtype=str))
    logger.info("wrote the predictions of %d images to %s", preds.targets.shape[0], path)


def _fmt(value, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _print_anytime(rows) -> None:
    print("exit  tokens   top-1   top-5   GMACs")
    for row in rows:
        print(f"{row['exit']:>4}  {row['tokens'] or '-':>6}  {_fmt(row['top1']):>6}  {_fmt(row['top5']):>6}"
              f"  {row['gmacs']:.4f}")


def _print_curve(points) -> None:
    stored = "flops_stored" in points[0]
    print("   p   top-1   GMACs" + ("   flops(stored units)" if stored else "") + "   exit counts")
    for pt in points:
        extra = f"   {pt['flops_stored']:>19.4f}" if stored else ""
        print(f"{pt['p']:>4}  {pt['accuracy']:>6.2f}  {pt['gmacs']:.4f}{extra}   {pt['exit_counts']}")


def _plot(path, results) -> bool:
    """Draw the plot; return False (after logging why) if matplotlib is missing."""
    try:
        if results["mode"] == "saved":
            saved = results["saved"]
            n = len(saved["flops"])
            plot_budget_curve(path, saved["budgeted_batch_classification"]["flops"],
                              saved["budgeted_batch_classification"]["accuracy"], saved["flops"],
                              saved["anytime_classification"], [f"exit {k + 1}" for k in range(n)],
                              xlabel="FLOPs per image (units as stored in the checkpoint)",
                              title=f"{Path(results['checkpoint']).name}: stored results")
        else:
            anytime = results["anytime"]
            points = results.get("budget") or []
            plot_budget_curve(path, [p["gmacs"] for p in points], [p["accuracy"] for p in points],
                              [r["gmacs"] for r in anytime], [r["top1"] for r in anytime],
                              [f"exit {r['exit']} ({r['tokens']})" for r in anytime],
                              title=f"{results['model']} - {results['mode']} ({results['data']['num_evaluated']} "
                                    "val images)")
    except PlotUnavailable as exc:
        logger.error("%s not written: %s", path, exc)
        return False
    logger.info("wrote %s", path)
    return True


def _saved_mode(config) -> dict:
    _, metadata = read_checkpoint(config.checkpoint)
    saved = saved_results(metadata, config.checkpoint)
    print(f"results stored in {config.checkpoint} (FLOPs in the checkpoint's own units):")
    print("exit   flops   top-1")
    for k, (f, a) in enumerate(zip(saved["flops"], saved["anytime_classification"])):
        print(f"{k + 1:>4}  {f:>6.4f}  {a:>6.2f}")
    budget = saved["budgeted_batch_classification"]
    print("budgeted batch classification (step, flops, top-1):")
    for i, (f, a) in enumerate(zip(budget["flops"], budget["accuracy"])):
        print(f"{i + 1:>4}  {f:.4f}  {a:.2f}")
    return {"saved": saved, "flops": {"stored_per_exit": saved["flops"], "stored_note": STORED_NOTE}}


def _predict(net, config, data_config, info, indices=None):
    data = create_eval_dataset(info.root, config.batch_size, data_config,
                               num_parallel_workers=config.num_parallel_workers, indices=indices, info=info)
    return collect_predictions(net, data, config.batch_size)


def _data_summary(info, preds, **extra) -> dict:
    return {"dir": str(info.root), "num_classes": info.num_classes, "num_files": preds.num_files,
            "num_evaluated": int(preds.targets.shape[0]), "skipped": preds.skipped,
            "skipped_files": preds.skipped_files, **extra}


def _model_modes(config) -> dict:
    loaded = load_model(config, config.checkpoint, config.sources)
    net, metadata, data_config, model = loaded.net, loaded.metadata, loaded.data_config, loaded.name
    n_exits = num_exits(net)
    gmacs = exit_gmacs(net)
    flops_stored = stored_flops(metadata, config.checkpoint, n_exits)
    thresholds = None
    if config.mode in ("saved-thresholds", "fit") and n_exits < 2:
        raise ValueError(f"--mode {config.mode} needs a multi-exit (DVT) model; {model} has one exit")
    if config.mode == "saved-thresholds":
        thresholds = stored_thresholds(metadata, config.checkpoint, n_exits)
    num_classes = model_num_classes(net)
    extra = model_extra_outputs(model)
    val_info = check_image_folder(config.data_dir, config.val_split, num_classes, extra)
    train_info = None
    if config.mode == "fit":
        train_info = check_image_folder(config.data_dir, config.train_split, num_classes, extra)
    if data_config.class_names is not None and tuple(val_info.classes) != data_config.class_names:
        diff = sorted(set(val_info.classes) ^ set(data_config.class_names))
        raise ValueError(f"{val_info.root}: its class folders are not the classes {config.checkpoint} was trained on "
                         f"(only in one of them: {', '.join(diff[:10]) or 'none, but in another order'})")
    if train_info is not None and train_info.classes != val_info.classes:
        raise ValueError(f"{train_info.root} and {val_info.root} have different class folders")

    results = {"model": model, "model_overrides": loaded.overrides, "data_config": data_config.to_dict(),
               "precision": {"requested": config.precision, "used": net.kernels.precision,
                             "kernels": net.kernels.describe()},
               "num_exits": n_exits,
               "flops": {"gmacs_per_exit": gmacs, "gmacs_note": GMACS_NOTE,
                         "stored_per_exit": None if flops_stored is None else flops_stored.tolist(),
                         "stored_note": STORED_NOTE}}
    logger.info("evaluating %s (%d exit(s), GMACs %s) on %s (%d images)", model, n_exits,
                ", ".join(f"{g:.4f}" for g in gmacs), val_info.root, val_info.num_images)
    val = _predict(net, config, data_config, val_info)
    results["data"] = _data_summary(val_info, val)
    results["anytime"] = anytime_results(val.probs, val.targets, gmacs, exit_names(net))
    if config.predictions:
        _write_predictions(Path(config.predictions), val, exit_names(net), val_info.classes)
    _print_anytime(results["anytime"])

    if config.mode == "fit":
        indices = fit_subset_indices(train_info.num_images, config.fit_samples, config.seed)
        if config.fit_samples > train_info.num_images:
            logger.warning("--fit_samples %d exceeds the %d images of %s; using all of them",
                           config.fit_samples, train_info.num_images, train_info.root)
        logger.info("fitting thresholds on %d images of %s (seed %d)", len(indices), train_info.root,
                    config.seed)
        train = _predict(net, config, data_config, train_info, indices)
        results["fit_data"] = _data_summary(train_info, train, seed=config.seed,
                                            fit_samples=config.fit_samples)
        points = budget_results(val.probs, val.targets, gmacs, train_probs=train.probs,
                                train_targets=train.targets, flops_stored=flops_stored,
                                steps=range(1, config.budget_steps + 1))
    elif config.mode == "saved-thresholds":
        points = budget_results(val.probs, val.targets, gmacs, thresholds=thresholds, flops_stored=flops_stored)
    else:
        points = None
    if points is not None:
        _print_curve(points)
        results["budget"] = points
    return results


def main(argv=None) -> int:
    config = resolve_config(SCHEMA, argv, description=__doc__)
    setup_logging(config.verbose)
    if config.plot and not matplotlib_available():
        logger.warning("--plot %s: matplotlib is not installed (pip install matplotlib); the results will "
                       "still be written, the plot will not", config.plot)
    results = {"config": config.to_dict(), "config_file": config.config_file, "checkpoint": str(config.checkpoint),
               "mode": config.mode}
    if config.mode == "saved":
        results["device"] = None
        results.update(_saved_mode(config))
    else:
        device = configure_device(config.device_target, config.ms_mode, config.cpu_kernels)
        results["device"] = {"requested": config.device_target, "used": device}
        results.update(_model_modes(config))
    if config.output:
        _write_json(Path(config.output), results)
        logger.info("wrote %s", config.output)
    if config.plot and not _plot(config.plot, results):
        return 1
    return 0


if __name__ == "__main__":
    run_cli(main)
