"""Classify images with a DVT cascade and early exits.

    dvt-ms infer --checkpoint CKPT IMAGE_OR_DIR... [--config FILE.yaml] [--weights model|model_ema]
                 [--thresholds 0.8,0.6,-1e8 | --budget_step P] [--topk 5]
                 [--class_names FILE] [--output out.csv|out.json] [--batch_size 32]
                 [--device_target CPU|GPU|Ascend] [--shape_mode dynamic|buckets] [--cpu_kernels auto|on|off]
                 [--precision fp32|bf16|fp16]
    (or python scripts/infer.py ...)

The model comes from the checkpoint (a .ckpt written by this project names its model, architecture and
data config), else from --model and --model_overrides.KEY VALUE; a config value that contradicts the
checkpoint is an error. The exit thresholds come from --thresholds (one per exit, the last normally
-1e8), or from row P (1..59) of the checkpoint's dynamic_threshold table with --budget_step P. Folders
are walked recursively for image files; unreadable files are reported and skipped. Images get the
evaluation transform of the model's data config (dvt_ms.data.data_config: the one eval.py uses). One
line per image goes to stdout: path, class (with its name: the training class folder stored in the
checkpoint, or --class_names), exit (1-based), confidence and optionally the top-k classes; --output
also writes them as CSV or JSON. Every key is also a config-file key; see --help.
"""
import csv
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

from dvt_ms.config import COMMON, ConfigError, Schema, resolve_config
from dvt_ms.config.scripts import INFER, parse_threshold_list
from dvt_ms.infer import (AdaptiveClassifier, budget_thresholds, check_thresholds, exit_fraction_summary,
                          iter_image_batches, iter_image_paths, read_class_names, topk)
from dvt_ms.models import DynamicVisionTransformer
from dvt_ms.run import configure_device, load_model
from dvt_ms.utils.atomic import atomic_path
from dvt_ms.utils.cli import run_cli, setup_logging

logger = logging.getLogger("infer")


def _require_inputs(values, sources) -> None:
    if not values["inputs"]:
        raise ConfigError("no images: pass image files and/or folders (IMAGE_OR_DIR...)")


SCHEMA = COMMON + INFER + Schema("infer.py checks", checks=[_require_inputs])


class Progress:
    """Images done so far, on stderr: rewritten in place on a terminal, else a log line now and then."""

    def __init__(self, every: int = 10):
        self.tty = sys.stderr.isatty()
        self.every = every
        self.batches = 0

    def update(self, done: int, skipped: int) -> None:
        self.batches += 1
        message = f"{done} images classified, {skipped} skipped"
        if self.tty:
            sys.stderr.write(f"\r{message}")
            sys.stderr.flush()
        elif self.batches % self.every == 0:
            logger.info(message)

    def close(self) -> None:
        if self.tty and self.batches:
            sys.stderr.write("\n")


def format_line(record: Dict[str, Any]) -> str:
    fields = [record["path"], f"class {record['class_index']}"]
    if "class_name" in record:
        fields[-1] += f" ({record['class_name']})"
    fields += [f"exit {record['exit']}", f"confidence {record['confidence']:.4f}"]
    if "topk" in record:
        fields.append(f"top{len(record['topk'])} " + " ".join(f"{t['class_index']}:{t['prob']:.4f}"
                                                          for t in record["topk"]))
    return "\t".join(fields)


def write_output(path: Path, records: List[Dict[str, Any]], skipped: List[str], header: Dict[str, Any]) -> None:
    """Write CSV or JSON (by extension) under a temporary name, then rename it into place."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        if path.suffix.lower() == ".json":
            json.dump({**header, "results": records, "skipped": skipped}, f, indent=2)
        else:
            columns = ["path", "class_index"] + (["class_name"] if records and "class_name" in records[0]
                                                 else []) + ["exit", "confidence"]
            has_topk = bool(records) and "topk" in records[0]
            writer = csv.writer(f)
            writer.writerow(columns + (["topk_classes", "topk_probs"] if has_topk else []))
            for r in records:
                row = [r[c] for c in columns]
                if has_topk:
                    row += [" ".join(str(t["class_index"]) for t in r["topk"]),
                            " ".join(f"{t['prob']:.6f}" for t in r["topk"])]
                writer.writerow(row)


def choose_thresholds(args, metadata: Dict[str, Any], n_exits: int):
    if args.thresholds is not None:
        try:
            return check_thresholds(parse_threshold_list(args.thresholds), n_exits)
        except ValueError as exc:
            raise ValueError(f"--thresholds: {exc}") from None
    if args.budget_step is not None:
        return budget_thresholds(metadata, args.budget_step, n_exits, source=str(args.checkpoint))
    available = ("the checkpoint has a dynamic_threshold table, so --budget_step P (1..59) works"
                 if "dynamic_threshold" in metadata else "the checkpoint has no dynamic_threshold table")
    raise ValueError(f"no exit thresholds: pass --thresholds t1,t2,...,-1e8 or --budget_step P ({available})")


def main(argv=None) -> int:
    args = resolve_config(SCHEMA, argv, description=__doc__)
    setup_logging(args.verbose)
    missing = [p for p in args.inputs if not os.path.exists(p)]
    if missing:
        raise ValueError(f"no such file or directory: {', '.join(missing)}")
    if not Path(args.checkpoint).is_file():
        raise ValueError(f"{args.checkpoint}: no such checkpoint file")

    device = configure_device(args.device_target, args.ms_mode, args.cpu_kernels)
    loaded = load_model(args, args.checkpoint, args.sources)
    net, metadata, data_config = loaded.net, loaded.metadata, loaded.data_config
    if not isinstance(net, DynamicVisionTransformer):
        raise ValueError(f"{loaded.name} is not a DVT cascade; early-exit inference needs a dvt_* model")
    thresholds = choose_thresholds(args, metadata, net.num_exits)
    names: Optional[List[str]] = None
    if args.class_names is not None:
        names = read_class_names(args.class_names, int(data_config.num_classes))
    elif data_config.class_names is not None:
        names = list(data_config.class_names)
    engine = AdaptiveClassifier(net, thresholds, shape_mode=args.shape_mode)  # in the model's precision
    logger.info("%s on %s in %s, thresholds %s; preprocessing %s", loaded.name, device, engine.precision,
                [float(t) for t in thresholds], {k: v for k, v in data_config.to_dict().items() if k != "class_names"})

    records: List[Dict[str, Any]] = []
    skipped: List[str] = []
    progress = Progress()
    for paths, images, bad in iter_image_batches(iter_image_paths(args.inputs), args.batch_size, data_config):
        skipped += [str(p) for p in bad]
        if len(paths):
            result = engine(images, return_probs=args.topk is not None)
            top_classes, top_probs = topk(result.probs, args.topk) if args.topk is not None else (None, None)
            for i, path in enumerate(paths):
                record: Dict[str, Any] = {"path": str(path), "class_index": int(result.predictions[i])}
                if names is not None:
                    record["class_name"] = names[record["class_index"]]
                record["exit"] = int(result.exits[i]) + 1
                record["confidence"] = float(result.confidences[i])
                if top_classes is not None:
                    record["topk"] = [{"class_index": int(c), "prob": float(p),
                                       **({"class_name": names[int(c)]} if names is not None else {})}
                                      for c, p in zip(top_classes[i], top_probs[i])]
                records.append(record)
                print(format_line(record), flush=False)
            sys.stdout.flush()
        progress.update(len(records), len(skipped))
    progress.close()
    if not records:
        raise ValueError(f"no readable images in {', '.join(args.inputs)}"
                         + (f" ({len(skipped)} unreadable)" if skipped else ""))
    exits = np.asarray([r["exit"] - 1 for r in records])
    logger.info("%d images classified (%s), %d skipped; %d stage graph(s) compiled", len(records),
                exit_fraction_summary(exits, net.num_exits), len(skipped), sum(engine.compiled_graphs()))
    if skipped:
        logger.warning("%d unreadable file(s) skipped: %s", len(skipped), ", ".join(skipped[:5])
                       + (", ..." if len(skipped) > 5 else ""))
    if args.output is not None:
        header = {"checkpoint": str(args.checkpoint), "model": loaded.name, "model_overrides": loaded.overrides,
                  "data_config": data_config.to_dict(),
                  "thresholds": [float(t) for t in thresholds], "exits_are": "1-based"}
        write_output(Path(args.output), records, skipped, header)
        logger.info("wrote %s", args.output)
    return 0


if __name__ == "__main__":
    run_cli(main)
