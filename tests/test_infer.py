"""Early-exit engine (dvt_ms.infer), threshold helpers, image preprocessing and scripts/infer.py."""
import contextlib
import json

import mindspore as ms
import numpy as np
import pytest
from PIL import Image

from dvt_ms import create_model
from dvt_ms.budget import exit_assignment, fit_thresholds
from dvt_ms.checkpoint import save_checkpoint
from dvt_ms.config.scripts import parse_threshold_list
from dvt_ms.infer import (AdaptiveClassifier, budget_thresholds, check_thresholds, default_buckets,
                          iter_image_batches, iter_image_paths, load_image, read_class_names,
                          softmax, thresholds_for_fractions, topk)

from .script_loader import load_script

TINY = dict(embed_dim=64, depth=2, num_heads=2, mlp_ratio=2.0, num_classes=10)
N_IMAGES = 8
COUNTS = (3, 3, 2)  # samples per exit in the mixed case
ATOL = 1e-5


@contextlib.contextmanager
def pynative():
    """Run the reference cascade op by op: an independent path from the engine's graphs, and no compile."""
    ms.set_context(mode=ms.PYNATIVE_MODE)
    try:
        yield
    finally:
        ms.set_context(mode=ms.GRAPH_MODE)


def full_cascade_logits(net, images):
    net.set_train(False)
    with pynative():
        return np.stack([o.asnumpy() for o in net(ms.Tensor(images))])


def images(n=N_IMAGES, seed=0):
    return np.random.default_rng(seed).standard_normal((n, 3, 224, 224)).astype(np.float32)


def assert_matches_cascade(result, logits, thresholds):
    """``result`` equals the full cascade's outputs at the exits the samples took."""
    probs = softmax(logits)
    expected_exits = exit_assignment(probs, thresholds)
    np.testing.assert_array_equal(result.exits, expected_exits)
    rows = np.arange(logits.shape[1])
    at_exit = logits[expected_exits, rows]
    np.testing.assert_allclose(result.logits, at_exit, atol=ATOL, rtol=0)
    np.testing.assert_allclose(result.probs, probs[expected_exits, rows], atol=ATOL, rtol=0)
    np.testing.assert_array_equal(result.predictions, at_exit.argmax(axis=1))
    np.testing.assert_allclose(result.confidences, probs[expected_exits, rows].max(axis=1), atol=ATOL, rtol=0)


@pytest.fixture(scope="session")
def deit_case():
    """The default tiny DVT-DeiT, 8 images, the full cascade's logits and a dynamic-shape engine whose
    thresholds send 3/3/2 of the images to the three exits (also used by test_export.py)."""
    net = create_model("dvt_deit_small", **TINY)
    x = images()
    logits = full_cascade_logits(net, x)
    thresholds = thresholds_for_fractions(softmax(logits), np.array(COUNTS) / N_IMAGES)
    return dict(net=net, x=x, logits=logits, thresholds=thresholds,
                engine=AdaptiveClassifier(net, thresholds, shape_mode="dynamic"))


# The three other reuse combinations run with static buckets of 4: stage 1 as two calls of 4, stage 2
# (5 samples) as 4 + 1 padded to 4, stage 3 (2 samples) padded to 4. T2T runs with dynamic shapes.
@pytest.mark.parametrize("name,feature_reuse,relation_reuse,shape_mode", [
    ("dvt_deit_small", True, False, "buckets"),
    ("dvt_deit_small", False, True, "buckets"),
    ("dvt_deit_small", False, False, "buckets"),
    ("dvt_t2t_vit_12", True, True, "dynamic"),
])
def test_reuse_variants_match_full_cascade(name, feature_reuse, relation_reuse, shape_mode):
    net = create_model(name, **TINY, feature_reuse=feature_reuse, relation_reuse=relation_reuse)
    names = [p.name for p in net.get_parameters()]
    x = images(seed=1)
    logits = full_cascade_logits(net, x)
    thresholds = thresholds_for_fractions(softmax(logits), np.array(COUNTS) / N_IMAGES)
    buckets = [4] if shape_mode == "buckets" else None
    engine = AdaptiveClassifier(net, thresholds, shape_mode=shape_mode, buckets=buckets)
    result = engine(x, return_probs=True, return_logits=True)
    assert result.exit_counts(3).tolist() == list(COUNTS)
    assert_matches_cascade(result, logits, thresholds)
    assert engine.compiled_graphs() == [1, 1, 1]
    if shape_mode == "buckets":
        assert engine.stage_batches == [{4: 2}, {4: 2}, {4: 1}]
    else:
        assert engine.stage_batches == [{8: 1}, {5: 1}, {2: 1}]
    assert [p.name for p in net.get_parameters()] == names  # the engine's cells do not rename parameters
    takes = [net.spec.stage_io(k).input_names for k in range(3)]
    assert [("tokens" in names) for names in takes] == [False, feature_reuse, feature_reuse]
    assert [("relations" in names) for names in takes] == [False, relation_reuse, relation_reuse]


def test_mixed_exits_match_full_cascade(deit_case):
    engine, x, logits = deit_case["engine"], deit_case["x"], deit_case["logits"]
    result = engine(x, return_probs=True, return_logits=True)
    assert result.exit_counts(3).tolist() == list(COUNTS)
    assert_matches_cascade(result, logits, deit_case["thresholds"])
    # input order: a permuted batch gives the permuted results
    order = np.array([5, 2, 7, 0, 3, 6, 1, 4])
    permuted = engine(x[order], return_logits=True)
    np.testing.assert_array_equal(permuted.exits, result.exits[order])
    np.testing.assert_allclose(permuted.logits, result.logits[order], atol=ATOL, rtol=0)
    assert permuted.probs is None


def test_edge_cases_reuse_the_compiled_graphs(deit_case):
    engine, x, logits = deit_case["engine"], deit_case["x"], deit_case["logits"]
    engine(x)  # compiles the three stages (if no other test did)
    compiled = engine.compiled_graphs()
    assert compiled == [1, 1, 1]
    runs = [sum(b.values()) for b in engine.stage_batches]

    everyone_first = [0.0, 2.0, -1e8]
    engine.set_thresholds(everyone_first)
    result = engine(x, return_probs=True, return_logits=True)
    assert (result.exits == 0).all()
    assert_matches_cascade(result, logits, np.float32(everyone_first))
    assert [sum(b.values()) for b in engine.stage_batches] == [runs[0] + 1, runs[1], runs[2]]

    nobody_early = [2.0, 2.0, -1e8]
    engine.set_thresholds(nobody_early)
    result = engine(x, return_probs=True, return_logits=True)
    assert (result.exits == 2).all()
    assert_matches_cascade(result, logits, np.float32(nobody_early))

    engine.set_thresholds(deit_case["thresholds"])
    full = engine(x, return_logits=True)
    for i in range(N_IMAGES):
        single = engine(x[i:i + 1], return_probs=True, return_logits=True)
        assert single.exits[0] == full.exits[i]
        assert_matches_cascade(single, logits[:, i:i + 1], deit_case["thresholds"])
    remainders = {n for b in engine.stage_batches[1:] for n in b}
    assert len(remainders) >= 3, remainders  # several remainder sizes ran ...
    assert engine.compiled_graphs() == compiled  # ... without a recompile


def test_bucket_plans(deit_case):
    assert default_buckets(64) == (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)
    engine = AdaptiveClassifier(deit_case["net"], deit_case["thresholds"], shape_mode="buckets")
    assert engine.batch_plan(64) == [(0, 64, 64)]
    assert engine.batch_plan(26) == [(0, 24, 24), (24, 26, 2)]
    assert engine.batch_plan(10) == [(0, 8, 8), (8, 10, 2)]
    assert engine.batch_plan(5) == [(0, 5, 6)]
    assert engine.batch_plan(150) == [(0, 64, 64), (64, 128, 64), (128, 150, 24)]
    assert deit_case["engine"].batch_plan(37) == [(0, 37, 37)]
    with pytest.raises(ValueError, match="buckets must be positive integers"):
        AdaptiveClassifier(deit_case["net"], deit_case["thresholds"], shape_mode="buckets", buckets=[0, 4])
    with pytest.raises(ValueError, match="only used with shape_mode='buckets'"):
        AdaptiveClassifier(deit_case["net"], deit_case["thresholds"], shape_mode="dynamic", buckets=[4])


def test_bad_arguments_are_named(deit_case):
    net, engine = deit_case["net"], deit_case["engine"]
    with pytest.raises(ValueError, match="thresholds has 2 entries but the model has 3 exits"):
        AdaptiveClassifier(net, [0.5, -1e8])
    with pytest.raises(ValueError, match="thresholds has 4 entries"):
        engine.set_thresholds([0.5, 0.5, 0.5, -1e8])
    with pytest.raises(ValueError, match="NaN at exit 1"):
        AdaptiveClassifier(net, [0.5, float("nan"), -1e8])
    with pytest.raises(ValueError, match="last threshold is 0.5"):
        AdaptiveClassifier(net, [0.5, 0.5, 0.5])
    with pytest.raises(ValueError, match="must be 1-D"):
        AdaptiveClassifier(net, [[0.5, 0.5, -1e8]])
    with pytest.raises(ValueError, match="shape_mode"):
        AdaptiveClassifier(net, [0.5, 0.5, -1e8], shape_mode="static")
    with pytest.raises(TypeError, match="DynamicVisionTransformer.*VisionTransformer"):
        AdaptiveClassifier(create_model("deit_small", **TINY), [-1e8])
    with pytest.raises(ValueError, match=r"\[B, 3, 224, 224\], got \(2, 3, 160, 160\)"):
        engine(np.zeros((2, 3, 160, 160), np.float32))
    with pytest.raises(ValueError, match="empty batch"):
        engine(np.zeros((0, 3, 224, 224), np.float32))
    bad = images(2)
    bad[1, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match=r"images\[1\] contains NaN"):
        engine(bad)


# --------------------------------------------------------------------------------------------------
# thresholds (numpy only)
# --------------------------------------------------------------------------------------------------
def test_thresholds_for_fractions_hits_the_counts_with_a_margin():
    rng = np.random.default_rng(3)
    probs = softmax(rng.standard_normal((3, 200, 10)).astype(np.float32) * 2)
    fractions = [0.6, 0.25, 0.15]
    official = fit_thresholds(probs, None, np.float32(fractions))
    robust = thresholds_for_fractions(probs, fractions)
    exact = thresholds_for_fractions(probs, fractions, midpoints=False)
    np.testing.assert_array_equal(exact, official)
    counts = np.bincount(exit_assignment(probs, robust), minlength=3)
    assert counts.tolist() == [120, 50, 30]
    np.testing.assert_array_equal(exit_assignment(probs, robust), exit_assignment(probs, official))
    assert (robust[:2] < official[:2]).all() and robust[2] == official[2]
    # nobody sits right at a threshold any more
    conf = probs.max(axis=2)
    assert np.abs(conf[:2] - robust[:2, None]).min() > 0
    with pytest.raises(ValueError, match="sum to 1"):
        thresholds_for_fractions(probs, [0.5, 0.2, 0.2])
    with pytest.raises(ValueError, match="one entry per exit"):
        thresholds_for_fractions(probs, [0.5, 0.5])


def test_threshold_parsing_and_budget_rows():
    assert parse_threshold_list("0.8, 0.6,-1e8") == [0.8, 0.6, -1e8]
    with pytest.raises(ValueError, match="'x' is not a number"):
        parse_threshold_list("0.8,x,-1e8")
    with pytest.raises(ValueError, match="NaN"):
        parse_threshold_list("0.8,nan,-1e8")
    table = np.stack([np.linspace(0.9, 0.1, 59), np.linspace(0.8, 0.2, 59), np.full(59, -1e8)], axis=1)
    np.testing.assert_allclose(budget_thresholds({"dynamic_threshold": table}, 1, 3), np.float32(table[0]))
    np.testing.assert_allclose(budget_thresholds({"dynamic_threshold": table}, 59, 3), np.float32(table[58]))
    with pytest.raises(ValueError, match=r"budget step must be an integer in 1\.\.59, got 60"):
        budget_thresholds({"dynamic_threshold": table}, 60, 3)
    with pytest.raises(ValueError, match="no 'dynamic_threshold' table"):
        budget_thresholds({}, 1, 3)
    with pytest.raises(ValueError, match=r"shape \[steps, 2\]"):
        budget_thresholds({"dynamic_threshold": table}, 1, 2)
    placeholder = table.copy()
    placeholder[:, 2] = 0.4
    with pytest.raises(ValueError, match="x.ckpt: dynamic_threshold row of budget step 3: the last threshold"):
        budget_thresholds({"dynamic_threshold": placeholder}, 3, 3, source="x.ckpt")
    assert check_thresholds((0.1, 0.2, -1e8), 3).dtype == np.float32
    classes, values = topk(np.array([[0.1, 0.6, 0.3]]), 2)
    assert classes.tolist() == [[1, 2]] and np.allclose(values, [[0.6, 0.3]])


# --------------------------------------------------------------------------------------------------
# images
# --------------------------------------------------------------------------------------------------
def test_eval_preprocessing(tmp_path):
    Image.new("RGB", (300, 200), (255, 128, 0)).save(tmp_path / "wide.png")
    Image.new("L", (100, 400), 128).save(tmp_path / "tall_gray.jpg")
    wide = load_image(tmp_path / "wide.png")
    assert wide.shape == (3, 224, 224) and wide.dtype == np.float32
    expected = (np.array([255, 128, 0]) / 255.0 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    np.testing.assert_allclose(wide.mean(axis=(1, 2)), expected, atol=1e-5)
    gray = load_image(tmp_path / "tall_gray.jpg", 160)
    assert gray.shape == (3, 160, 160)
    # a horizontal ramp: the center crop keeps the middle 224 of 256 columns after the resize to 384x256
    ramp = np.tile(np.linspace(0, 255, 384).astype(np.uint8), (256, 1))
    Image.fromarray(ramp).save(tmp_path / "ramp.png")
    row = load_image(tmp_path / "ramp.png")[0, 112] * 0.229 + 0.485
    assert abs(row[0] * 255 - 255 * 80 / 383) < 2 and abs(row[-1] * 255 - 255 * 303 / 383) < 2


def test_unreadable_files_are_skipped_and_named(tmp_path, caplog):
    (tmp_path / "sub").mkdir()
    for name in ("b.png", "sub/a.jpg", "sub/c.png"):
        Image.new("RGB", (64, 48), (10, 20, 30)).save(tmp_path / name)
    (tmp_path / "sub" / "broken.png").write_bytes(b"not an image")
    (tmp_path / "notes.txt").write_text("ignored: not an image extension")
    paths = list(iter_image_paths([tmp_path]))
    assert [p.relative_to(tmp_path).as_posix() for p in paths] == ["b.png", "sub/a.jpg", "sub/broken.png",
                                                                  "sub/c.png"]
    with pytest.raises(OSError, match="broken.png: cannot read the image"):
        load_image(tmp_path / "sub" / "broken.png")
    batches = list(iter_image_batches(paths, batch_size=2))
    assert [len(good) for good, _, _ in batches] == [2, 1]
    assert [img.shape for _, img, _ in batches] == [(2, 3, 224, 224), (1, 3, 224, 224)]
    assert [p.name for _, _, bad in batches for p in bad] == ["broken.png"]
    assert "broken.png" in caplog.text
    with pytest.raises(FileNotFoundError, match="missing.png"):
        list(iter_image_paths([tmp_path / "missing.png"]))


def test_class_names(tmp_path):
    (tmp_path / "names.txt").write_text("cat\ndog\n\n")
    assert read_class_names(tmp_path / "names.txt", 2) == ["cat", "dog"]
    (tmp_path / "index.json").write_text(json.dumps({"1": ["n2", "dog"], "0": ["n1", "cat"]}))
    assert read_class_names(tmp_path / "index.json", 2) == ["cat", "dog"]
    with pytest.raises(ValueError, match="names.txt: 2 class names, but the model has 10 classes"):
        read_class_names(tmp_path / "names.txt", 10)


# --------------------------------------------------------------------------------------------------
# scripts/infer.py
# --------------------------------------------------------------------------------------------------
def test_infer_script(deit_case, tmp_path, capsys):
    net = deit_case["net"]
    table = np.tile(np.float32([0.5, 0.3, -1e8]), (59, 1))
    table[9] = [0.0, 2.0, -1e8]  # budget step 10: everyone leaves at exit 1
    ckpt = save_checkpoint(net, tmp_path / "tiny.ckpt", dict(model="dvt_deit_small", model_overrides=TINY,
                                                              dynamic_threshold=table))
    folder = tmp_path / "images"
    (folder / "sub").mkdir(parents=True)
    rng = np.random.default_rng(5)
    for i, name in enumerate(["a.jpg", "sub/b.png", "c.png"]):
        size = [(320, 240), (200, 260), (224, 224)][i]
        Image.fromarray((rng.random(size[::-1] + (3,)) * 255).astype(np.uint8)).save(folder / name)
    (folder / "sub" / "zz_broken.jpg").write_bytes(b"\x00" * 10)
    script = load_script("infer")

    (tmp_path / "names.txt").write_text("".join(f"class{i}\n" for i in range(10)))
    # budget step 10 stops everyone at exit 1, which keeps this test to one stage's compile; the engine
    # itself is tested above
    out = tmp_path / "out.json"
    assert script.main(["--checkpoint", str(ckpt), str(folder), "--budget_step", "10", "--topk", "3",
                        "--batch_size", "2", "--class_names", str(tmp_path / "names.txt"),
                        "--output", str(out)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3 and lines[0].startswith(str(folder / "a.jpg") + "\tclass ")
    assert "\texit 1\tconfidence " in lines[0] and "\ttop3 " in lines[0]
    report = json.loads(out.read_text())
    assert report["thresholds"] == [0.0, 2.0, -1e8]
    assert [r["path"] for r in report["results"]] == [str(folder / n) for n in ("a.jpg", "c.png", "sub/b.png")]
    assert report["skipped"] == [str(folder / "sub" / "zz_broken.jpg")]
    # the same images through the engine directly
    x = np.stack([load_image(r["path"]) for r in report["results"]])
    engine = deit_case["engine"]  # same weights as the checkpoint
    engine.set_thresholds([0, 2, -1e8])
    try:
        direct = engine(x)
    finally:
        engine.set_thresholds(deit_case["thresholds"])
    assert [r["exit"] for r in report["results"]] == (direct.exits + 1).tolist()
    assert [r["class_index"] for r in report["results"]] == direct.predictions.tolist()
    np.testing.assert_allclose([r["confidence"] for r in report["results"]], direct.confidences, atol=ATOL)
    assert [len(r["topk"]) for r in report["results"]] == [3, 3, 3]
    first = report["results"][0]
    assert first["class_name"] == f"class{first['class_index']}" and first["topk"][0]["prob"] == first["confidence"]

    csv_out = tmp_path / "out.csv"
    script.write_output(csv_out, report["results"], report["skipped"], {})
    rows = csv_out.read_text().splitlines()
    assert rows[0] == "path,class_index,class_name,exit,confidence,topk_classes,topk_probs"
    assert rows[1].split(",")[:4] == [first["path"], str(first["class_index"]), first["class_name"], "1"]

    for argv, message in [
        ([str(folder)], "no exit thresholds: pass --thresholds"),
        ([str(folder), "--thresholds", "0.5,-1e8"], "--thresholds: thresholds has 2 entries"),
        ([str(folder), "--budget_step", "0"], r"--budget_step: must be > 0, got 0"),
        ([str(folder), "--budget_step", "60"], r"budget step must be an integer in 1\.\.59, got 60"),
        ([str(folder / "nope.png"), "--budget_step", "3"], "no such file or directory: .*nope.png"),
        ([str(folder), "--budget_step", "3", "--output", str(tmp_path / "out.txt")], "must end in .csv or .json"),
        ([str(folder), "--budget_step", "3", "--model", "dvt_t2t_vit_12"],
         "--model is 'dvt_t2t_vit_12' but .*tiny.ckpt holds a 'dvt_deit_small' model"),
        ([str(folder), "--budget_step", "3", "--model_overrides.depth", "3"],
         "--model_overrides.depth is 3 but .*tiny.ckpt was written with depth: 2"),
    ]:
        with pytest.raises(ValueError, match=message):
            script.main(["--checkpoint", str(ckpt)] + argv)
