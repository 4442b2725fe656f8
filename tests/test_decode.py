"""One decoder for every path: unreadable inputs are skipped and counted, 16-bit images scaled to 8 bits."""
import builtins
import os
from pathlib import Path

import mindspore.dataset as ds
import numpy as np
import pytest
from PIL import Image

from dvt_ms.data import decode as decode_module
from dvt_ms.data import load_image
from dvt_ms.data.dataset import IMAGENET_MEAN, IMAGENET_STD, create_eval_dataset
from dvt_ms.data.decode import read_rgb
from dvt_ms.data.train_transforms import create_train_dataset
from dvt_ms.infer import iter_image_batches

PLAIN = dict(auto_augment=None, reprob=0.0, mixup=0.0, cutmix=0.0, label_smoothing=0.0, hflip=0.0)
SECRET = "secret.png"


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    seed = ds.config.get_seed()
    yield
    ds.config.set_seed(seed)


def _save_16bit(path: Path, value: int, size: int = 40) -> Path:
    Image.fromarray(np.full((size, size), value, dtype=np.uint16)).save(path)
    return path


def test_16_bit_greyscale_is_scaled_not_clipped(tmp_path):
    path = _save_16bit(tmp_path / "grey16.png", 30000)
    with Image.open(path) as image:
        assert image.mode.startswith("I")  # what PIL makes of a 16-bit PNG
    rgb = read_rgb(path)
    assert rgb.mode == "RGB" and np.unique(np.asarray(rgb)).tolist() == [117]  # round(30000 / 257)
    eight = tmp_path / "grey8.png"
    Image.fromarray(np.full((40, 40, 3), 117, np.uint8)).save(eight)
    np.testing.assert_allclose(load_image(path, 32), load_image(eight, 32), atol=1e-6)
    for value, expected in ((0, 0), (65535, 255), (257 * 200, 200)):
        assert np.asarray(read_rgb(_save_16bit(tmp_path / f"v{value}.png", value)))[0, 0].tolist() == [expected] * 3


def test_16_bit_images_in_the_pipelines(tmp_path):
    for name, value in (("a", 30000), ("b", 10000)):
        (tmp_path / "val" / name).mkdir(parents=True)
        _save_16bit(tmp_path / "val" / name / "x.png", value)
    data = create_eval_dataset(tmp_path / "val", 2, 32, num_parallel_workers=1)
    images = np.concatenate([batch for batch, _ in data])
    greys = images[:, 0].mean(axis=(1, 2)) * IMAGENET_STD[0] * 255 + IMAGENET_MEAN[0] * 255
    np.testing.assert_allclose(greys, [117, 39], atol=0.5)  # round(10000 / 257) = 39
    train = create_train_dataset(tmp_path / "val", 2, 2, image_size=32, seed=1, scale=(1, 1), **PLAIN)
    images = np.concatenate([batch for batch, _ in train])
    greys = sorted(images[:, 0].mean(axis=(1, 2)) * IMAGENET_STD[0] * 255 + IMAGENET_MEAN[0] * 255)
    np.testing.assert_allclose(greys, [39, 117], atol=0.5)


@pytest.fixture
def unreadable(tmp_path, monkeypatch):
    """A folder with a dangling link and a file the user may not read (simulated when running as root)."""
    root = tmp_path / "data"
    for split in ("train", "val"):
        for label, name in enumerate(("a", "b")):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(3):
                Image.fromarray(np.full((40, 40, 3), 50 + 60 * label + i, np.uint8)).save(folder / f"{i}.png")
        os.symlink(tmp_path / "gone.png", root / split / "a" / "link.png")
        secret = root / split / "b" / SECRET
        Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(secret)
        secret.chmod(0)
    if os.geteuid() == 0:  # root reads any file: refuse this one as the kernel would refuse a user
        real_open = builtins.open

        def guarded_open(file, *args, **kwargs):
            if Path(file).name == SECRET:
                raise PermissionError(13, "Permission denied", str(file))
            return real_open(file, *args, **kwargs)

        monkeypatch.setattr(decode_module, "open", guarded_open, raising=False)
        monkeypatch.setattr(builtins, "open", guarded_open)
    return root


def test_unreadable_files_are_skipped_and_counted_everywhere(unreadable):
    root = unreadable
    expected = {str(root / "{}" / "a" / "link.png"), str(root / "{}" / "b" / SECRET)}
    with pytest.raises(OSError, match=r"link.png: cannot read the file \(dangling symbolic link to "):
        read_rgb(root / "val" / "a" / "link.png")
    with pytest.raises(OSError, match=rf"{SECRET}: cannot read the file \(Permission denied\)"):
        read_rgb(root / "val" / "b" / SECRET)

    train = create_train_dataset(root / "train", 2, 2, image_size=32, seed=3, drop_remainder=False,
                                 num_parallel_workers=1, **PLAIN)
    labels = np.concatenate([labels for _, labels in train])
    assert labels.size == 6 and train.skipped == 2
    assert set(train.skipped_files) == {p.format("train") for p in expected}

    val = create_eval_dataset(root / "val", 4, 32, num_parallel_workers=1)
    labels = np.concatenate([labels for _, labels in val])
    assert sorted(labels.tolist()) == [0, 0, 0, 1, 1, 1] and val.skipped == 2
    assert set(val.skipped_files) == {p.format("val") for p in expected}

    files = sorted((root / "val").rglob("*.png"))
    batches = list(iter_image_batches(files, 3, 32))
    skipped = {str(p) for _, _, s in batches for p in s}
    assert skipped == {p.format("val") for p in expected}
    assert sum(len(paths) for paths, _, _ in batches) == 6
