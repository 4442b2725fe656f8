"""Draw what adaptive-token models do with individual images (PNG, PIL only).

    python scripts/visualize.py exits --config configs/dvt_deit_small.yaml --checkpoint CKPT \\
        --images DIR --output exits.png (--budget_step P | --thresholds a,b,c) [--max_images 32]
    python scripts/visualize.py evit --config configs/evit_deit_small.yaml --checkpoint CKPT \\
        --images DIR --output evit.png [--max_images 8]

exits: a DVT cascade with early-exit thresholds (row P of the checkpoint's dynamic_threshold, or given
       explicitly); a grid of thumbnails grouped and coloured by the exit each image takes, labelled
       with the exit, the confidence there and the predicted class.
evit:  an EViT model; per image, the input and the patches that keep their own token after each
       pruning block. Fused patches (merged into the extra token) are washed out in grey; without
       token fusion, dropped patches are blanked.

The images are preprocessed as in evaluation (resize, center crop); the pictures show the crop the
model saw. --images is a folder (searched recursively, sorted) or one image file.
"""
import logging
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("GLOG_v", "3")  # hide MindSpore's C++ plug-in warnings

from dvt_ms.config import COMMON, ConfigError, Option, Schema, non_empty, positive, resolve_config  # noqa: E402
from dvt_ms.utils.cli import run_cli, setup_logging  # noqa: E402

logger = logging.getLogger("visualize")
MODES = ("exits", "evit")


def _png(path: str) -> None:
    if Path(path).suffix.lower() != ".png":
        raise ValueError(f"{path!r}: the output must end in .png")


def _budget_step(step) -> None:
    if step is not None and not 1 <= step <= 59:
        raise ValueError(f"must be a budget step in 1..59, got {step}")


def _threshold_list(text) -> None:
    if text is not None:
        _parse_thresholds(text)


def _parse_thresholds(text: str) -> list:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise ValueError(f"expected comma-separated numbers, got {text!r}") from None
    if any(v != v for v in values):
        raise ValueError(f"thresholds must not be NaN: {text!r}")
    return values


def _require(values, sources) -> None:
    if not values["checkpoint"]:
        raise ConfigError("missing required key 'checkpoint': pass --checkpoint PATH")


def _one_threshold_source(values, sources) -> None:
    if (values["budget_step"] is None) == (values["thresholds"] is None):
        raise ConfigError("pass exactly one of --budget_step P (a row of the checkpoint's dynamic_threshold) "
                          "and --thresholds a,b,c")


VISUALIZE = Schema("visualization", [
    Option("checkpoint", str, nullable=True, validator=non_empty, help="checkpoint (.pth/.pth.tar/.ckpt)"),
    Option("images", str, required=True, validator=non_empty, help="image folder (recursive) or one image"),
    Option("output", str, required=True, validator=_png, help="PNG file to write"),
    Option("max_images", int, default=32, validator=positive, help="draw at most this many images"),
], checks=[_require])
EXITS = Schema("exits", [
    Option("budget_step", int, nullable=True, validator=_budget_step,
           help="use row P (1..59) of the checkpoint's dynamic_threshold"),
    Option("thresholds", str, nullable=True, validator=_threshold_list,
           help="comma-separated confidence thresholds, one per exit (or one fewer: the last exit takes "
                "everything left)"),
    Option("columns", int, default=8, validator=positive, help="thumbnails per row"),
    Option("thumb_size", int, default=112, validator=positive, help="thumbnail size in pixels"),
], checks=[_one_threshold_source])
EVIT = Schema("evit", [
    Option("panel_size", int, default=160, validator=positive, help="size of each panel in pixels"),
])
SCHEMAS = {"exits": COMMON + VISUALIZE + EXITS, "evit": COMMON + VISUALIZE + EVIT}


def _image_files(source: Path, limit: int) -> list:
    from dvt_ms.data import IMAGE_EXTENSIONS

    if source.is_file():
        return [source]
    if not source.is_dir():
        raise ValueError(f"{source}: no such image folder or file")
    files = sorted(p for p in source.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    if not files:
        raise ValueError(f"{source}: no images ({'/'.join(IMAGE_EXTENSIONS)}) found")
    if len(files) > limit:
        logger.info("%s: drawing the first %d of %d images (--max_images)", source, limit, len(files))
    return files[:limit]


def _load_batch(files, config, image_size: int):
    """Preprocessed ``[B, 3, H, W]`` batch of the readable files, the crops as RGB, and their names."""
    import numpy as np

    from dvt_ms.data import DatasetError, denormalize, eval_transforms, load_image

    ops = eval_transforms(image_size, config.crop_pct, config.interpolation)
    arrays, names = [], []
    for path in files:
        try:
            image = load_image(path)
        except DatasetError as exc:
            logger.warning("skipping %s", exc)
            continue
        for op in ops:
            image = op(image)
        arrays.append(np.asarray(image, dtype=np.float32))
        names.append(path.name)
    if not arrays:
        raise ValueError(f"{config.images}: none of the {len(files)} image(s) could be read")
    batch = np.stack(arrays)
    return batch, [denormalize(a) for a in batch], names


def _run_batches(net, batch, batch_size: int, call):
    import numpy as np

    from dvt_ms.evaluate import pad_batch

    outputs = []
    for start in range(0, batch.shape[0], batch_size):
        chunk, count = pad_batch(batch[start:start + batch_size], batch_size)
        outputs.append([o[:count] for o in call(net, chunk)])
    return [np.concatenate(parts) for parts in zip(*outputs)]


def _exits(config, net, metadata) -> None:
    import numpy as np

    from dvt_ms.budget import LAST_THRESHOLD, exit_assignment
    from dvt_ms.evaluate import (exit_logits, exit_names, model_image_size, num_exits, softmax,
                                 stored_thresholds)
    from dvt_ms.plots import exit_grid

    n_exits = num_exits(net)
    if n_exits < 2:
        raise ValueError(f"exits mode needs a multi-exit (DVT) model; {config.model} has one exit")
    if config.thresholds is not None:
        thresholds = _parse_thresholds(config.thresholds)
        if len(thresholds) == n_exits - 1:
            thresholds.append(float(LAST_THRESHOLD))
        if len(thresholds) != n_exits:
            raise ValueError(f"--thresholds has {len(thresholds)} values; {config.model} has {n_exits} exits "
                             f"(give {n_exits} or {n_exits - 1})")
        thresholds = np.asarray(thresholds, dtype=np.float32)
        source = f"thresholds {config.thresholds}"
    else:
        thresholds = stored_thresholds(metadata, config.checkpoint, n_exits)[config.budget_step - 1]
        source = f"dynamic_threshold row p={config.budget_step}"
    files = _image_files(Path(config.images), config.max_images)
    batch, crops, _ = _load_batch(files, config, model_image_size(net))
    logits = _run_batches(net, batch, config.batch_size, exit_logits)
    probs = np.stack([softmax(x) for x in logits])
    exits = exit_assignment(probs, thresholds)
    rows = np.arange(probs.shape[1])
    taken = np.where(exits >= 0, exits, n_exits - 1)
    confidence = probs[taken, rows].max(axis=1)
    predicted = probs[taken, rows].argmax(axis=1)
    names = [f"exit {k + 1} ({t})" for k, t in enumerate(exit_names(net))]
    grid = exit_grid(crops, exits.tolist(), confidence.tolist(), names,
                     captions=[f"c{int(c)}" for c in predicted], columns=config.columns,
                     thumb_size=config.thumb_size)
    Path(config.output).parent.mkdir(parents=True, exist_ok=True)
    grid.save(config.output)
    counts = np.bincount(exits[exits >= 0], minlength=n_exits)
    logger.info("%s with %s: images per exit %s%s", config.model, source, counts.tolist(),
                f", {int((exits < 0).sum())} accepted by no exit" if (exits < 0).any() else "")


def _evit(config, net) -> None:
    import mindspore as ms

    from dvt_ms.evaluate import model_image_size
    from dvt_ms.layers.token_reorganization import resolve_keep_count
    from dvt_ms.models import model_family
    from dvt_ms.plots import evit_figure, kept_patch_masks, trace_kept_patches

    if model_family(config.model) != "evit":
        raise ValueError(f"evit mode needs an EViT model, {config.model} is a {model_family(config.model)} model")
    tokens = net.grid_size ** 2
    pruning_blocks = []
    for i, block in enumerate(net.blocks):
        keep = resolve_keep_count(block.keep_rate, None, tokens)
        if keep > 0:
            pruning_blocks.append(i)
            tokens = keep + int(block.fuse_token)
    if not pruning_blocks:
        raise ValueError(f"{config.model}: no block prunes tokens with these keep rates")
    fused = bool(net.blocks[pruning_blocks[0]].fuse_token)
    files = _image_files(Path(config.images), config.max_images)
    batch, crops, _ = _load_batch(files, config, model_image_size(net))

    def call(model, chunk):
        _, kept = model(ms.Tensor(chunk), None, True)
        return [k.asnumpy() for k in kept]

    kept = _run_batches(net, batch, config.batch_size, call)
    if len(kept) != len(pruning_blocks):
        raise RuntimeError(f"the model returned {len(kept)} kept-index arrays for {len(pruning_blocks)} "
                           "pruning blocks")
    traced = trace_kept_patches(kept, net.grid_size ** 2, fused)
    masks = kept_patch_masks(traced, net.grid_size ** 2)
    figure = evit_figure(crops, masks, net.grid_size, [f"block {i + 1}" for i in pruning_blocks], fused,
                         panel_size=config.panel_size)
    Path(config.output).parent.mkdir(parents=True, exist_ok=True)
    figure.save(config.output)
    fused_kept = [int((t < 0).any(axis=1).sum()) for t in traced[1:]]
    logger.info("%s: %d image(s), pruning after blocks %s, kept %s patch tokens%s", config.model,
                len(crops), [i + 1 for i in pruning_blocks], [int(m[0].sum()) for m in masks],
                f"; the fused token was kept again in {fused_kept} image(s) per later block" if fused else "")


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in MODES:
        if argv and argv[0] in ("-h", "--help"):
            print(__doc__)
            return 0
        raise ValueError(f"the first argument must be the mode, one of {', '.join(MODES)} "
                         f"(got {argv[0] if argv else 'nothing'!r}); see --help")
    mode = argv.pop(0)
    config = resolve_config(SCHEMAS[mode], argv, description=__doc__)
    setup_logging(config.verbose)

    from dvt_ms.evaluate import build_model
    from dvt_ms.utils.device import configure_device

    device = configure_device(config.device_target, config.ms_mode, config.cpu_kernels)
    if device != config.device_target:
        logger.warning("running on %s instead of the requested %s", device, config.device_target)
    net, metadata = build_model(config.model, config.model_overrides, config.checkpoint, config.cpu_kernels)
    if mode == "exits":
        _exits(config, net, metadata)
    else:
        _evit(config, net)
    logger.info("wrote %s", config.output)
    return 0


if __name__ == "__main__":
    run_cli(main)
