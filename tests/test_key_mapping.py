"""The official-to-MindSpore name mapping: a pure function, checked key by key and on full-size models."""
import numpy as np
import pytest

from dvt_ms import create_model
from dvt_ms.checkpoint import map_key, map_state_dict, map_tensor


@pytest.mark.parametrize("official,ours", [
    ("cls_token", "cls_token"),
    ("patch_embed.proj.weight", "tokenizer.proj.weight"),
    ("blocks.3.norm1.weight", "blocks.3.norm1.gamma"),
    ("blocks.3.norm2.bias", "blocks.3.norm2.beta"),
    ("norm.weight", "norm.gamma"),
    ("blocks.0.attn.qkv.weight", "blocks.0.attn.qkv.weight"),
    ("head.bias", "head.bias"),
    ("less_less_token.blocks.0.mlp.fc1.weight", "stages.0.blocks.0.mlp.fc1.weight"),
    ("less_token.blocks.1.feature_resuse_mlp.0.weight", "stages.1.blocks.1.feature_reuse.norm.gamma"),
    ("normal_token.blocks.1.feature_resuse_mlp.1.fc2.bias", "stages.2.blocks.1.feature_reuse.mlp.fc2.bias"),
    ("normal_token.relation_reuse_conv.0.weight", "stages.2.relation_reuse.fc1.weight"),
    ("less_token.relation_reuse_conv.2.bias", "stages.1.relation_reuse.fc2.bias"),
    ("tokens_to_token.attention1.kqv.weight", "tokenizer.attentions.0.kqv.weight"),
    ("tokens_to_token.attention2.norm1.bias", "tokenizer.attentions.1.norm1.beta"),
    ("tokens_to_token.attention2.mlp.0.weight", "tokenizer.attentions.1.mlp.fc1.weight"),
    ("tokens_to_token.attention1.mlp.2.bias", "tokenizer.attentions.0.mlp.fc2.bias"),
    ("tokens_to_token.attention1.w", "tokenizer.attentions.0.random_features"),
    ("normal_token.tokens_to_token.project.weight", "stages.2.tokenizer.project.weight"),
])
def test_map_key(official, ours):
    assert map_key(official) == ours


def test_map_tensor_flattens_convolutions_only():
    conv = np.arange(2 * 3 * 4 * 4, dtype=np.float32).reshape(2, 3, 4, 4)
    flat = map_tensor("tokenizer.proj.weight", conv)
    assert flat.shape == (2, 48)
    np.testing.assert_array_equal(flat[1], conv[1].ravel())
    assert map_tensor("stages.1.relation_reuse.fc1.weight", np.zeros((12, 4, 1, 1))).shape == (12, 4)
    assert map_tensor("blocks.0.attn.qkv.weight", np.zeros((6, 2))).shape == (6, 2)


def test_map_state_dict_rejects_collisions():
    with pytest.raises(ValueError, match="both map to"):
        map_state_dict({"norm.weight": np.zeros(2), "norm.gamma": np.zeros(2)})


def _shape_only(shape):
    return np.lib.stride_tricks.as_strided(np.zeros(1, np.float32), shape, [0] * len(shape))


FULL_SIZE = [
    # model, reference builder, builder kwargs, keys, values
    ("dvt_deit_small", "dvt", dict(family="deit", embed_dim=384, depth=12, num_heads=6, mlp_ratio=4.0),
     608, 70_442_232),
    ("dvt_t2t_vit_12", "dvt", dict(family="t2t", embed_dim=256, depth=12, num_heads=4, mlp_ratio=2.0),
     650, 22_461_516),
    ("dvt_t2t_vit_14", "dvt", dict(family="t2t", embed_dim=384, depth=14, num_heads=6, mlp_ratio=3.0),
     740, 67_881_836),
    ("deit_small", "deit", dict(embed_dim=384, depth=12, num_heads=6, mlp_ratio=4.0), 152, 22_050_664),
    ("evit_deit_small", "evit", dict(embed_dim=384, depth=12, num_heads=6, mlp_ratio=4.0, keep_rate=0.7,
                                     fuse_token=True), 152, 22_050_664),
]


@pytest.mark.parametrize("name,builder,kwargs,n_keys,n_values", FULL_SIZE, ids=[c[0] for c in FULL_SIZE])
def test_full_size_official_state_dict_maps_one_to_one(torch, name, builder, kwargs, n_keys, n_values):
    from dvt_ms.reference import torch_models as torch_reference

    build = getattr(torch_reference, f"build_{builder}")
    extra = dict(feature_reuse=True, relation_reuse=True) if builder == "dvt" else {}
    with torch.device("meta"):
        reference = build(**kwargs, **extra, num_classes=1000)
    official = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    assert len(official) == n_keys
    assert sum(int(np.prod(s)) for s in official.values()) == n_values

    mapped = map_state_dict({k: _shape_only(s) for k, s in official.items()})
    params = {p.name: tuple(p.shape) for p in create_model(name).get_parameters()}
    assert len(params) == n_keys
    assert sum(int(np.prod(s)) for s in params.values()) == n_values
    assert set(mapped) == set(params)
    assert {k: tuple(v.shape) for k, v in mapped.items()} == params
