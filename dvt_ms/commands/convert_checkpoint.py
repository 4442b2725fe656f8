"""Convert an official checkpoint (PyTorch DVT .pth.tar, EViT/DeiT .pth, timm .safetensors, MindSpore DVT
.ckpt) into a .ckpt of this project.

    dvt-ms convert SRC DST [--model NAME] [--weights model|model_ema] [--model_overrides.KEY VALUE ...]
                   [--config FILE.yaml]
                   [--crop_pct 0.875 --interpolation bicubic ...] [--overwrite]
    (or python scripts/convert_checkpoint.py ...)

The output keeps the checkpoint's metadata (flops, thresholds, ...) plus the model name, its overrides
and its data config (the model's evaluation preprocessing, changed by the config's crop_pct,
interpolation, mean and std), is written under a temporary name and renamed into place, and never
replaces SRC. --weights picks a training file's trained weights (default) or their EMA; the log says which
was taken and what else the file held, and only small metadata is kept (never the optimizer or the other
weights, nor a training checkpoint's epoch and optimizer bookkeeping, so the output is a weights file).
--model may be left out for files that name their model, and for official MindSpore DVT files, which are
recognised from their keys (the log says which model was chosen). Every key is also a config-file key; see
--help.
"""
import logging
from pathlib import Path

import mindspore as ms

from dvt_ms.checkpoint import save_checkpoint
from dvt_ms.config import COMMON, ConfigError, Schema, resolve_config
from dvt_ms.config.scripts import CONVERT
from dvt_ms.run import load_model, parameter_count
from dvt_ms.train.checkpoints import FORMAT, TRAINING_STATE_KEYS
from dvt_ms.utils.cli import run_cli, setup_logging

logger = logging.getLogger("convert_checkpoint")


def _require_files(values, sources) -> None:
    missing = [k.upper() for k in ("src", "dst") if not values[k]]
    if missing:
        raise ConfigError(f"missing {' and '.join(missing)}: dvt-ms convert SRC DST [--model NAME]")


SCHEMA = COMMON + CONVERT + Schema("convert checks", checks=[_require_files])


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

    ms.set_context(mode=ms.PYNATIVE_MODE)
    ms.set_device("CPU")
    loaded = load_model({**args, "cpu_kernels": "off"}, src, args.sources)  # never run here
    net = loaded.net
    metadata = dict(loaded.metadata)
    if metadata.get("format") == FORMAT:  # a run's own checkpoint: its bookkeeping would make it look resumable
        metadata = {k: v for k, v in metadata.items() if k not in TRAINING_STATE_KEYS}
    metadata.update(converted_from=src.name, converted_weights=args.weights, data_config=loaded.data_config.to_dict())
    save_checkpoint(net, dst, metadata)
    logger.info("wrote %s: %d parameters, %d values, metadata keys: %s", dst, len(list(net.get_parameters())),
                parameter_count(net), ", ".join(sorted(metadata)))
    return 0


if __name__ == "__main__":
    run_cli(main)
