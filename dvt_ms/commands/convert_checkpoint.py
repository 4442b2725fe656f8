"""Convert an official PyTorch checkpoint (DVT .pth.tar, EViT/DeiT .pth) into a MindSpore .ckpt.

    dvt-ms convert SRC DST --model NAME [--model_overrides.KEY VALUE ...] [--config FILE.yaml]
                   [--crop_pct 0.875 --interpolation bicubic ...] [--overwrite]
    (or python scripts/convert_checkpoint.py ...)

The output keeps the checkpoint's metadata (flops, thresholds, ...) plus the model name, its overrides
and its data config (the model's evaluation preprocessing, changed by the config's crop_pct,
interpolation, mean and std), is written under a temporary name and renamed into place, and never
replaces SRC. Every key is also a config-file key; see --help.
"""
import logging
from pathlib import Path

from dvt_ms.config import COMMON, ConfigError, Schema, require_model, resolve_config
from dvt_ms.script_config import CONVERT
from dvt_ms.utils.cli import run_cli, setup_logging

logger = logging.getLogger("convert_checkpoint")


def _require_files(values, sources) -> None:
    missing = [k.upper() for k in ("src", "dst") if not values[k]]
    if missing:
        raise ConfigError(f"missing {' and '.join(missing)}: dvt-ms convert SRC DST --model NAME")


SCHEMA = COMMON + CONVERT + Schema("convert checks", checks=[_require_files, require_model])


def main(argv=None) -> int:
    args = resolve_config(SCHEMA, argv, description=__doc__)
    setup_logging(args.verbose)
    src, dst = Path(args.src), Path(args.dst)
    if not src.is_file():
        raise ValueError(f"{src}: no such file")
    if dst.suffix != ".ckpt":
        raise ValueError(f"{dst}: the output must end in .ckpt")
    if dst.exists():
        if dst.resolve() == src.resolve():
            raise ValueError(f"{dst}: refusing to overwrite the input checkpoint")
        if not args.overwrite:
            raise ValueError(f"{dst}: already exists (pass --overwrite to replace it)")

    import mindspore as ms

    from dvt_ms import create_model
    from dvt_ms.checkpoint import load_checkpoint, save_checkpoint
    from dvt_ms.data import resolve_data_config
    from dvt_ms.model_config import log_model, parameter_count

    ms.set_context(mode=ms.PYNATIVE_MODE)
    ms.set_device("CPU")
    overrides = dict(args.model_overrides)
    net = create_model(args.model, **overrides)
    log_model(args.model, overrides, net)
    metadata = load_checkpoint(net, src)
    data_config = resolve_data_config(args.model, net, config=args)
    metadata.update(model=args.model, model_overrides=overrides, converted_from=src.name,
                    data_config=data_config.to_dict())
    save_checkpoint(net, dst, metadata)
    logger.info("wrote %s: %d parameters, %d values, metadata keys: %s", dst, len(list(net.get_parameters())),
                parameter_count(net), ", ".join(sorted(metadata)))
    return 0


if __name__ == "__main__":
    run_cli(main)
