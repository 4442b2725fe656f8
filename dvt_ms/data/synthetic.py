"""Synthetic "shapes" ImageFolder for the quickstart: real PNG files, easy and hard images, made in seconds.

Layout: ``ROOT/train/<shape>/<shape>_NNNN.png``, ``ROOT/val/<shape>/...`` and ``ROOT/manifest.json``.
Classes are the first ``num_classes`` of :data:`SHAPES`; the manifest lists them sorted, as ImageFolder
readers number them, and gives every image that label. Each image is easy or hard, so that an early exit
(coarse 7x7 tokens) has something to get right and something to leave to the later ones:

* easy: one large shape (radius 26-36 % of the side, near the centre, small rotation), bright on a dark
  flat background (contrast about 0.5-0.7 of the grey range), no noise;
* hard: one small shape (radius 8-12 %, anywhere inside the central 86 %, any rotation) only 7-16 % of
  the grey range brighter than a mid-grey shaded background, with Gaussian noise (std 14-24) and 6-12
  lines and dots a little darker or brighter than the background, some drawn over the shape.

The shape is always the brighter side, so that a small model does not also have to learn both
polarities in a few epochs.

Everything follows from ``seed``: each image has its own generator keyed by (seed, split, class, index),
so the files are byte-identical between runs. The manifest records the parameters and, per image, its
difficulty, drawn shape area (fraction of the image), contrast, noise, clutter and byte count. A folder
whose manifest matches the request and whose files are all there is reused as it is; the data are
written to a hidden temporary folder next to ``ROOT`` and renamed into place only when complete.
"""
import json
import logging
import math
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np
from PIL import Image, ImageDraw

logger = logging.getLogger(__name__)

__all__ = ["SHAPES", "MANIFEST_NAME", "ShapesDataset", "make_shapes_dataset", "load_manifest",
           "render_shape_image"]

PathLike = Union[str, os.PathLike]
SHAPES = ("circle", "square", "triangle", "cross", "star", "ring", "hexagon")
SPLITS = ("train", "val")
MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1
_SUPERSAMPLE = 4


@dataclass(frozen=True)
class ShapesDataset:
    """A generated shapes folder: its root, manifest, and whether this call wrote it."""

    root: Path
    manifest: Dict[str, Any]
    created: bool

    @property
    def classes(self) -> List[str]:
        """Class names in label order (sorted, as ImageFolder readers number them)."""
        return list(self.manifest["classes"])

    def images(self, split: Optional[str] = None, difficulty: Optional[str] = None) -> List[Dict[str, Any]]:
        """Manifest entries, optionally of one split and/or difficulty (``"easy"`` / ``"hard"``)."""
        return [e for e in self.manifest["images"] if (split is None or e["split"] == split)
                and (difficulty is None or e["difficulty"] == difficulty)]


def _polygon(shape: str, cx: float, cy: float, r: float, angle: float) -> List[Tuple[float, float]]:
    """Vertices of a polygonal shape of circumradius ``r`` turned by ``angle`` radians."""
    if shape == "square":
        local = [(r * math.cos(a), r * math.sin(a)) for a in np.arange(4) * math.pi / 2 + math.pi / 4]
    elif shape == "triangle":
        local = [(r * math.cos(a), r * math.sin(a)) for a in np.arange(3) * 2 * math.pi / 3 - math.pi / 2]
    elif shape == "hexagon":
        local = [(r * math.cos(a), r * math.sin(a)) for a in np.arange(6) * math.pi / 3]
    elif shape == "star":
        local = [((r if k % 2 == 0 else 0.45 * r) * math.cos(a), (r if k % 2 == 0 else 0.45 * r) * math.sin(a))
                 for k, a in enumerate(np.arange(10) * math.pi / 5 - math.pi / 2)]
    elif shape == "cross":
        w = 0.3 * r
        local = [(w, r), (w, w), (r, w), (r, -w), (w, -w), (w, -r), (-w, -r), (-w, -w), (-r, -w), (-r, w),
                 (-w, w), (-w, r)]
    else:
        raise ValueError(f"{shape!r} is not a polygon")
    cos, sin = math.cos(angle), math.sin(angle)
    return [(cx + x * cos - y * sin, cy + x * sin + y * cos) for x, y in local]


def _shape_mask(shape: str, size: int, cx: float, cy: float, r: float, angle: float) -> np.ndarray:
    """Anti-aliased coverage ``float32 [size, size]`` in [0, 1] (drawn at 4x and box-filtered)."""
    k = _SUPERSAMPLE
    canvas = Image.new("L", (size * k, size * k), 0)
    draw = ImageDraw.Draw(canvas)
    x, y, radius = cx * k, cy * k, r * k
    if shape == "circle":
        draw.ellipse([x - 0.85 * radius, y - 0.85 * radius, x + 0.85 * radius, y + 0.85 * radius], fill=255)
    elif shape == "ring":
        draw.ellipse([x - 0.9 * radius, y - 0.9 * radius, x + 0.9 * radius, y + 0.9 * radius], fill=255)
        draw.ellipse([x - 0.5 * radius, y - 0.5 * radius, x + 0.5 * radius, y + 0.5 * radius], fill=0)
    else:
        draw.polygon(_polygon(shape, x, y, radius, angle), fill=255)
    return np.asarray(canvas.resize((size, size), Image.BOX), dtype=np.float32) / 255.0


def _clutter(size: int, count: int, base: float, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    """Coverage and grey level of ``count`` thin lines and small dots, each within 6-16 % of ``base``."""
    k = _SUPERSAMPLE
    coverage = np.zeros((size, size), np.float32)
    value = np.zeros((size, size), np.float32)
    for _ in range(count):
        canvas = Image.new("L", (size * k, size * k), 0)
        draw = ImageDraw.Draw(canvas)
        if rng.random() < 0.5:
            x0, y0 = rng.uniform(0, size * k, 2)
            length, theta = rng.uniform(0.15, 0.45) * size * k, rng.uniform(0, math.pi)
            draw.line([x0, y0, x0 + length * math.cos(theta), y0 + length * math.sin(theta)], fill=255,
                      width=int(rng.integers(1, 3)) * k)
        else:
            x0, y0 = rng.uniform(0, size * k, 2)
            rad = rng.uniform(0.01, 0.03) * size * k
            draw.ellipse([x0 - rad, y0 - rad, x0 + rad, y0 + rad], fill=255)
        mask = np.asarray(canvas.resize((size, size), Image.BOX), dtype=np.float32) / 255.0
        level = base + rng.choice([-1.0, 1.0]) * rng.uniform(15, 40)
        value = value * (1 - mask) + level * mask
        coverage = np.maximum(coverage, mask)
    return coverage, value


def render_shape_image(shape: str, hard: bool, size: int, rng: np.random.Generator) -> Tuple[np.ndarray, Dict]:
    """One RGB ``uint8 [size, size, 3]`` image of ``shape`` and its statistics (area, contrast, ...)."""
    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}; known: {', '.join(SHAPES)}")
    tint = lambda: rng.uniform(-12, 12, 3)  # noqa: E731 - small colour cast around a grey level
    if hard:
        r = rng.uniform(0.08, 0.12) * size
        cx, cy = rng.uniform(0.07 * size + r, 0.93 * size - r, 2)
        angle = rng.uniform(0, 2 * math.pi)
        base = rng.uniform(60, 150)
        delta = rng.uniform(18, 40)
        noise_std = float(rng.uniform(14, 24))
        clutter_count = int(rng.integers(6, 13))
    else:
        r = rng.uniform(0.26, 0.36) * size
        cx, cy = size / 2 + rng.uniform(-0.08, 0.08, 2) * size
        angle = math.radians(rng.uniform(-15, 15))
        base = rng.uniform(15, 60)
        delta = rng.uniform(130, 180)
        noise_std, clutter_count = 0.0, 0
    bg_colour, fg_colour = base + tint(), base + delta + tint()
    image = np.broadcast_to(bg_colour, (size, size, 3)).astype(np.float32)
    if hard:  # a linear shading of up to +-20 grey levels in a random direction
        theta = rng.uniform(0, 2 * math.pi)
        ramp = np.linspace(-1, 1, size, dtype=np.float32)
        shade = (math.cos(theta) * ramp[None, :] + math.sin(theta) * ramp[:, None]) * rng.uniform(8, 20)
        image = image + shade[..., None]
    mask = _shape_mask(shape, size, cx, cy, r, angle)
    under, over = clutter_count // 2, clutter_count - clutter_count // 2
    if under:
        cov, val = _clutter(size, under, base, rng)
        image = image * (1 - cov[..., None]) + val[..., None] * cov[..., None]
    image = image * (1 - mask[..., None]) + fg_colour * mask[..., None]
    if over:
        cov, val = _clutter(size, over, base, rng)
        image = image * (1 - cov[..., None]) + val[..., None] * cov[..., None]
    if noise_std:
        image = image + rng.normal(0, noise_std, image.shape).astype(np.float32)
    pixels = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    contrast = abs(float(fg_colour.mean() - bg_colour.mean())) / 255
    stats = dict(area=round(float(mask.mean()), 5), contrast=round(contrast, 4), noise_std=round(noise_std, 3),
                 clutter=clutter_count, radius=round(r / size, 4),
                 center=[round(cx / size, 4), round(cy / size, 4)], angle=round(math.degrees(angle) % 360, 2))
    return pixels, stats


def _params(num_classes: int, train_per_class: int, val_per_class: int, image_size: int, hard_fraction: float,
            seed: int) -> Dict[str, Any]:
    for name, value, low in (("num_classes", num_classes, 2), ("train_per_class", train_per_class, 1),
                             ("val_per_class", val_per_class, 1), ("image_size", image_size, 32),
                             ("seed", seed, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    if num_classes > len(SHAPES):
        raise ValueError(f"num_classes must be at most {len(SHAPES)} ({', '.join(SHAPES)}), got {num_classes}")
    if (isinstance(hard_fraction, bool) or not isinstance(hard_fraction, (int, float))
            or not 0 <= hard_fraction <= 1):
        raise ValueError(f"hard_fraction must be in [0, 1], got {hard_fraction!r}")
    return dict(format=FORMAT_VERSION, num_classes=num_classes, train_per_class=train_per_class,
                val_per_class=val_per_class, image_size=image_size, hard_fraction=float(hard_fraction),
                seed=seed)


def load_manifest(root: PathLike) -> Dict[str, Any]:
    """The manifest of a generated folder; raises ``ValueError`` if it is missing or unreadable."""
    path = Path(root) / MANIFEST_NAME
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: no readable manifest ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("generator") != __name__:
        raise ValueError(f"{path}: not a manifest written by {__name__}")
    return manifest


def _missing(root: Path, manifest: Dict[str, Any]) -> List[str]:
    """Files of the manifest that are absent or of another size, and stray images in its class folders."""
    problems = []
    expected: Dict[Path, set] = {}
    for entry in manifest.get("images", []):
        path = root / entry["path"]
        expected.setdefault(path.parent, set()).add(path.name)
        try:
            if path.stat().st_size != entry["bytes"]:
                problems.append(f"{path} (size changed)")
        except OSError:
            problems.append(f"{path} (missing)")
    for folder, names in expected.items():
        if folder.is_dir():
            extra = sorted({p.name for p in folder.iterdir()} - names)
            problems += [f"{folder / name} (not in the manifest)" for name in extra]
    return problems


def _generate(root: Path, params: Dict[str, Any]) -> Dict[str, Any]:
    shapes = SHAPES[:params["num_classes"]]
    classes = sorted(shapes)  # ImageFolder order: labels are indices into the sorted folder names
    size, seed = params["image_size"], params["seed"]
    images = []
    for split_index, split in enumerate(SPLITS):
        count = params[f"{split}_per_class"]
        num_hard = int(math.floor(count * params["hard_fraction"] + 0.5))
        for shape_index, shape in enumerate(shapes):
            label = classes.index(shape)
            folder = root / split / shape
            folder.mkdir(parents=True)
            order = np.random.default_rng([seed, split_index, shape_index, 1 << 20]).permutation(count)
            hard_set = set(order[:num_hard].tolist())
            for i in range(count):
                rng = np.random.default_rng([seed, split_index, shape_index, i])
                pixels, stats = render_shape_image(shape, i in hard_set, size, rng)
                path = folder / f"{shape}_{i:04d}.png"
                Image.fromarray(pixels).save(path, format="PNG")
                entry = {"path": path.relative_to(root).as_posix(), "split": split, "label": label,
                         "class": shape, "difficulty": "hard" if i in hard_set else "easy",
                         "bytes": path.stat().st_size}
                entry.update(stats)
                images.append(entry)
    counts = {split: {d: sum(1 for e in images if e["split"] == split and e["difficulty"] == d)
                      for d in ("easy", "hard")} for split in SPLITS}
    manifest = dict(generator=__name__, params=params, classes=classes, counts=counts, images=images)
    (root / MANIFEST_NAME).write_text(json.dumps(manifest, indent=1))
    return manifest


def _clean_stale_temporaries(root: Path) -> None:
    """Remove temporary folders left next to ``root`` by generator processes that no longer run."""
    for path in root.parent.glob(f".{root.name}.tmp-*"):
        try:
            pid = int(path.name.rsplit(".tmp-", 1)[1].split("-")[0])
            os.kill(pid, 0)
        except ProcessLookupError:
            logger.info("removing %s, left by an interrupted run", path)
            shutil.rmtree(path, ignore_errors=True)
        except (ValueError, IndexError, PermissionError, OSError):
            continue


def make_shapes_dataset(root: PathLike, num_classes: int = 4, train_per_class: int = 150,
                        val_per_class: int = 40, image_size: int = 96, hard_fraction: float = 0.5, seed: int = 0,
                        overwrite: bool = False) -> ShapesDataset:
    """Write (or reuse) the shapes ImageFolder at ``root``; returns it with its manifest.

    A folder with a manifest of the same parameters and all its files is reused (``created=False``);
    one whose manifest matches but whose files are missing or changed is regenerated. A folder with other
    parameters, or a non-empty folder without a manifest, raises ``ValueError`` unless ``overwrite``.
    ``hard_fraction`` of every class and split (rounded half up) is hard.
    """
    root = Path(root)
    params = _params(num_classes, train_per_class, val_per_class, image_size, hard_fraction, seed)
    if root.exists() and not root.is_dir():
        raise ValueError(f"{root}: exists and is not a folder")
    if root.is_dir() and any(root.iterdir()):
        try:
            manifest = load_manifest(root)
        except ValueError:
            if not overwrite:
                raise ValueError(f"{root}: not empty and holds no {MANIFEST_NAME} of generated data; refusing "
                                 "to replace it (choose another folder, or overwrite it: overwrite=True / "
                                 "--overwrite)") from None
        else:
            if manifest.get("params") == params:
                problems = _missing(root, manifest)
                if not problems:
                    logger.info("%s: complete (%d images), nothing to do", root, len(manifest["images"]))
                    return ShapesDataset(root, manifest, False)
                logger.warning("%s: incomplete (%d problem(s), e.g. %s); generating it again", root,
                               len(problems), problems[0])
            elif not overwrite:
                diff = {k: (manifest.get("params", {}).get(k), v) for k, v in params.items()
                        if manifest.get("params", {}).get(k) != v}
                raise ValueError(f"{root}: was generated with other parameters "
                                 f"({', '.join(f'{k}: {a!r} -> {b!r}' for k, (a, b) in diff.items())}); "
                                 "choose another folder, or overwrite it: overwrite=True / --overwrite")
    root.parent.mkdir(parents=True, exist_ok=True)
    _clean_stale_temporaries(root)
    tmp = root.parent / f".{root.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        manifest = _generate(tmp, params)
        if root.exists():
            old = root.parent / f".{root.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}-old"
            os.rename(root, old)
            os.rename(tmp, root)
            shutil.rmtree(old, ignore_errors=True)
        else:
            try:
                os.rename(tmp, root)
            except OSError:  # another process finished the same folder first
                theirs = load_manifest(root) if (root / MANIFEST_NAME).is_file() else {}
                if theirs.get("params") == params and not _missing(root, theirs):
                    return ShapesDataset(root, theirs, False)
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    logger.info("%s: wrote %d images (%s)", root, len(manifest["images"]),
                ", ".join(f"{s}: {c['easy']} easy + {c['hard']} hard" for s, c in manifest["counts"].items()))
    return ShapesDataset(root, manifest, True)
