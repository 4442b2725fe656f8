"""One data config per model (dvt_ms.data.data_config): the same image gives the same input and logits
through eval.py and infer.py, class names travel in the checkpoint, and eval.py needs nothing but the
checkpoint (or a training run's own config.yaml). Issue 11, points 3, 4 and 6."""
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dvt_ms import create_model
from dvt_ms.checkpoint import read_checkpoint, save_checkpoint
from dvt_ms.config import resolve_config, save_config
from dvt_ms.data import DataConfig, check_image_folder, create_eval_dataset, resolve_data_config
from dvt_ms.infer import iter_image_batches, iter_image_paths, load_image

from .script_loader import load_script

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "configs" / "quickstart.yaml"
CLASSES = ("digit_0", "digit_1")
# the quickstart's tiny architecture at a non-default image size, as a training run would resolve it
TRAIN_ARGS = ["--config", str(QUICKSTART), "--num_classes", "2", "--model_overrides.image_size", "96",
              "--crop_pct", "0.7", "--interpolation", "bilinear"]


@pytest.fixture(scope="module")
def case(tmp_path_factory, module_in_tmp_cwd):
    from dvt_ms.config.training import TRAIN_SCHEMA

    root = tmp_path_factory.mktemp("digits")
    rng = np.random.default_rng(3)
    sizes = [(130, 100), (96, 150), (211, 97)]
    for label, name in enumerate(CLASSES):
        for split in ("train", "val"):
            (root / split / name).mkdir(parents=True)
            for i, (w, h) in enumerate(sizes):
                pixels = (rng.random((h, w, 3)) * 255).astype(np.uint8)
                pixels[..., label] //= 3  # something to tell the classes apart
                Image.fromarray(pixels).save(root / split / name / f"{i}.{'png' if i % 2 else 'jpg'}")
    config = resolve_config(TRAIN_SCHEMA, TRAIN_ARGS + ["--data_dir", str(root), "--output_dir", str(root / "run")])
    net = create_model(config.model, **config.model_overrides)
    info = check_image_folder(root, "train", 2)
    data_config = resolve_data_config(config.model, net, config=config, class_names=info.classes)
    # what the training run writes: its resolved config and weights with model, overrides and data config
    (root / "run").mkdir()
    save_config(config, root / "run" / "config.yaml")
    ckpt = save_checkpoint(net, root / "run" / "final_weights.ckpt",
                           dict(model=config.model, model_overrides=dict(config.model_overrides),
                                data_config=data_config.to_dict()))
    net.set_train(False)
    return dict(root=root, net=net, ckpt=ckpt, data_config=data_config, config=config)


def test_data_config_of_a_run(case):
    dc = case["data_config"]
    assert dc == DataConfig(input_size=96, crop_pct=0.7, interpolation="bilinear", num_classes=2,
                            class_names=CLASSES)
    assert dc.resize == 137  # int(96 / 0.7)
    assert DataConfig.from_dict(read_checkpoint(case["ckpt"])[1]["data_config"]) == dc
    with pytest.raises(ValueError, match="crop_pct must be in"):
        dc.replace(crop_pct=1.5)


def test_infer_and_eval_give_the_same_input_and_logits_per_image(case, tmp_path, capsys):
    """Issue 11, points 3 and 4: eval.py (MindData) and infer.py (one image at a time) preprocessed
    differently; infer.py printed class indices only."""
    eval_script, infer_script = load_script("eval"), load_script("infer")
    val = case["root"] / "val"
    info = check_image_folder(case["root"], "val", 2)
    eval_config = resolve_config(eval_script.SCHEMA, ["--checkpoint", str(case["ckpt"]), "--data_dir",
                                                      str(case["root"]), "--batch_size", "4"])
    dc = case["data_config"]
    # the inputs: MindData's pipeline and the one-image path are the same transform
    pipeline = np.concatenate([images for images, _ in create_eval_dataset(val, 4, dc, info=info)])
    single = np.concatenate([images for _, images, _ in iter_image_batches(info.files, 4, dc)])
    np.testing.assert_array_equal(pipeline, single)
    assert pipeline.shape == (6, 3, 96, 96)
    # the logits: eval.py's predictions against infer.py's, image by image (everyone takes the last exit)
    preds = eval_script._predict(case["net"], eval_config, dc, info)
    out = tmp_path / "preds.json"
    assert infer_script.main(["--checkpoint", str(case["ckpt"]), str(val), "--thresholds", "2,2,-1e8",
                              "--topk", "2", "--output", str(out)]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    report = json.loads(out.read_text())
    by_path = {r["path"]: r for r in report["results"]}
    assert sorted(by_path) == sorted(str(p) for p in info.files) and list(iter_image_paths([val])) == list(info.files)
    for i, path in enumerate(info.files):
        record = by_path[str(path)]
        probs = np.zeros(2, np.float32)
        for entry in record["topk"]:
            probs[entry["class_index"]] = entry["prob"]
        assert record["exit"] == 3
        np.testing.assert_allclose(probs, preds.probs[-1, i], atol=1e-5, err_msg=str(path))
        assert record["class_name"] == CLASSES[record["class_index"]]  # the training folders, from the checkpoint
    assert all(f"({CLASSES[0]})" in line or f"({CLASSES[1]})" in line for line in printed)
    assert report["data_config"]["crop_pct"] == 0.7
    # --class_names still wins
    names = tmp_path / "names.txt"
    names.write_text("zero\none\n")
    assert infer_script.main(["--checkpoint", str(case["ckpt"]), str(val / CLASSES[0] / "0.jpg"), "--thresholds",
                              "2,2,-1e8", "--class_names", str(names)]) == 0
    assert capsys.readouterr().out.split("\t")[1] in ("class 0 (zero)", "class 1 (one)")
    np.testing.assert_array_equal(load_image(info.files[0], dc), single[0])


def test_eval_needs_only_the_checkpoint_or_the_runs_config(case, tmp_path):
    """Issue 11, point 6: eval.py built the config's (or a 1000-class) model instead of the checkpoint's."""
    eval_script = load_script("eval")
    base = ["--checkpoint", str(case["ckpt"]), "--data_dir", str(case["root"]), "--batch_size", "6"]
    results = {}
    for name, extra in {"checkpoint": [], "run_config": ["--config", str(case["root"] / "run" / "config.yaml")]}.items():
        out = tmp_path / f"{name}.json"
        assert eval_script.main(base + extra + ["--output", str(out)]) == 0
        results[name] = json.loads(out.read_text())
    for result in results.values():
        assert result["model"] == "dvt_deit_small" and result["model_overrides"]["num_classes"] == 2
        assert result["data_config"]["crop_pct"] == 0.7 and result["data_config"]["class_names"] == list(CLASSES)
        assert result["data"]["num_evaluated"] == 6
    assert results["checkpoint"]["anytime"] == results["run_config"]["anytime"]
    # a value that contradicts the checkpoint is an error naming both
    with pytest.raises(ValueError, match=r"quickstart.yaml: model_overrides.image_size is 224 but .*final_weights"
                                         r".ckpt was written with image_size: 96"):
        eval_script.main(base + ["--config", str(QUICKSTART), "--num_classes", "2"])
    with pytest.raises(ValueError, match=r"--num_classes is 4 but|--model_overrides.num_classes is 4 but"):
        eval_script.main(base + ["--num_classes", "4"])
    with pytest.raises(ValueError, match=r"--model is 'deit_small' but .* holds a 'dvt_deit_small' model"):
        eval_script.main(base + ["--model", "deit_small"])


def test_conversion_and_export_store_the_data_config(case, tmp_path):
    """Issue 11: the data config is stored in every checkpoint and manifest this project writes."""
    convert = load_script("convert_checkpoint")
    bare = save_checkpoint(case["net"], tmp_path / "bare.ckpt", {})  # weights only, like an official file
    dst = tmp_path / "converted.ckpt"
    overrides = case["config"].model_overrides
    assert convert.main([str(bare), str(dst), "--model", "dvt_deit_small", "--crop_pct", "0.8"]
                        + [f"--model_overrides.{k}={v}" for k, v in overrides.items()]) == 0
    stored = read_checkpoint(dst)[1]["data_config"]
    assert stored["crop_pct"] == 0.8 and stored["input_size"] == 96 and stored["interpolation"] == "bicubic"
    with pytest.raises(ValueError, match=r"bare\.ckpt does not name its model \(its weights are in the dvt_ms layout\): "
                                         "pass --model"):
        convert.main([str(bare), str(tmp_path / "x.ckpt")])


def test_dataset_and_infer_share_constants():
    """Issue 11, point 5: IMAGENET_MEAN/STD and the image extensions were defined twice, differently."""
    import dvt_ms.data.dataset as dataset
    import dvt_ms.data.data_config as data_config
    import dvt_ms.infer.images as infer

    assert dataset.IMAGE_EXTENSIONS is data_config.IMAGE_EXTENSIONS is infer.IMAGE_EXTENSIONS
    assert dataset.IMAGENET_MEAN is data_config.IMAGENET_MEAN and not hasattr(infer, "IMAGENET_MEAN")
