"""Draw what adaptive-token models do with individual images (PNG, PIL only).

    dvt-ms visualize exits --config configs/dvt_deit_small.yaml --checkpoint CKPT \\
        --images DIR --output exits.png (--budget_step P | --thresholds a,b,c) [--max_images 32]
    dvt-ms visualize evit --config configs/evit_deit_small.yaml --checkpoint CKPT \\
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

os.environ.setdefault("GLOG_v", "3")  # hide MindSpore's C++ plug-in warnings

import mindspore as ms
import numpy as np

from dvt_ms.budget import LAST_THRESHOLD, exit_assignment
from dvt_ms.config import COMMON, ConfigError, Schema, resolve_config
from dvt_ms.config.scripts import EVIT, EXITS, VISUALIZE, parse_threshold_list
from dvt_ms.data import IMAGE_EXTENSIONS, denormalize, load_image
from dvt_ms.evaluate import exit_logits, pad_batch, softmax, stored_thresholds
from dvt_ms.models import exit_names, model_family, num_exits
from dvt_ms.plots import evit_figure, exit_grid, kept_patch_masks, trace_kept_patches
from dvt_ms.run import configure_device, load_model
from dvt_ms.utils.cli import run_cli, setup_logging

logger = logging.getLogger("visualize")
MODES = ("exits", "evit")


def _one_threshold_source(values, sources) -> None:
    if (values["budget_step"] is None) == (values["thresholds"] is None):
        raise ConfigError("pass exactly one of --budget_step P (a row of the checkpoint's dynamic_threshold) "
                          "and --thresholds a,b,c")


def _require_images(values, sources) -> None:
    for key in ("images", "output"):
        if not values[key]:
            raise ConfigError(f"missing required key {key!r}: pass --{key}")


_CHECKS = Schema("visualize.py checks", checks=[_require_images])
SCHEMAS = {"exits": COMMON + VISUALIZE + EXITS + _CHECKS + Schema("exits checks", checks=[_one_threshold_source]),
           "evit": COMMON + VISUALIZE + EVIT + _CHECKS}


def _image_files(source: Path, limit: int) -> list:
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


def _load_batch(files, config, data_config):
    """Preprocessed ``[B, 3, H, W]`` batch of the readable files, the crops as RGB, and their names."""
    arrays, names = [], []
    for path in files:
        try:
            arrays.append(load_image(path, data_config))
        except OSError as exc:
            logger.warning("skipping %s", exc)
            continue
        names.append(path.name)
    if not arrays:
        raise ValueError(f"{config.images}: none of the {len(files)} image(s) could be read")
    batch = np.stack(arrays)
    return batch, [denormalize(a, data_config) for a in batch], names


def _run_batches(net, batch, batch_size: int, call):
    outputs = []
    for start in range(0, batch.shape[0], batch_size):
        chunk, count = pad_batch(batch[start:start + batch_size], batch_size)
        outputs.append([o[:count] for o in call(net, chunk)])
    return [np.concatenate(parts) for parts in zip(*outputs)]


def _exits(config, loaded) -> None:
    net, metadata, model = loaded.net, loaded.metadata, loaded.name
    n_exits = num_exits(net)
    if n_exits < 2:
        raise ValueError(f"exits mode needs a multi-exit (DVT) model; {model} has one exit")
    if config.thresholds is not None:
        thresholds = parse_threshold_list(config.thresholds)
        if len(thresholds) == n_exits - 1:
            thresholds.append(float(LAST_THRESHOLD))
        if len(thresholds) != n_exits:
            raise ValueError(f"--thresholds has {len(thresholds)} values; {model} has {n_exits} exits "
                             f"(give {n_exits} or {n_exits - 1})")
        thresholds = np.asarray(thresholds, dtype=np.float32)
        source = f"thresholds {config.thresholds}"
    else:
        thresholds = stored_thresholds(metadata, config.checkpoint, n_exits)[config.budget_step - 1]
        source = f"dynamic_threshold row p={config.budget_step}"
    files = _image_files(Path(config.images), config.max_images)
    batch, crops, _ = _load_batch(files, config, loaded.data_config)
    logits = _run_batches(net, batch, config.batch_size, exit_logits)
    probs = np.stack([softmax(x) for x in logits])
    exits = exit_assignment(probs, thresholds)
    rows = np.arange(probs.shape[1])
    taken = np.where(exits >= 0, exits, n_exits - 1)
    confidence = probs[taken, rows].max(axis=1)
    predicted = probs[taken, rows].argmax(axis=1)
    names = [f"exit {k + 1} ({t})" for k, t in enumerate(exit_names(net))]
    classes = loaded.data_config.class_names
    grid = exit_grid(crops, exits.tolist(), confidence.tolist(), names,
                     captions=[classes[int(c)] if classes else f"c{int(c)}" for c in predicted], columns=config.columns,
                     thumb_size=config.thumb_size)
    Path(config.output).parent.mkdir(parents=True, exist_ok=True)
    grid.save(config.output)
    counts = np.bincount(exits[exits >= 0], minlength=n_exits)
    logger.info("%s with %s: images per exit %s%s", model, source, counts.tolist(),
                f", {int((exits < 0).sum())} accepted by no exit" if (exits < 0).any() else "")


def _evit(config, loaded) -> None:
    net, model = loaded.net, loaded.name
    if model_family(model) != "evit":
        raise ValueError(f"evit mode needs an EViT model, {model} is a {model_family(model)} model")
    spec = net.spec
    image_tokens = spec.num_tokens(0) - 1
    before = [spec.num_tokens(0)] + spec.block_tokens(0)[:-1]
    pruning_blocks = [i for i, (a, b) in enumerate(zip(before, spec.block_tokens(0))) if b < a]
    if not pruning_blocks:
        raise ValueError(f"{model}: no block prunes tokens with these keep rates")
    fused = bool(spec.stages[0].fuse_token)
    files = _image_files(Path(config.images), config.max_images)
    batch, crops, _ = _load_batch(files, config, loaded.data_config)

    def call(model, chunk):
        _, kept = model(ms.Tensor(chunk), None, True)
        return [k.asnumpy() for k in kept]

    kept = _run_batches(net, batch, config.batch_size, call)
    if len(kept) != len(pruning_blocks):
        raise RuntimeError(f"the model returned {len(kept)} kept-index arrays for {len(pruning_blocks)} "
                           "pruning blocks")
    traced = trace_kept_patches(kept, image_tokens, fused)
    masks = kept_patch_masks(traced, image_tokens)
    figure = evit_figure(crops, masks, net.grid_size, [f"block {i + 1}" for i in pruning_blocks], fused,
                         panel_size=config.panel_size)
    Path(config.output).parent.mkdir(parents=True, exist_ok=True)
    figure.save(config.output)
    fused_kept = [int((t < 0).any(axis=1).sum()) for t in traced[1:]]
    logger.info("%s: %d image(s), pruning after blocks %s, kept %s patch tokens%s", model,
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

    configure_device(config.device_target, config.ms_mode, config.cpu_kernels)
    loaded = load_model(config, config.checkpoint, config.sources)
    if mode == "exits":
        _exits(config, loaded)
    else:
        _evit(config, loaded)
    logger.info("wrote %s", config.output)
    return 0


if __name__ == "__main__":
    run_cli(main)
