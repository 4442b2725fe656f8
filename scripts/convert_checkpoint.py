"""Convert an official PyTorch checkpoint (DVT .pth.tar, EViT/DeiT .pth) into a MindSpore .ckpt.

    python scripts/convert_checkpoint.py SRC DST --model NAME [--weights model|model_ema] [--set key=value ...]

SRC: an official .pth/.pth.tar (also DeiT/EViT training files with args, optimizer and EMA), a
.safetensors file (timm / Hugging Face hub), or a .ckpt. --weights picks the trained weights (default)
or their EMA; the log says which was taken and what else the file held. The output keeps only the
checkpoint's small metadata (epoch, flops, thresholds, args, ...; never the optimizer or the other
weights) plus the model name and overrides, is written under a temporary name and renamed into place,
and never replaces SRC.
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
    parser.add_argument("--model", required=True, help="registered model name (see dvt_ms.list_models())")
    parser.add_argument("--weights", choices=("model", "model_ema"), default="model",
                        help="which weights of a training checkpoint to convert (default: model)")
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

    from dvt_ms import create_model, list_models
    from dvt_ms.checkpoint import load_checkpoint, save_checkpoint

    ms.set_context(mode=ms.PYNATIVE_MODE)
    ms.set_device("CPU")
    if args.model not in list_models():
        raise ValueError(f"unknown model {args.model!r}; available: {', '.join(list_models())}")
    net = create_model(args.model, **overrides)
    metadata = load_checkpoint(net, args.src, weights=args.weights)
    metadata.update(model=args.model, model_overrides=overrides, converted_from=args.src.name,
                    converted_weights=args.weights)
    save_checkpoint(net, args.dst, metadata)
    params = list(net.get_parameters())
    logger.info("wrote %s: %d parameters, %d values, metadata keys: %s", args.dst, len(params),
                sum(int(p.size) for p in params), ", ".join(sorted(metadata)))
    return 0


if __name__ == "__main__":
    run_cli(main)
