"""Export a DVT cascade as one MindIR file per stage (dynamic batch) plus a JSON manifest.

    python scripts/export.py --checkpoint CKPT --output_dir DIR [--format MINDIR]
                             [--model NAME --set key=value ...] [--overwrite]

The model comes from the checkpoint's metadata (a .ckpt written by convert_checkpoint.py), else from
--model/--set. DIR receives dvt_stage0.mindir, dvt_stage1.mindir, ... and dvt_export.json, which lists
each stage's inputs (the images and the previous stage's reuse outputs), outputs, the preprocessing,
the exit rule and the checkpoint's dynamic_threshold table if it has one. Only MINDIR is supported.
"""
import argparse
import logging
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
# importing dvt_ms loads MindSpore, which reads its log level only then
os.environ.setdefault("GLOG_v", "3")

from dvt_ms.utils.cli import add_override_argument, parse_overrides, run_cli, setup_logging  # noqa: E402

logger = logging.getLogger("export")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, type=Path, help=".ckpt or official .pth.tar")
    parser.add_argument("--output_dir", required=True, type=Path)
    parser.add_argument("--format", default="MINDIR", help="export format (only MINDIR is supported)")
    parser.add_argument("--model", default=None, help="model name, if the checkpoint does not name it")
    add_override_argument(parser)
    parser.add_argument("--overwrite", action="store_true", help="replace existing export files in DIR")
    parser.add_argument("--verbose", action="store_true")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    setup_logging(args.verbose)
    from dvt_ms.export import SUPPORTED_FORMATS

    if args.format.upper() not in SUPPORTED_FORMATS:
        raise ValueError(f"--format {args.format}: not supported; only MINDIR is (MindSpore 2.10 has no ONNX "
                         "converter for ops these models use, e.g. Unstack)")
    if not args.checkpoint.is_file():
        raise ValueError(f"{args.checkpoint}: no such checkpoint file")
    overrides = parse_overrides(args.overrides)

    import mindspore as ms

    from dvt_ms.export import export_cascade
    from dvt_ms.infer import model_from_checkpoint

    ms.set_context(mode=ms.GRAPH_MODE)
    ms.set_device("CPU")
    net, metadata = model_from_checkpoint(args.checkpoint, args.model, overrides)
    manifest = export_cascade(net, args.output_dir, file_format=args.format, metadata=metadata,
                              overwrite=args.overwrite)
    logger.info("exported %s (%d stages) to %s", metadata["model"], net.num_exits, manifest.parent)
    return 0


if __name__ == "__main__":
    run_cli(main)
