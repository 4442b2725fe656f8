"""Official MindSpore DVT checkpoints: key mapping, layout detection, optimizer state, loading."""
import json
import logging

import mindspore as ms
import numpy as np
import pytest

from dvt_ms.checkpoint import (CheckpointError, CheckpointMismatchError, checkpoint_entries, detect_layout,
                               load_checkpoint, map_mindspore_key, map_mindspore_state_dict, read_checkpoint)
from dvt_ms.layers import Attention, PatchEmbed
from dvt_ms import create_model
from tests.dvtms_reference import official_shapes, random_official_params, write_official_ckpt

DEIT_S = dict(embed_dim=384, depth=12, num_heads=6, dim_head=64, mlp_dim=1536, num_classes=1001)
TINY = dict(embed_dim=64, depth=2, num_heads=2, dim_head=32, mlp_dim=128, num_classes=10)
COMBOS = {"w_f_w_r": (True, True), "w_f_n_r": (True, False), "n_f_w_r": (False, True), "n_f_n_r": (False, False)}
DEIT_S_COUNTS = {"w_f_w_r": 476, "w_f_n_r": 472, "n_f_w_r": 404, "n_f_n_r": 400}


def _shape_only(shape):
    return np.lib.stride_tricks.as_strided(np.zeros(1, np.float32), shape, [0] * len(shape))


def _expected_ours(c, depth, heads, mlp, classes, feature, relation, grids=(7, 14)):
    """This project's names and shapes, written from the mapping rules (not from the mapping code)."""
    out = {}
    for s, (g, p) in enumerate(zip(grids, (32, 16))):
        pre = f"stages.{s}."
        out[pre + "cls_token"] = (1, 1, c)
        out[pre + "pos_embed"] = (1, g * g + 1, c)
        out[pre + "tokenizer.proj.weight"] = (c, 3 * p * p)
        out[pre + "tokenizer.proj.bias"] = (c,)
        reuse = 48 if feature and s == 1 else 0
        for i in range(depth):
            b = f"{pre}blocks.{i}."
            out[b + "norm1.gamma"] = out[b + "norm1.beta"] = (c,)
            out[b + "attn.qkv.weight"] = (3 * c, c)
            out[b + "attn.qkv.bias"] = (3 * c,)
            out[b + "attn.proj.weight"] = (c, c)
            out[b + "attn.proj.bias"] = (c,)
            out[b + "norm2.gamma"] = out[b + "norm2.beta"] = (c + reuse,)
            out[b + "mlp.fc1.weight"] = (mlp, c + reuse)
            out[b + "mlp.fc1.bias"] = (mlp,)
            out[b + "mlp.fc2.weight"] = (c, mlp)
            out[b + "mlp.fc2.bias"] = (c,)
            if reuse:
                out[b + "feature_reuse.norm.gamma"] = out[b + "feature_reuse.norm.beta"] = (c,)
                out[b + "feature_reuse.mlp.fc1.weight"] = (128, c)
                out[b + "feature_reuse.mlp.fc1.bias"] = (128,)
                out[b + "feature_reuse.mlp.fc2.weight"] = (48, 128)
                out[b + "feature_reuse.mlp.fc2.bias"] = (48,)
        out[pre + "norm.gamma"] = out[pre + "norm.beta"] = (c,)
        out[pre + "head.weight"] = (classes, c)
        out[pre + "head.bias"] = (classes,)
        if relation and s == 1:
            ch = depth * heads
            out[pre + "relation_reuse.fc1.weight"] = (3 * ch, ch)
            out[pre + "relation_reuse.fc1.bias"] = (3 * ch,)
            out[pre + "relation_reuse.fc2.weight"] = (ch, 3 * ch)
            out[pre + "relation_reuse.fc2.bias"] = (ch,)
    return out


@pytest.mark.parametrize("official,ours", [
    ("less_token.cls_token", "stages.0.cls_token"),
    ("normal_token.pos_embedding", "stages.1.pos_embed"),
    ("less_token.stem.patch_to_embedding.dense.weight", "stages.0.tokenizer.proj.weight"),
    ("normal_token.layers.3.norm1.gamma", "stages.1.blocks.3.norm1.gamma"),
    ("normal_token.layers.3.norm2.beta", "stages.1.blocks.3.norm2.beta"),
    ("less_token.layers.0.attn.to_q.weight", "stages.0.blocks.0.attn.qkv.weight"),
    ("less_token.layers.0.attn.to_v.bias", "stages.0.blocks.0.attn.qkv.bias"),
    ("less_token.layers.11.attn.to_out.weight", "stages.0.blocks.11.attn.proj.weight"),
    ("less_token.layers.1.mlp.ff1.dense.weight", "stages.0.blocks.1.mlp.fc1.weight"),
    ("less_token.layers.1.mlp.ff2.dense.bias", "stages.0.blocks.1.mlp.fc2.bias"),
    ("normal_token.layers.3.feature_resuse_mlp.norm1.gamma", "stages.1.blocks.3.feature_reuse.norm.gamma"),
    ("normal_token.layers.3.feature_resuse_mlp.ff1.dense.weight", "stages.1.blocks.3.feature_reuse.mlp.fc1.weight"),
    ("normal_token.layers.3.feature_resuse_mlp.ff2.dense.bias", "stages.1.blocks.3.feature_reuse.mlp.fc2.bias"),
    ("normal_token.relation_reuse_conv.0.weight", "stages.1.relation_reuse.fc1.weight"),
    ("normal_token.relation_reuse_conv.2.bias", "stages.1.relation_reuse.fc2.bias"),
    ("normal_token.norm.gamma", "stages.1.norm.gamma"),
    ("normal_token.head.0.weight", "stages.1.head.weight"),
])
def test_map_mindspore_key(official, ours):
    assert map_mindspore_key(official) == ours


@pytest.mark.parametrize("combo", COMBOS)
def test_full_size_layouts_map_one_to_one(combo):
    feature, relation = COMBOS[combo]
    official = official_shapes({**DEIT_S, "feature_reuse": feature, "relation_reuse": relation})
    assert len(official) == DEIT_S_COUNTS[combo]
    assert detect_layout(official) == "mindspore_official"
    mapped = map_mindspore_state_dict({k: _shape_only(s) for k, s in official.items()})
    expected = _expected_ours(384, 12, 6, 1536, 1001, feature, relation)
    assert {k: tuple(v.shape) for k, v in mapped.items()} == expected
    # every official value lands somewhere: 3 q/k/v tensors merge into one per layer and leaf
    assert len(mapped) == len(official) - 2 * 2 * 12 * 2
    assert sum(v.size for v in mapped.values()) == sum(int(np.prod(s)) for s in official.values())


@pytest.mark.parametrize("combo", COMBOS)
def test_mapped_names_are_the_models_parameters(combo):
    """The mapped tiny layout loads into this project's two-exit DVT (names and shapes, strictly)."""
    feature, relation = COMBOS[combo]
    config = {**TINY, "feature_reuse": feature, "relation_reuse": relation}
    mapped = map_mindspore_state_dict(random_official_params(config, seed=0))
    net = create_model("dvt_mindspore_deit_small", feature_reuse=feature, relation_reuse=relation,
                       embed_dim=64, depth=2, num_heads=2, mlp_ratio=2.0, num_classes=10)
    params = {p.name: tuple(p.shape) for p in net.get_parameters()}
    assert {k: tuple(v.shape) for k, v in mapped.items()} == params


def test_qkv_merge_is_the_per_head_split(official_tiny_params):
    """Our fused qkv, cut as reshape(b, n, 3, heads, head_dim), equals official to_q/to_k/to_v per head."""
    params = official_tiny_params
    mapped = map_mindspore_state_dict(params)
    x = np.random.default_rng(0).standard_normal((2, 5, 64)).astype(np.float32)
    pre = "less_token.layers.1.attn."
    ours = x @ mapped["stages.0.blocks.1.attn.qkv.weight"].T + mapped["stages.0.blocks.1.attn.qkv.bias"]
    ours = ours.reshape(2, 5, 3, 2, 32).transpose(2, 0, 3, 1, 4)
    for s, part in enumerate("qkv"):
        theirs = x @ params[pre + f"to_{part}.weight"].T + params[pre + f"to_{part}.bias"]
        np.testing.assert_allclose(ours[s], theirs.reshape(2, 5, 2, 32).transpose(0, 2, 1, 3), atol=1e-5)


def test_attention_layer_with_mapped_weights_matches_official_arithmetic(official_tiny_params):
    params = official_tiny_params
    mapped = map_mindspore_state_dict(params)
    attn = Attention(64, 2, qkv_bias=True)
    for dense in (attn.qkv, attn.proj):
        for param in (dense.weight, dense.bias):
            param.set_data(ms.Tensor(mapped[f"stages.1.blocks.0.attn.{param.name}"]))
    x = np.random.default_rng(1).standard_normal((2, 197, 64)).astype(np.float32)
    out, logits, _ = attn(ms.Tensor(x))
    pre = "normal_token.layers.0.attn."
    q, k, v = (
        (x @ params[pre + f"to_{p}.weight"].T + params[pre + f"to_{p}.bias"]).reshape(2, 197, 2, 32)
        .transpose(0, 2, 1, 3).astype(np.float64) for p in "qkv")
    ref_logits = (q @ k.transpose(0, 1, 3, 2)) * 32 ** -0.5  # official: scale after q @ k^T
    probs = np.exp(ref_logits - ref_logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    ref_out = (probs @ v).transpose(0, 2, 1, 3).reshape(2, 197, 64) @ params[pre + "to_out.weight"].T
    ref_out += params[pre + "to_out.bias"]
    np.testing.assert_allclose(logits.asnumpy(), ref_logits, atol=1e-4)
    np.testing.assert_allclose(out.asnumpy(), ref_out, atol=1e-4)


def test_patch_embedding_with_mapped_weights_matches_official_stem(official_tiny_params):
    """Official patches are flattened (channel, row, column), as ours: the weight is taken unpermuted."""
    params = official_tiny_params
    mapped = map_mindspore_state_dict(params)
    embed = PatchEmbed(224, 32, 64)
    embed.proj.weight.set_data(ms.Tensor(mapped["stages.0.tokenizer.proj.weight"]))
    embed.proj.bias.set_data(ms.Tensor(mapped["stages.0.tokenizer.proj.bias"]))
    img = np.random.default_rng(2).standard_normal((1, 3, 224, 224)).astype(np.float32)
    # the official stem, written out: patch (i, j) is img[:, :, 32i:32i+32, 32j:32j+32] flattened c, row, col
    patches = np.stack([img[0, :, 32 * i:32 * i + 32, 32 * j:32 * j + 32].reshape(-1)
                        for i in range(7) for j in range(7)])
    stem = "less_token.stem.patch_to_embedding.dense."
    w, b = params[stem + "weight"], params[stem + "bias"]
    np.testing.assert_allclose(embed(ms.Tensor(img)).asnumpy()[0], patches @ w.T + b, atol=1e-4)


def test_relation_convolutions_become_channel_matrices(official_tiny_params):
    params = official_tiny_params
    mapped = map_mindspore_state_dict(params)
    conv = params["normal_token.relation_reuse_conv.0.weight"]
    r = np.random.default_rng(3).standard_normal((2, 4, 50 * 50)).astype(np.float32)
    np.testing.assert_allclose(mapped["stages.1.relation_reuse.fc1.weight"] @ r,
                               np.einsum("oihw,bim->bom", conv, r), atol=1e-5)


@pytest.fixture(scope="module")
def official_tiny_params(reference_dir):
    raw = ms.load_checkpoint(str(reference_dir / "dvtms_official_tiny.ckpt"))
    return {k: v.asnumpy() for k, v in raw.items()}


def test_map_errors_name_the_keys():
    params = random_official_params({**TINY, "depth": 1, "feature_reuse": False, "relation_reuse": True}, 0)
    no_k = {k: v for k, v in params.items() if k != "normal_token.layers.0.attn.to_k.weight"}
    with pytest.raises(ValueError, match=r"normal_token.layers.0.attn.to_q.weight.*no matching to_k"):
        map_mindspore_state_dict(no_k)
    bad = dict(params)
    bad["less_token.layers.0.attn.to_v.bias"] = np.zeros(3, np.float32)
    with pytest.raises(ValueError, match=r"must have one shape.*less_token.layers.0.attn.to_v.bias \(3,\)"):
        map_mindspore_state_dict(bad)
    bad = dict(params)
    bad["normal_token.relation_reuse_conv.0.weight"] = np.zeros((6, 2, 3, 3), np.float32)
    with pytest.raises(ValueError, match=r"relation_reuse_conv.0.weight: .* 1x1"):
        map_mindspore_state_dict(bad)


def test_official_optimizer_state_is_sorted_out():
    official = list(official_shapes({**TINY, "depth": 1, "feature_reuse": True, "relation_reuse": True}))
    state = (["adam_m." + k for k in official] + ["adam_v." + k for k in official]
             + ["beta1_power", "beta2_power", "global_step", "learning_rate"])
    roles = checkpoint_entries(official + state)
    assert roles.kind == "mindspore_official" and roles.model == tuple(official) and roles.ema == ()
    assert sorted(roles.optimizer) == sorted(state)
    assert roles.select("model") == {k: k for k in official}
    with pytest.raises(ValueError, match=r"no EMA weights .* an official MindSpore DVT checkpoint \(\d+ model "
                                         r"weights, \d+ optimizer-state entries\)"):
        roles.select("model_ema")


def test_detect_layout(reference_dir):
    meta = json.loads((reference_dir / "dvtms_official_tiny.json").read_text())
    assert detect_layout(meta["parameter_shapes"]) == "mindspore_official"
    torch_meta = json.loads((reference_dir / "dvt_deit_tiny.json").read_text())
    assert detect_layout(torch_meta["state_dict_shapes"]) == "pytorch_official"
    ours = list(_expected_ours(64, 2, 2, 128, 10, True, True))
    assert detect_layout(ours) == "dvt_ms"
    assert detect_layout(ours + ["optimizer." + k for k in ours] + ["ema." + k for k in ours]) == "dvt_ms"
    assert detect_layout(["adam_m." + k for k in meta["parameter_shapes"]] + list(meta["parameter_shapes"])
                         + ["global_step"]) == "mindspore_official"
    with pytest.raises(ValueError, match="no known layout.*fc.weight"):
        detect_layout(["fc.weight", "fc.bias"])
    with pytest.raises(ValueError, match="mix layouts"):
        detect_layout(ours + list(meta["parameter_shapes"]))


def test_training_checkpoint_loads_with_optimizer_state_skipped(tmp_path, caplog):
    config = {**TINY, "depth": 1, "feature_reuse": True, "relation_reuse": False}
    params = random_official_params(config, seed=5)
    path = tmp_path / "deit_dvt_12_49_196-300_625.ckpt"
    write_official_ckpt(path, params, optimizer_state=True)
    with caplog.at_level(logging.INFO, logger="dvt_ms.checkpoint.loader"):
        weights, _ = read_checkpoint(path)
    assert [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()] == [
        f"{path}: an official MindSpore DVT checkpoint ({len(params)} model weights, {2 * len(params) + 4} "
        f"optimizer-state entries): loading the model weights; {2 * len(params) + 4} optimizer-state entries skipped"]
    expected = map_mindspore_state_dict(params)
    assert set(weights) == set(expected)
    for k, v in expected.items():
        np.testing.assert_array_equal(weights[k], v)

    net = create_model("dvt_mindspore_deit_small", feature_reuse=True, relation_reuse=False,
                       embed_dim=64, depth=1, num_heads=2, mlp_ratio=2.0, num_classes=10)
    load_checkpoint(net, path)
    for p in net.get_parameters():
        np.testing.assert_array_equal(p.asnumpy(), expected[p.name])


def test_loading_stays_strict(tmp_path):
    config = {**TINY, "depth": 1, "feature_reuse": False, "relation_reuse": True}
    params = random_official_params(config, seed=6)
    del params["normal_token.head.0.bias"]
    params["normal_token.norm.gamma"] = np.ones(65, np.float32)
    params["normal_token.extra"] = np.ones(2, np.float32)
    path = tmp_path / "broken.ckpt"
    write_official_ckpt(path, params, optimizer_state=True)
    net = create_model("dvt_mindspore_deit_small", feature_reuse=False, relation_reuse=True,
                       embed_dim=64, depth=1, num_heads=2, mlp_ratio=2.0, num_classes=10)
    with pytest.raises(CheckpointMismatchError) as info:
        load_checkpoint(net, path)
    message = str(info.value)
    assert "broken.ckpt" in message
    assert "1 missing key(s)" in message and "stages.1.head.bias" in message
    assert "1 unexpected key(s)" in message and "stages.1.extra" in message
    assert "stages.1.norm.gamma: checkpoint (65,) vs model (64,)" in message
    assert "adam_" not in message and "global_step" not in message

    no_q = random_official_params(config, seed=6)
    del no_q["less_token.layers.0.attn.to_q.bias"]
    write_official_ckpt(path, no_q)
    with pytest.raises(CheckpointError, match=r"broken.ckpt: .*to_k.bias.*no matching to_q"):
        load_checkpoint(net, path)
