"""Tests of scripts/visualize.py and the drawing helpers of dvt_ms.plots."""
import numpy as np
import pytest
from PIL import Image

from dvt_ms import create_model
from dvt_ms.checkpoint import save_checkpoint
from dvt_ms.config import ConfigError
from dvt_ms.plots import (
    EXIT_COLORS,
    FUSED,
    HEADER_HEIGHT,
    PAD,
    evit_figure_size,
    exit_grid_size,
    kept_patch_masks,
    mask_image,
    trace_kept_patches,
)

from .script_loader import load_script

DVT = {"embed_dim": 32, "depth": 1, "num_heads": 2, "mlp_ratio": 2.0, "num_classes": 4}
EVIT = {"embed_dim": 32, "depth": 3, "num_heads": 2, "mlp_ratio": 2.0, "num_classes": 4, "drop_loc": [0, 2],
        "keep_rate": 0.5}


# --------------------------------------------------------------------------------------------------
# index back-mapping
# --------------------------------------------------------------------------------------------------
def test_trace_with_fusion_hand_example():
    # 6 patches, two images. Block A keeps 3 tokens, block B 2, block C 2; with fusion every block
    # sees the previous kept tokens followed by the fused token.
    kept = [np.array([[4, 1, 5], [0, 2, 3]]),   # patches directly
            np.array([[3, 0], [2, 1]]),         # into [4, 1, 5, F] and [0, 2, 3, F]
            np.array([[1, 0], [2, 0]])]         # into [F, 4, F] and [3, 2, F]
    traced = trace_kept_patches(kept, 6, fuse_token=True)
    np.testing.assert_array_equal(traced[0], [[4, 1, 5], [0, 2, 3]])
    np.testing.assert_array_equal(traced[1], [[FUSED, 4], [3, 2]])
    np.testing.assert_array_equal(traced[2], [[4, FUSED], [FUSED, 3]])
    masks = kept_patch_masks(traced, 6)
    np.testing.assert_array_equal(masks[0], [[0, 1, 0, 0, 1, 1], [1, 0, 1, 1, 0, 0]])
    np.testing.assert_array_equal(masks[1], [[0, 0, 0, 0, 1, 0], [0, 0, 1, 1, 0, 0]])
    np.testing.assert_array_equal(masks[2], [[0, 0, 0, 0, 1, 0], [0, 0, 0, 1, 0, 0]])


def test_trace_without_fusion_and_bad_indices():
    traced = trace_kept_patches([np.array([3, 0, 4]), np.array([2, 0])], 5, fuse_token=False)
    np.testing.assert_array_equal(traced[1], [[4, 3]])
    # without fusion only 3 tokens reach the second block: index 3 does not exist there
    with pytest.raises(ValueError, match=r"kept_indices\[1\] holds index 3 but that block received only 3"):
        trace_kept_patches([np.array([3, 0, 4]), np.array([3, 0])], 5, fuse_token=False)
    with pytest.raises(ValueError, match="repeats an index"):
        trace_kept_patches([np.array([[1, 1]])], 5, fuse_token=True)
    with pytest.raises(ValueError, match="batch size 1, expected 2"):
        trace_kept_patches([np.array([[0, 1], [1, 0]]), np.array([[0]])], 5, fuse_token=True)
    with pytest.raises(ValueError, match="integer array"):
        trace_kept_patches([np.array([0.5])], 5, fuse_token=True)


def test_mask_image_blanks_or_greys_the_right_patches():
    image = np.full((8, 8, 3), 10, dtype=np.uint8)
    mask = np.array([True, False, False, True])  # 2x2 grid of 4x4 patches: top-right and bottom-left go
    blank = mask_image(image, mask, 2, fused=False)
    assert (blank[:4, 4:] == 255).all() and (blank[4:, :4] == 255).all()
    assert (blank[:4, :4] == 10).all() and (blank[4:, 4:] == 10).all()
    grey = mask_image(image, mask, 2, fused=True)
    assert (grey[:4, 4:] > 100).all() and (grey[:4, :4] == 10).all()


# --------------------------------------------------------------------------------------------------
# the script, in-process, on tiny models
# --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    root = tmp_path_factory.mktemp("vis")
    rng = np.random.default_rng(0)
    images = root / "images" / "nested"
    images.mkdir(parents=True)
    for i in range(5):
        Image.fromarray(rng.integers(0, 256, (40 + 8 * i, 64, 3), dtype=np.uint8)).save(images / f"{i}.png")
    (images / "broken.jpg").write_bytes(b"garbage")
    dvt = create_model("dvt_deit_small", **DVT)
    table = np.tile(np.array([0.9, 0.6, -1e8], np.float32), (59, 1))
    table[4] = [1.1, 1.1, -1e8]  # p = 5: above any confidence, every image takes the last exit
    save_checkpoint(dvt, root / "dvt.ckpt", {"model": "dvt_deit_small", "model_overrides": DVT,
                                             "dynamic_threshold": table})
    evit = create_model("evit_deit_small", **EVIT)
    save_checkpoint(evit, root / "evit.ckpt", {"model": "evit_deit_small", "model_overrides": EVIT})
    return root


@pytest.fixture(scope="module")
def vis_main():
    return load_script("visualize").main


def _common(ws, model, overrides, ckpt):
    import json

    return ["--model", model, "--model_overrides", json.dumps(overrides), "--checkpoint", str(ws / ckpt),
            "--images", str(ws / "images"), "--batch_size", "4"]


def test_exits_mode_png(ws, vis_main):
    out = ws / "exits.png"
    args = _common(ws, "dvt_deit_small", DVT, "dvt.ckpt") + ["--output", str(out), "--columns", "3",
                                                             "--thumb_size", "48"]
    # the stored row p = 5 sends every image to the last exit; thresholds of 0 send all to the first
    for choice, exit_index in ((["--budget_step", "5"], 2), (["--thresholds", "0,0"], 0)):
        assert vis_main(["exits"] + args + choice) == 0
        with Image.open(out) as img:
            assert img.size == exit_grid_size(5, 3, 48)  # the unreadable file is skipped
            assert img.convert("RGB").getpixel((PAD + 1, HEADER_HEIGHT + 1)) == EXIT_COLORS[exit_index]
    with pytest.raises(ConfigError, match="exactly one of --budget_step"):
        vis_main(["exits"] + args)
    with pytest.raises(ValueError, match="--thresholds has 1 values"):
        vis_main(["exits"] + args + ["--thresholds", "0.5"])


def test_evit_mode_png(ws, vis_main):
    out = ws / "evit.png"
    args = _common(ws, "evit_deit_small", EVIT, "evit.ckpt") + ["--output", str(out), "--panel_size", "64"]
    assert vis_main(["evit"] + args) == 0
    with Image.open(out) as img:
        assert img.size == evit_figure_size(5, 2, 64)


def test_mode_errors(ws, vis_main):
    with pytest.raises(ValueError, match="first argument must be the mode"):
        vis_main(["--checkpoint", "x"])
    with pytest.raises(ValueError, match="evit mode needs an EViT model"):
        vis_main(["evit"] + _common(ws, "dvt_deit_small", DVT, "dvt.ckpt") + ["--output", str(ws / "x.png")])
    with pytest.raises(ConfigError, match="output must end in .png"):
        vis_main(["evit"] + _common(ws, "evit_deit_small", EVIT, "evit.ckpt") + ["--output", "x.jpg"])


def test_evit_indices_from_the_model_trace_to_nested_masks():
    import mindspore as ms

    net = create_model("evit_deit_small", **EVIT)
    net.set_train(False)
    x = ms.Tensor(np.random.default_rng(3).normal(size=(2, 3, 224, 224)).astype(np.float32))
    _, kept = net(x, None, True)
    kept = [k.asnumpy() for k in kept]
    assert [k.shape for k in kept] == [(2, 98), (2, 50)]  # ceil(0.5 * 196), ceil(0.5 * (98 + 1 fused))
    traced = trace_kept_patches(kept, 196, fuse_token=True)
    masks = kept_patch_masks(traced, 196)
    np.testing.assert_array_equal(traced[0], kept[0])
    assert (masks[1] <= masks[0]).all()  # a patch without its own token never gets one back
    assert (masks[1].sum(axis=1) + (traced[1] == FUSED).sum(axis=1) == 50).all()
