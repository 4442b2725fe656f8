"""Classify images with a DVT cascade and early exits.

    python scripts/infer.py --checkpoint CKPT IMAGE_OR_DIR... [--model NAME --set key=value ...]
                            [--thresholds 0.8,0.6,-1e8 | --budget_step P] [--topk 5]
                            [--class_names FILE] [--output out.csv|out.json] [--batch_size 32]
                            [--device_target CPU|GPU|Ascend] [--shape_mode dynamic|buckets]
                            [--cpu_kernels auto|on|off]

The model comes from the checkpoint's metadata (a .ckpt written by convert_checkpoint.py), else from
--model/--set. The exit thresholds come from --thresholds (one per exit, the last normally -1e8), or
from row P (1..59) of the checkpoint's dynamic_threshold table with --budget_step P. Folders are walked
recursively for image files; unreadable files are reported and skipped. Images get the evaluation
transform: shorter side resized to 256 (bicubic), 224 center crop, ImageNet mean/std (scaled with the
model's image size). One line per image goes to stdout: path, class, exit (1-based), confidence and
optionally the top-k classes; --output also writes them as CSV or JSON.
"""
import argparse
import csv
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
# importing dvt_ms loads MindSpore, which reads its log level only then
os.environ.setdefault("GLOG_v", "3")

from dvt_ms.utils.atomic import atomic_path  # noqa: E402
from dvt_ms.utils.cli import add_override_argument, parse_overrides, run_cli, setup_logging  # noqa: E402

logger = logging.getLogger("infer")

OUTPUT_FORMATS = (".csv", ".json")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR", help="image files and/or folders")
    parser.add_argument("--checkpoint", required=True, type=Path, help=".ckpt or official .pth.tar")
    parser.add_argument("--model", default=None, help="model name, if the checkpoint does not name it")
    add_override_argument(parser)
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--thresholds", default=None, help="comma-separated confidence threshold per exit")
    group.add_argument("--budget_step", type=int, default=None, metavar="P",
                       help="use row P (1..59) of the checkpoint's dynamic_threshold table")
    parser.add_argument("--topk", type=int, default=None, help="also report the top-k classes")
    parser.add_argument("--class_names", type=Path, default=None,
                        help="text file with one class name per line (or a JSON list/class index)")
    parser.add_argument("--output", type=Path, default=None, help="write the results to a .csv or .json file")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--device_target", default="CPU", choices=("CPU", "GPU", "Ascend"))
    parser.add_argument("--shape_mode", default="buckets", choices=("dynamic", "buckets"),
                        help="one dynamic-batch graph per stage, or static graphs for bucketed batch sizes")
    parser.add_argument("--cpu_kernels", default="auto", choices=("auto", "on", "off"),
                        help="fused C++ kernels on CPU (dvt_ms.kernels): auto uses them if a C++ compiler is found")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        raise ValueError(f"--batch_size must be >= 1, got {args.batch_size}")
    if args.topk is not None and args.topk < 1:
        raise ValueError(f"--topk must be >= 1, got {args.topk}")
    if args.output is not None and args.output.suffix.lower() not in OUTPUT_FORMATS:
        raise ValueError(f"--output {args.output}: the file name must end in .csv or .json")
    return args


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


def choose_thresholds(args: argparse.Namespace, metadata: Dict[str, Any], n_exits: int):
    from dvt_ms.infer import budget_thresholds, check_thresholds, parse_thresholds

    if args.thresholds is not None:
        try:
            return check_thresholds(parse_thresholds(args.thresholds), n_exits)
        except ValueError as exc:
            raise ValueError(f"--thresholds: {exc}") from None
    if args.budget_step is not None:
        return budget_thresholds(metadata, args.budget_step, n_exits, source=str(args.checkpoint))
    available = ("the checkpoint has a dynamic_threshold table, so --budget_step P (1..59) works"
                 if "dynamic_threshold" in metadata else "the checkpoint has no dynamic_threshold table")
    raise ValueError(f"no exit thresholds: pass --thresholds t1,t2,...,-1e8 or --budget_step P ({available})")


def main(argv=None) -> int:
    args = parse_args(argv)
    setup_logging(args.verbose)
    missing = [p for p in args.inputs if not os.path.exists(p)]
    if missing:
        raise ValueError(f"no such file or directory: {', '.join(missing)}")
    if not args.checkpoint.is_file():
        raise ValueError(f"{args.checkpoint}: no such checkpoint file")
    overrides = parse_overrides(args.overrides)

    from dvt_ms.infer import (AdaptiveClassifier, exit_fraction_summary, iter_image_batches, iter_image_paths,
                              model_from_checkpoint, read_class_names, topk)
    from dvt_ms.models import DynamicVisionTransformer
    from dvt_ms.utils.device import configure_device

    device = configure_device(args.device_target, "graph", args.cpu_kernels)
    net, metadata = model_from_checkpoint(args.checkpoint, args.model, overrides, args.cpu_kernels)
    if not isinstance(net, DynamicVisionTransformer):
        raise ValueError(f"{metadata['model']} is not a DVT cascade; early-exit inference needs a dvt_* model")
    thresholds = choose_thresholds(args, metadata, net.num_exits)
    num_classes = int(net.stages[0].num_classes)
    names: Optional[List[str]] = None
    if args.class_names is not None:
        names = read_class_names(args.class_names, num_classes)
    engine = AdaptiveClassifier(net, thresholds, shape_mode=args.shape_mode)
    logger.info("%s on %s, thresholds %s", metadata["model"], device, [float(t) for t in thresholds])

    records: List[Dict[str, Any]] = []
    skipped: List[str] = []
    progress = Progress()
    image_size = engine.image_size
    for paths, images, bad in iter_image_batches(iter_image_paths(args.inputs), args.batch_size, image_size):
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
    import numpy as np

    exits = np.asarray([r["exit"] - 1 for r in records])
    logger.info("%d images classified (%s), %d skipped", len(records),
                exit_fraction_summary(exits, net.num_exits), len(skipped))
    if skipped:
        logger.warning("%d unreadable file(s) skipped: %s", len(skipped), ", ".join(skipped[:5])
                       + (", ..." if len(skipped) > 5 else ""))
    if args.output is not None:
        header = {"checkpoint": str(args.checkpoint), "model": metadata["model"],
                  "model_overrides": metadata.get("model_overrides"),
                  "thresholds": [float(t) for t in thresholds], "exits_are": "1-based"}
        write_output(args.output, records, skipped, header)
        logger.info("wrote %s", args.output)
    return 0


if __name__ == "__main__":
    run_cli(main)
