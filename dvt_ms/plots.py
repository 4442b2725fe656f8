"""Figures: the accuracy/cost curve (matplotlib, optional) and PIL drawings of exits and EViT token masks.

``plot_budget_curve`` needs matplotlib, which is not a dependency of the project; without it
:class:`PlotUnavailable` is raised with the install command. Everything else uses PIL only.

EViT bookkeeping. A pruning block returns the indices of the tokens it keeps *among the image tokens it
received*. At the first pruning block those are patch positions; at later blocks they index the kept
tokens of the previous pruning block, in that block's order (most attended first), followed by its fused
token when ``fuse_token`` is on. :func:`trace_kept_patches` maps every block's indices back to patch
positions, with -1 for a kept fused token (which is not a patch).
"""
import importlib.util
import math
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = [
    "PlotUnavailable", "FUSED", "matplotlib_available", "plot_budget_curve", "trace_kept_patches",
    "kept_patch_masks", "mask_image", "exit_grid", "exit_grid_size", "evit_figure", "evit_figure_size",
    "EXIT_COLORS", "PAD", "LABEL_HEIGHT", "HEADER_HEIGHT",
]

PathLike = Union[str, Path]
#: Index that :func:`trace_kept_patches` gives a kept fused token.
FUSED = -1
#: Border/marker colour of exit k (cycled).
EXIT_COLORS = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75))
PAD = 6
LABEL_HEIGHT = 16
HEADER_HEIGHT = 22
_BORDER = 3
_BACKGROUND = (255, 255, 255)
_TEXT = (20, 20, 20)
_FUSED_GREY = 170
_FUSED_ALPHA = 0.8


class PlotUnavailable(RuntimeError):
    """matplotlib is needed for this plot but is not installed."""


# --------------------------------------------------------------------------------------------------
# accuracy / cost curve
# --------------------------------------------------------------------------------------------------
def matplotlib_available() -> bool:
    """Whether matplotlib can be imported."""
    try:
        return importlib.util.find_spec("matplotlib") is not None
    except (ImportError, ValueError):
        return False


def _figure_class():
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise PlotUnavailable("matplotlib is not installed; install it with `pip install matplotlib` "
                              "to draw plots") from None
    return Figure, FigureCanvasAgg


def plot_budget_curve(path: PathLike, curve_cost: Sequence[float], curve_accuracy: Sequence[float],
                      exit_cost: Sequence[float] = (), exit_accuracy: Sequence[float] = (),
                      exit_labels: Sequence[str] = (), xlabel: str = "GMACs per image",
                      title: Optional[str] = None, curve_label: str = "DVT, budgeted batch classification"
                      ) -> Path:
    """Accuracy (top-1 %) against cost: the early-exit curve, each exit marked and labelled.

    Uses matplotlib's Agg canvas directly (no pyplot, no global backend change). The format follows
    the suffix of ``path``. Raises :class:`PlotUnavailable` without matplotlib.
    """
    if len(curve_cost) != len(curve_accuracy) or len(exit_cost) != len(exit_accuracy):
        raise ValueError("cost and accuracy lists must have equal lengths")
    figure_cls, canvas_cls = _figure_class()
    fig = figure_cls(figsize=(6.0, 4.5), dpi=120)
    canvas_cls(fig)
    ax = fig.add_subplot(1, 1, 1)
    if len(curve_cost):
        order = np.argsort(np.asarray(curve_cost), kind="stable")
        ax.plot(np.asarray(curve_cost)[order], np.asarray(curve_accuracy)[order], "-", color="tab:blue",
                marker=".", markersize=4, linewidth=1.5, label=curve_label)
    for k, (x, y) in enumerate(zip(exit_cost, exit_accuracy)):
        color = tuple(c / 255 for c in EXIT_COLORS[k % len(EXIT_COLORS)])
        label = exit_labels[k] if k < len(exit_labels) else f"exit {k + 1}"
        ax.plot([x], [y], marker="o", markersize=8, linestyle="none", color=color, label=label, zorder=3)
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(6, -12), fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("top-1 accuracy (%)")
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(str(path))
    return path


# --------------------------------------------------------------------------------------------------
# EViT: kept token indices back to patch positions
# --------------------------------------------------------------------------------------------------
def trace_kept_patches(kept_indices: Sequence[np.ndarray], num_patches: int,
                       fuse_token: bool) -> List[np.ndarray]:
    """Map each pruning block's kept indices back to original patch positions.

    ``kept_indices[j]`` is ``[B, keep_j]`` (or ``[keep_j]``), indexing the image tokens that pruning
    block ``j`` received: patches ``0..num_patches-1`` (row-major) for ``j = 0``; afterwards the kept
    tokens of block ``j - 1`` in their order, plus its fused token (index ``keep_{j-1}``) if
    ``fuse_token``. Returns ``[B, keep_j]`` int64 arrays of patch positions, :data:`FUSED` (-1) for a
    fused token. Raises ``ValueError`` for an index out of range or repeated within a row.
    """
    if isinstance(num_patches, bool) or not isinstance(num_patches, (int, np.integer)) or num_patches < 1:
        raise ValueError(f"num_patches must be a positive integer, got {num_patches!r}")
    traced: List[np.ndarray] = []
    order: Optional[np.ndarray] = None
    for j, raw in enumerate(kept_indices):
        idx = np.asarray(raw)
        if idx.ndim == 1:
            idx = idx[None]
        if idx.ndim != 2 or not np.issubdtype(idx.dtype, np.integer):
            raise ValueError(f"kept_indices[{j}] must be an integer array [B, keep], got {idx.dtype} {idx.shape}")
        if order is None:
            order = np.tile(np.arange(num_patches, dtype=np.int64), (idx.shape[0], 1))
        if idx.shape[0] != order.shape[0]:
            raise ValueError(f"kept_indices[{j}] has batch size {idx.shape[0]}, expected {order.shape[0]}")
        available = order.shape[1]
        if idx.size and (idx.min() < 0 or idx.max() >= available):
            raise ValueError(f"kept_indices[{j}] holds index {int(idx.max() if idx.max() >= available else idx.min())} "
                             f"but that block received only {available} image tokens")
        sorted_idx = np.sort(idx, axis=1)
        if idx.shape[1] > 1 and (sorted_idx[:, 1:] == sorted_idx[:, :-1]).any():
            raise ValueError(f"kept_indices[{j}] repeats an index within a row")
        mapped = np.take_along_axis(order, idx.astype(np.int64), axis=1)
        traced.append(mapped)
        order = mapped
        if fuse_token:
            order = np.concatenate([order, np.full((order.shape[0], 1), FUSED, dtype=np.int64)], axis=1)
    return traced


def kept_patch_masks(traced: Sequence[np.ndarray], num_patches: int) -> List[np.ndarray]:
    """Boolean ``[B, num_patches]`` per pruning block: which patches still have their own token."""
    masks = []
    for mapped in traced:
        mask = np.zeros((mapped.shape[0], num_patches), dtype=bool)
        rows, cols = np.nonzero(mapped >= 0)
        mask[rows, mapped[rows, cols]] = True
        masks.append(mask)
    return masks


def mask_image(image: np.ndarray, mask: np.ndarray, grid_size: int, fused: bool) -> np.ndarray:
    """Grey out (``fused``: washed-out grey) or blank (white) the patches where ``mask`` is False.

    ``image`` is ``uint8 [H, W, 3]`` covering ``grid_size x grid_size`` patches of ``H / grid_size``
    pixels (row-major, as the tokenizer cuts them); ``mask`` is ``[grid_size ** 2]``.
    """
    h, w = image.shape[:2]
    if mask.shape != (grid_size * grid_size,):
        raise ValueError(f"mask has shape {mask.shape}, expected ({grid_size * grid_size},)")
    ph, pw = h // grid_size, w // grid_size
    if ph < 1 or pw < 1:
        raise ValueError(f"image {h}x{w} is smaller than the {grid_size}x{grid_size} patch grid")
    pixel_mask = np.repeat(np.repeat(mask.reshape(grid_size, grid_size), ph, axis=0), pw, axis=1)
    full = np.ones((h, w), dtype=bool)  # pixels beyond the patch grid are left as they are
    full[:pixel_mask.shape[0], :pixel_mask.shape[1]] = pixel_mask
    out = image.astype(np.float32)
    if fused:
        out[~full] = out[~full] * (1 - _FUSED_ALPHA) + _FUSED_GREY * _FUSED_ALPHA
    else:
        out[~full] = 255
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------------------------------
# PIL drawings
# --------------------------------------------------------------------------------------------------
def _font():
    return ImageFont.load_default()


def _fit_text(draw: ImageDraw.ImageDraw, text: str, width: int, font) -> str:
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text + "..."


def exit_grid_size(num_images: int, columns: int, thumb_size: int) -> Tuple[int, int]:
    """``(width, height)`` in pixels of :func:`exit_grid`'s image."""
    columns = max(1, min(columns, num_images))
    rows = math.ceil(num_images / columns)
    return (PAD + columns * (thumb_size + PAD),
            HEADER_HEIGHT + rows * (thumb_size + LABEL_HEIGHT + PAD) + PAD)


def exit_grid(images: Sequence[np.ndarray], exits: Sequence[int], confidences: Sequence[float],
              exit_labels: Sequence[str], captions: Optional[Sequence[str]] = None, columns: int = 8,
              thumb_size: int = 112) -> Image.Image:
    """Thumbnails grouped by the exit each image takes, each framed in its exit's colour.

    Images are ordered by exit, then by confidence (highest first). Each label reads
    ``e<exit> <confidence>`` plus its caption (e.g. the predicted class); the header is a legend with
    the number of images per exit. ``exits`` are 0-based; -1 (no exit accepted) is drawn in grey.
    """
    n = len(images)
    if not n:
        raise ValueError("no images to draw")
    if not (len(exits) == len(confidences) == n) or (captions is not None and len(captions) != n):
        raise ValueError("images, exits, confidences and captions must have equal lengths")
    if columns < 1 or thumb_size < 8:
        raise ValueError(f"columns must be >= 1 and thumb_size >= 8, got {columns}, {thumb_size}")
    width, height = exit_grid_size(n, columns, thumb_size)
    columns = max(1, min(columns, n))
    canvas = Image.new("RGB", (width, height), _BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    font = _font()

    def color(k: int) -> Tuple[int, int, int]:
        return (128, 128, 128) if k < 0 else EXIT_COLORS[k % len(EXIT_COLORS)]

    x = PAD
    for k, label in enumerate(exit_labels):
        count = sum(1 for e in exits if e == k)
        draw.rectangle([x, 5, x + 11, 16], fill=color(k))
        text = f"{label}: {count}"
        draw.text((x + 15, 5), text, fill=_TEXT, font=font)
        x += 15 + int(draw.textlength(text, font=font)) + 12
    order = sorted(range(n), key=lambda i: (exits[i] if exits[i] >= 0 else len(exit_labels), -confidences[i], i))
    inner = thumb_size - 2 * _BORDER
    for slot, i in enumerate(order):
        row, col = divmod(slot, columns)
        left = PAD + col * (thumb_size + PAD)
        top = HEADER_HEIGHT + row * (thumb_size + LABEL_HEIGHT + PAD)
        draw.rectangle([left, top, left + thumb_size - 1, top + thumb_size - 1], fill=color(exits[i]))
        thumb = Image.fromarray(np.asarray(images[i], dtype=np.uint8)).resize((inner, inner), Image.BICUBIC)
        canvas.paste(thumb, (left + _BORDER, top + _BORDER))
        name = "none" if exits[i] < 0 else str(exits[i] + 1)
        text = f"e{name} {confidences[i]:.2f}" + (f" {captions[i]}" if captions is not None else "")
        draw.text((left, top + thumb_size + 2), _fit_text(draw, text, thumb_size, font), fill=_TEXT, font=font)
    return canvas


def evit_figure_size(num_images: int, num_blocks: int, panel_size: int) -> Tuple[int, int]:
    """``(width, height)`` in pixels of :func:`evit_figure`'s image."""
    return (PAD + (num_blocks + 1) * (panel_size + PAD),
            HEADER_HEIGHT + num_images * (panel_size + PAD) + PAD)


def evit_figure(images: Sequence[np.ndarray], masks: Sequence[np.ndarray], grid_size: int,
                block_names: Sequence[str], fused: bool, panel_size: int = 160) -> Image.Image:
    """One row per image: the input, then its kept patches after each pruning block.

    ``masks[j]`` is ``[B, grid_size ** 2]`` (from :func:`kept_patch_masks`); patches without their own
    token are washed out in grey when they were fused into the extra token, blanked otherwise.
    """
    n = len(images)
    if not n:
        raise ValueError("no images to draw")
    if len(masks) != len(block_names):
        raise ValueError(f"{len(masks)} masks for {len(block_names)} block names")
    width, height = evit_figure_size(n, len(masks), panel_size)
    canvas = Image.new("RGB", (width, height), _BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    font = _font()
    titles = ["input"] + [f"{name}: {int(m[0].sum())} kept" + (" + fused" if fused else "")
                          for name, m in zip(block_names, masks)]
    for c, title in enumerate(titles):
        left = PAD + c * (panel_size + PAD)
        draw.text((left, 5), _fit_text(draw, title, panel_size, font), fill=_TEXT, font=font)
    for r, image in enumerate(images):
        top = HEADER_HEIGHT + r * (panel_size + PAD)
        panels = [np.asarray(image, dtype=np.uint8)]
        panels += [mask_image(panels[0], m[r], grid_size, fused) for m in masks]
        for c, panel in enumerate(panels):
            left = PAD + c * (panel_size + PAD)
            canvas.paste(Image.fromarray(panel).resize((panel_size, panel_size), Image.BICUBIC), (left, top))
    return canvas

