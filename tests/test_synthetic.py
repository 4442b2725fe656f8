"""Tests of the synthetic shapes dataset (dvt_ms.data.synthetic) and scripts/make_quickstart_data.py."""
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dvt_ms.data import synthetic
from dvt_ms.data.dataset import check_image_folder
from dvt_ms.data.synthetic import MANIFEST_NAME, SHAPES, load_manifest, make_shapes_dataset

from .script_loader import load_script


SMALL = dict(num_classes=4, train_per_class=6, val_per_class=3, image_size=64, seed=0)


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    return make_shapes_dataset(tmp_path_factory.mktemp("shapes") / "quick", **SMALL)


def _files(root: Path):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout_and_counts(made):
    root = made.root
    assert made.created
    assert made.classes == sorted(SHAPES[:4])
    assert sorted(p.name for p in root.iterdir()) == sorted([MANIFEST_NAME, "train", "val"])
    for split, per_class in (("train", 6), ("val", 3)):
        info = check_image_folder(root, split, num_classes=4)
        assert list(info.classes) == sorted(SHAPES[:4])
        assert info.num_images == 4 * per_class
        for shape in SHAPES[:4]:
            files = sorted((root / split / shape).iterdir())
            assert len(files) == per_class and all(f.suffix == ".png" for f in files)
            with Image.open(files[0]) as image:
                assert image.size == (64, 64) and image.mode == "RGB"
    manifest = load_manifest(root)
    assert manifest["counts"] == {"train": {"easy": 12, "hard": 12}, "val": {"easy": 4, "hard": 8}}
    assert len(manifest["images"]) == 4 * 9
    infos = {split: check_image_folder(root, split) for split in ("train", "val")}
    for entry in manifest["images"]:
        assert (root / entry["path"]).stat().st_size == entry["bytes"]
        info = infos[entry["split"]]
        assert info.labels[info.files.index(root / entry["path"])] == entry["label"]
        assert entry["path"].split("/")[:2] == [entry["split"], entry["class"]]
        assert made.classes[entry["label"]] == entry["class"]
    assert not [p for p in root.parent.iterdir() if p.name.startswith(".")]  # no temporary folder left


def test_generation_is_deterministic(made, tmp_path):
    again = make_shapes_dataset(tmp_path / "again", **SMALL)
    assert _files(again.root) == _files(made.root)
    other = make_shapes_dataset(tmp_path / "other", **dict(SMALL, seed=1))
    name = "train/circle/circle_0000.png"
    assert _files(other.root)[name] != _files(made.root)[name]


def test_second_call_reuses_a_complete_folder(made):
    before = {p: p.stat().st_mtime_ns for p in made.root.rglob("*")}
    again = make_shapes_dataset(made.root, **SMALL)
    assert not again.created and again.manifest == made.manifest
    assert {p: p.stat().st_mtime_ns for p in made.root.rglob("*")} == before


def test_incomplete_folder_is_regenerated(tmp_path):
    data = make_shapes_dataset(tmp_path / "d", **SMALL)
    reference = _files(data.root)
    (data.root / "train" / "square" / "square_0002.png").unlink()
    (data.root / "val" / "circle" / "stray.png").write_bytes(b"x")
    again = make_shapes_dataset(tmp_path / "d", **SMALL)
    assert again.created
    assert _files(again.root) == reference
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_refuses_foreign_or_different_folders(tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="refusing"):
        make_shapes_dataset(foreign, **SMALL)
    assert (foreign / "notes.txt").read_text() == "mine"
    data = make_shapes_dataset(tmp_path / "d", **SMALL)
    with pytest.raises(ValueError, match="train_per_class: 6 -> 7"):
        make_shapes_dataset(data.root, **dict(SMALL, train_per_class=7))
    replaced = make_shapes_dataset(data.root, overwrite=True, **dict(SMALL, train_per_class=7))
    assert replaced.created and replaced.manifest["counts"]["train"] == {"easy": 12, "hard": 16}
    empty = tmp_path / "empty"
    empty.mkdir()
    assert make_shapes_dataset(empty, **SMALL).created


def test_failed_generation_leaves_nothing(tmp_path, monkeypatch):
    calls = []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) > 5:
            raise RuntimeError("disk full")
        return real(*args, **kwargs)

    real = synthetic.render_shape_image
    monkeypatch.setattr(synthetic, "render_shape_image", failing)
    with pytest.raises(RuntimeError, match="disk full"):
        make_shapes_dataset(tmp_path / "d", **SMALL)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kwargs, message", [
    (dict(num_classes=len(SHAPES) + 1), "at most"),
    (dict(num_classes=1), "num_classes"),
    (dict(train_per_class=0), "train_per_class"),
    (dict(image_size=8), "image_size"),
    (dict(hard_fraction=1.5), "hard_fraction"),
    (dict(seed=-1), "seed"),
])
def test_invalid_arguments(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_shapes_dataset(tmp_path / "d", **dict(SMALL, **kwargs))


def _roughness(path: Path) -> float:
    """Mean absolute difference between horizontally adjacent grey levels."""
    grey = np.asarray(Image.open(path).convert("L"), dtype=np.float32)
    return float(np.abs(np.diff(grey, axis=1)).mean())


def test_easy_and_hard_images_differ(made):
    easy, hard = made.images(difficulty="easy"), made.images(difficulty="hard")
    assert easy and hard
    mean = lambda entries, key: float(np.mean([e[key] for e in entries]))  # noqa: E731
    assert mean(easy, "area") > 5 * mean(hard, "area")
    assert mean(easy, "contrast") > 3 * mean(hard, "contrast")
    assert mean(easy, "noise_std") == 0 and mean(hard, "noise_std") > 10
    assert min(e["area"] for e in easy) > max(e["area"] for e in hard)
    # ... and it shows in the pixels: hard images are noisy, easy ones flat but for the shape's outline
    assert min(_roughness(made.root / e["path"]) for e in hard) > 2 * max(_roughness(made.root / e["path"])
                                                                         for e in easy)


def test_script_writes_then_keeps(tmp_path, caplog):
    script = load_script("make_quickstart_data")
    argv = ["--output", str(tmp_path / "qs"), "--train_per_class", "3", "--val_per_class", "2",
            "--image_size", "48", "--num_classes", "3", "--seed", "5"]
    assert script.main(argv) == 0
    manifest = json.loads((tmp_path / "qs" / MANIFEST_NAME).read_text())
    assert manifest["params"]["seed"] == 5 and manifest["classes"] == sorted(SHAPES[:3])
    caplog.clear()
    with caplog.at_level("INFO"):
        assert script.main(argv) == 0
    assert "nothing to do" in caplog.text
    with pytest.raises(ValueError, match="other parameters"):
        script.main(argv[:-1] + ["6"])


def test_generated_folder_feeds_the_training_pipeline(made):
    from dvt_ms.data.train_transforms import create_train_dataset

    data = create_train_dataset(made.root / "train", 8, 4, image_size=32, seed=0)
    batches = list(data)
    assert len(batches) == 3 and data.skipped == 0
    assert batches[0][0].shape == (8, 3, 32, 32) and batches[0][1].shape == (8, 4)
