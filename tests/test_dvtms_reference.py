"""The numpy reference of the official MindSpore DVT against the outputs of the official code."""
import json

import mindspore as ms
import numpy as np
import pytest

from tests.dvtms_reference import (official_forward, official_shapes, random_official_params,
                                   write_official_ckpt)

TINY = dict(embed_dim=64, depth=2, num_heads=2, dim_head=32, mlp_dim=128, num_classes=10)
COMBOS = [(True, True), (True, False), (False, True), (False, False)]


@pytest.fixture(scope="module")
def official_tiny(reference_dir):
    raw = ms.load_checkpoint(str(reference_dir / "dvtms_official_tiny.ckpt"))
    params = {k: v.asnumpy() for k, v in raw.items()}
    with np.load(reference_dir / "dvtms_official_tiny.npz") as data:
        arrays = {k: data[k] for k in data.files}
    meta = json.loads((reference_dir / "dvtms_official_tiny.json").read_text())
    return params, arrays, meta


def test_reference_matches_official_outputs(official_tiny):
    params, data, _ = official_tiny
    exits = official_forward(params, data["input"], depth=2, heads=2, dim_head=32,
                             feature_reuse=True, relation_reuse=True)
    for i, logits in enumerate(exits):
        assert logits.shape == data[f"exit{i}"].shape
        np.testing.assert_allclose(logits, data[f"exit{i}"], rtol=0, atol=1e-4)


def test_reference_is_per_sample(official_tiny):
    """Any batch size: a sample's logits do not depend on the rest of the batch."""
    params, data, _ = official_tiny
    kw = dict(depth=2, heads=2, dim_head=32, feature_reuse=True, relation_reuse=True)
    single = official_forward(params, data["input"][1:], **kw)
    for i, logits in enumerate(single):
        np.testing.assert_allclose(logits[0], data[f"exit{i}"][1], rtol=0, atol=1e-4)


def test_official_shapes_match_the_official_checkpoint(official_tiny):
    params, _, meta = official_tiny
    shapes = official_shapes({**TINY, "feature_reuse": True, "relation_reuse": True})
    assert list(shapes) == list(meta["parameter_shapes"]) == list(params)
    assert shapes == {k: tuple(v) for k, v in meta["parameter_shapes"].items()}


@pytest.mark.parametrize("feature_reuse,relation_reuse", COMBOS)
def test_random_params_give_o1_logits(feature_reuse, relation_reuse):
    config = {**TINY, "depth": 1, "num_classes": 7, "feature_reuse": feature_reuse,
              "relation_reuse": relation_reuse}
    params = random_official_params(config, seed=3)
    assert set(params) == set(official_shapes(config))
    assert all(v.dtype == np.float32 for v in params.values())
    images = np.random.default_rng(0).standard_normal((3, 3, 224, 224)).astype(np.float32)
    kw = dict(depth=1, heads=2, dim_head=32)
    exits = official_forward(params, images, feature_reuse=feature_reuse, relation_reuse=relation_reuse, **kw)
    for logits in exits:
        assert logits.shape == (3, 7)
        assert 0.1 < np.abs(logits).max() < 20
    if relation_reuse:  # switching the relation reuse off changes exit 1 visibly
        plain = official_forward(params, images, feature_reuse=feature_reuse, relation_reuse=False, **kw)
        np.testing.assert_array_equal(plain[0], exits[0])
        assert np.abs(plain[1] - exits[1]).max() > 1e-2


def test_write_official_ckpt_round_trips(tmp_path):
    config = {**TINY, "depth": 1, "feature_reuse": True, "relation_reuse": True}
    params = random_official_params(config, seed=1)
    path = tmp_path / "official.ckpt"
    write_official_ckpt(path, params, optimizer_state=True)
    raw = ms.load_checkpoint(str(path))
    names = set(raw)
    assert {"beta1_power", "beta2_power", "global_step", "learning_rate"} <= names
    assert len(names) == 3 * len(params) + 4
    for k, v in params.items():
        np.testing.assert_array_equal(raw[k].asnumpy(), v)
        assert raw[f"adam_m.{k}"].shape == v.shape
