"""Tests of the training pipeline (dvt_ms.data.train_transforms) on a tiny ImageFolder made here.

Every image is one flat grey level, unique in the folder, so a sample can be recognised after the
geometric augmentations (a crop or flip of a flat image is the same flat image) from its normalized
pixels; photometric augmentations are switched off wherever a test needs that.
"""
import shutil
from types import SimpleNamespace

import mindspore.dataset as ds
import numpy as np
import pytest
from PIL import Image

from dvt_ms.data.dataset import IMAGENET_MEAN, IMAGENET_STD, DatasetError
from dvt_ms.data.train_transforms import (
    BatchRandomErasing,
    batch_mix_op,
    create_train_dataset,
    parse_rand_augment,
)

NUM_CLASSES, PER_CLASS, SIZE = 3, 4, 32
PLAIN = dict(auto_augment=None, reprob=0.0, mixup=0.0, cutmix=0.0, label_smoothing=0.0, hflip=0.0)


def _grey(label: int, index: int) -> int:
    return 20 + 15 * (label * PER_CLASS + index)


ALL_GREYS = sorted(_grey(c, i) for c in range(NUM_CLASSES) for i in range(PER_CLASS))


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("train_data")
    for label in range(NUM_CLASSES):
        class_dir = root / "train" / f"class_{label}"
        class_dir.mkdir(parents=True)
        for index in range(PER_CLASS):
            image = np.full((64, 64, 3), _grey(label, index), dtype=np.uint8)
            Image.fromarray(image).save(class_dir / f"img_{index}.png")
    return root


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # MindData may drop files into the working directory
    seed = ds.config.get_seed()
    yield
    ds.config.set_seed(seed)  # seed= and set_seed change a process-wide setting


def _epoch(data):
    batches = list(data)
    assert batches, "the epoch produced no batch"
    return batches


def _greys(images: np.ndarray) -> np.ndarray:
    """Grey level of each flat image of a normalized batch (channel 0)."""
    return np.rint(images[:, 0].mean(axis=(1, 2)) * IMAGENET_STD[0] * 255 + IMAGENET_MEAN[0] * 255)


def _label_of_grey(grey: float) -> int:
    return int(round((grey - 20) / 15)) // PER_CLASS


def test_default_recipe_gives_soft_targets(folder):
    data = create_train_dataset(folder / "train", batch_size=4, num_classes=NUM_CLASSES, image_size=SIZE, seed=1)
    assert data.soft_targets and data.steps_per_epoch == 3
    batches = _epoch(data)
    assert len(batches) == 3
    floor = 0.1 / NUM_CLASSES
    mixed = False
    for images, targets in batches:
        assert images.shape == (4, 3, SIZE, SIZE) and images.dtype == np.float32
        assert targets.shape == (4, NUM_CLASSES) and targets.dtype == np.float32
        np.testing.assert_allclose(targets.sum(axis=1), 1.0, atol=1e-5)
        assert targets.min() >= floor - 1e-6  # label smoothing survives mixing (convex combinations)
        mixed |= bool((targets.max(axis=1) < 1 - 0.1 + floor - 1e-4).any())
    assert mixed, "no batch was mixed by MixUp/CutMix"


def test_label_smoothing_alone(folder):
    options = dict(PLAIN, label_smoothing=0.1)
    data = create_train_dataset(folder / "train", 4, NUM_CLASSES, image_size=SIZE, seed=2, **options)
    on, off = 1 - 0.1 + 0.1 / NUM_CLASSES, 0.1 / NUM_CLASSES
    for images, targets in _epoch(data):
        assert targets.dtype == np.float32
        labels = [_label_of_grey(g) for g in _greys(images)]
        expected = np.full((4, NUM_CLASSES), off, np.float32)
        expected[np.arange(4), labels] = on
        np.testing.assert_allclose(targets, expected, atol=1e-6)


def test_options_off_give_int_labels(folder):
    data = create_train_dataset(folder / "train", 4, NUM_CLASSES, image_size=SIZE, seed=3, **PLAIN)
    assert not data.soft_targets
    seen = []
    for images, labels in _epoch(data):
        assert labels.dtype == np.int32 and labels.shape == (4,)
        greys = _greys(images)
        assert labels.tolist() == [_label_of_grey(g) for g in greys]
        seen += greys.tolist()
    assert sorted(seen) == ALL_GREYS


def test_two_shards_are_disjoint_and_cover_the_split(folder):
    shards = []
    for shard_id in range(2):
        data = create_train_dataset(folder / "train", 2, NUM_CLASSES, image_size=SIZE, num_shards=2,
                                    shard_id=shard_id, seed=4, drop_remainder=False, **PLAIN)
        assert data.rows_per_shard == 6 and data.steps_per_epoch == 3
        shards.append([g for images, _ in _epoch(data) for g in _greys(images).tolist()])
    assert len(shards[0]) == len(shards[1]) == 6
    assert not set(shards[0]) & set(shards[1])
    assert sorted(shards[0] + shards[1]) == ALL_GREYS


def test_fixed_seed_is_deterministic(folder):
    def run(seed):
        data = create_train_dataset(folder / "train", 4, NUM_CLASSES, image_size=SIZE, seed=seed,
                                    reprob=0.5, num_parallel_workers=2)
        return _epoch(data)

    first, second, other = run(11), run(11), run(12)
    ds.config.set_seed(11)
    global_seed = run(None)
    for again in (second, global_seed):
        for (a_img, a_tgt), (b_img, b_tgt) in zip(first, again):
            np.testing.assert_array_equal(a_img, b_img)
            np.testing.assert_array_equal(a_tgt, b_tgt)
    assert any(not np.array_equal(a[0], b[0]) for a, b in zip(first, other))


def test_successive_loops_are_new_epochs(folder):
    data = create_train_dataset(folder / "train", 12, NUM_CLASSES, image_size=SIZE, seed=5, **PLAIN)
    first, second = (_greys(images).tolist() for images, _ in (_epoch(data)[0], _epoch(data)[0]))
    assert sorted(first) == sorted(second) and first != second  # reshuffled
    assert data.epochs_done == 2


def test_corrupt_images_are_skipped_and_counted(folder, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(folder / "train", root / "train")
    (root / "train" / "class_1" / "broken.png").write_bytes(b"this is not an image")
    intact = (root / "train" / "class_2" / "img_0.png").read_bytes()
    (root / "train" / "class_2" / "truncated.png").write_bytes(intact[: len(intact) // 2])
    data = create_train_dataset(root / "train", 5, NUM_CLASSES, image_size=SIZE, seed=6, drop_remainder=False,
                                **PLAIN)
    labels = np.concatenate([labels for _, labels in _epoch(data)])
    assert labels.size == NUM_CLASSES * PER_CLASS
    assert data.skipped == 2
    assert sorted(data.skipped_files) == sorted(str(root / "train" / name)
                                                for name in ("class_1/broken.png", "class_2/truncated.png"))
    _epoch(data)  # another epoch meets the same files again: still two distinct skipped images
    assert data.skipped == 2


@pytest.mark.parametrize("kwargs, message", [
    (dict(batch_size=0), "batch_size"),
    (dict(num_classes=5), "num_classes=5"),
    (dict(shard_id=0), "shard_id needs num_shards"),
    (dict(num_shards=2, shard_id=2), "shard_id"),
    (dict(reprob=1.5), "reprob"),
    (dict(label_smoothing=1.0), "label_smoothing"),
    (dict(mixup=-0.1), "mixup"),
    (dict(mixup_prob=2), "mixup_prob"),
    (dict(interpolation="nearest"), "interpolation"),
    (dict(auto_augment="augmix-m9"), "only RandAugment"),
    (dict(auto_augment="rand-m11"), "m must be"),
    (dict(auto_augment="rand-m9-inc0"), "inc1"),
    (dict(auto_augment="rand-m9-w0"), "cannot use 'w0'"),
    (dict(scale=(0.5, 0.1)), "scale"),
    (dict(batch_size=13), "no batch"),
])
def test_invalid_arguments_fail_early(folder, kwargs, message):
    args = dict(batch_size=4, num_classes=NUM_CLASSES, image_size=SIZE)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        create_train_dataset(folder / "train", **args)


def test_missing_folder_is_a_dataset_error(tmp_path):
    with pytest.raises(DatasetError, match="missing split folder"):
        create_train_dataset(tmp_path / "train", 4, NUM_CLASSES)


def test_rand_augment_strings():
    config = parse_rand_augment("rand-m9-mstd0.5-inc1")
    assert (config.num_ops, config.magnitude, config.magnitude_std) == (2, 9, 0.5)
    assert config.mindspore_magnitude == 27
    config = parse_rand_augment("rand-n3-m5")
    assert (config.num_ops, config.mindspore_magnitude) == (3, 15)


def test_batch_mix_op_choices():
    from mindspore.dataset import transforms, vision

    assert batch_mix_op(0.0, 0.0) is None
    assert batch_mix_op(0.8, 1.0, mix_prob=0.0) is None
    assert isinstance(batch_mix_op(0.8, 0.0), vision.MixUpBatch)
    assert isinstance(batch_mix_op(0.0, 1.0), vision.CutMixBatch)
    assert isinstance(batch_mix_op(0.8, 1.0, switch_prob=0.5), transforms.RandomChoice)
    assert isinstance(batch_mix_op(0.8, 1.0, mix_prob=0.5), transforms.RandomApply)


def test_batch_random_erasing_is_keyed_and_leaves_the_input_alone():
    images = [np.zeros((3, 16, 16), np.float32) for _ in range(4)]
    erasing = BatchRandomErasing(prob=1.0, seed=0)
    info = SimpleNamespace(get_epoch_num=lambda: 0, get_batch_num=lambda: 3)
    (out,) = erasing(images, info)
    (again,) = erasing(images, info)
    assert all(np.array_equal(a, b) for a, b in zip(out, again))
    assert all(not image.any() for image in images)
    for image in out:
        erased = image[0] != 0
        rows, cols = np.nonzero(erased)
        assert 0.02 * 256 * 0.5 <= erased.sum() <= 256 / 3 * 1.5
        assert erased[rows.min():rows.max() + 1, cols.min():cols.max() + 1].all()  # one rectangle
    info_next = SimpleNamespace(get_epoch_num=lambda: 1, get_batch_num=lambda: 3)
    (other,) = erasing(images, info_next)
    assert any(not np.array_equal(a, b) for a, b in zip(out, other))
