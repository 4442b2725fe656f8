"""Convert an official PyTorch checkpoint (DVT .pth.tar, EViT/DeiT .pth) into a MindSpore .ckpt.

    python scripts/convert_checkpoint.py SRC DST --model NAME [--set key=value ...]

The output keeps the checkpoint's metadata (flops, thresholds, ...) plus the model name and overrides,
is written under a temporary name and renamed into place, and never replaces SRC.
"""
import argparse
import logging
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("GLOG_v", "3")  # hide MindSpore's C++ plug-in warnings

from dvt_ms.utils.cli import add_override_argument, parse_overrides, run_cli, setup_logging  # noqa: E402

logger = logging.getLogger("convert_checkpoint")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src", type=Path, help="official PyTorch checkpoint (.pth / .pth.tar) or .ckpt")
    parser.add_argument("dst", type=Path, help="MindSpore checkpoint to write (.ckpt)")
    parser.add_argument("--model", default=None,
                        help="registered model name (see dvt_ms.list_models()); optional for files that name "
                             "their model or are recognised from their keys (official MindSpore DVT .ckpt)")
    add_override_argument(parser)
    parser.add_argument("--overwrite", action="store_true", help="replace DST if it already exists")
    parser.add_argument("--verbose", action="store_true")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    setup_logging(args.verbose)
    if not args.src.is_file():
        raise ValueError(f"{args.src}: no such file")
    if args.dst.suffix != ".ckpt":
        raise ValueError(f"{args.dst}: the output must end in .ckpt")
    if args.dst.exists():
        if args.dst.resolve() == args.src.resolve():
            raise ValueError(f"{args.dst}: refusing to overwrite the input checkpoint")
        if not args.overwrite:
            raise ValueError(f"{args.dst}: already exists (pass --overwrite to replace it)")
    overrides = parse_overrides(args.overrides)

    import mindspore as ms

    from dvt_ms.checkpoint import save_checkpoint
    from dvt_ms.infer import model_from_checkpoint

    ms.set_context(mode=ms.PYNATIVE_MODE)
    ms.set_device("CPU")
    net, metadata = model_from_checkpoint(args.src, args.model, overrides, cpu_kernels="off")  # never run here
    metadata.update(converted_from=args.src.name)
    save_checkpoint(net, args.dst, metadata)
    params = list(net.get_parameters())
    logger.info("wrote %s: %d parameters, %d values, metadata keys: %s", args.dst, len(params),
                sum(int(p.size) for p in params), ", ".join(sorted(metadata)))
    return 0


if __name__ == "__main__":
    run_cli(main)
