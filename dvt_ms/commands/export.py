"""Export a DVT cascade as one MindIR file per stage (dynamic batch) plus a JSON manifest.

    dvt-ms export --checkpoint CKPT --export_dir DIR [--weights model|model_ema] [--format MINDIR]
                  [--config FILE.yaml] [--overwrite]
    (or python scripts/export.py ...)

The model comes from the checkpoint (a .ckpt written by this project names its model, architecture and
data config), else from --model and --model_overrides.KEY VALUE. DIR receives dvt_stage0.mindir,
dvt_stage1.mindir, ... and dvt_export.json, which lists each stage's inputs (the images and the previous
stage's reuse outputs), outputs, the data config and the preprocessing it means (the evaluation
transform of dvt_ms.data.data_config), the exit rule and the checkpoint's dynamic_threshold table if it
has one. Only MINDIR is supported. Every key is also a config-file key; see --help.
"""
import logging
from pathlib import Path

import mindspore as ms

from dvt_ms.config import COMMON, ConfigError, Schema, resolve_config
from dvt_ms.config.scripts import EXPORT
from dvt_ms.export import SUPPORTED_FORMATS, export_cascade
from dvt_ms.run import load_model
from dvt_ms.utils.cli import run_cli, setup_logging

logger = logging.getLogger("export")


def _require_dir(values, sources) -> None:
    if not values["export_dir"]:
        raise ConfigError("missing required key 'export_dir': pass --export_dir DIR")


SCHEMA = COMMON + EXPORT + Schema("export.py checks", checks=[_require_dir])


def main(argv=None) -> int:
    args = resolve_config(SCHEMA, argv, description=__doc__)
    setup_logging(args.verbose)
    if args.format.upper() not in SUPPORTED_FORMATS:
        raise ValueError(f"--format {args.format}: not supported; only MINDIR is (MindSpore 2.10 has no ONNX "
                         "converter for ops these models use, e.g. Unstack)")
    if not Path(args.checkpoint).is_file():
        raise ValueError(f"{args.checkpoint}: no such checkpoint file")

    ms.set_context(mode=ms.GRAPH_MODE)
    ms.set_device("CPU")
    loaded = load_model(args, args.checkpoint, args.sources)
    manifest = export_cascade(loaded.net, args.export_dir, file_format=args.format, metadata=loaded.metadata,
                              overwrite=args.overwrite, data_config=loaded.data_config)
    logger.info("exported %s (%d stages) to %s", loaded.name, loaded.net.num_exits, manifest.parent)
    return 0


if __name__ == "__main__":
    run_cli(main)
