"""Checks of the plain-PyTorch reference models in ``dvt_ms/reference/torch_models.py``.

The reference models were verified against the official DVT / EViT code (run outside this repository);
these tests pin the facts that verification established: state-dict layouts, full-size parameter
counts, and bit-level agreement with the shared golden files.
"""
import json
import math

import numpy as np
import pytest

TINY = dict(embed_dim=64, depth=2, num_heads=2, mlp_ratio=2.0, num_classes=10)

# (name, builder kwargs, number of state-dict keys, number of values) of the official full-size models
FULL_SIZE = [
    ("DVT DeiT-S", dict(family="deit", embed_dim=384, depth=12, num_heads=6, mlp_ratio=4.0), 608, 70_442_232),
    ("DVT T2T-ViT-12", dict(family="t2t", embed_dim=256, depth=12, num_heads=4, mlp_ratio=2.0), 650, 22_461_516),
    ("DVT T2T-ViT-14", dict(family="t2t", embed_dim=384, depth=14, num_heads=6, mlp_ratio=3.0), 740, 67_881_836),
]


@pytest.fixture(scope="module")
def ref(torch):
    from dvt_ms.reference import torch_models

    return torch_models


def _count(state_dict):
    return len(state_dict), sum(v.numel() for v in state_dict.values())


@pytest.mark.parametrize("name,kwargs,n_keys,n_values", FULL_SIZE, ids=[c[0] for c in FULL_SIZE])
def test_full_size_dvt_layout(torch, ref, name, kwargs, n_keys, n_values):
    kwargs = dict(kwargs)
    family = kwargs.pop("family")
    with torch.device("meta"):
        model = ref.build_dvt(family, **kwargs, num_classes=1000, feature_reuse=True, relation_reuse=True)
    sd = model.state_dict()
    assert _count(sd) == (n_keys, n_values)
    assert {k.split(".")[0] for k in sd} == {"less_less_token", "less_token", "normal_token"}
    # stage 1 never reuses; later stages carry the (misspelt) feature-reuse MLP and the relation conv
    assert not any("feature_resuse_mlp" in k or "relation_reuse_conv" in k for k in sd if k.startswith("less_less"))
    depth, heads = kwargs["depth"], kwargs["num_heads"]
    for stage in ("less_token", "normal_token"):
        assert tuple(sd[f"{stage}.relation_reuse_conv.0.weight"].shape) == (3 * heads * depth, heads * depth, 1, 1)
        assert tuple(sd[f"{stage}.relation_reuse_conv.2.weight"].shape) == (heads * depth, 3 * heads * depth, 1, 1)
        assert tuple(sd[f"{stage}.blocks.0.feature_resuse_mlp.1.fc2.weight"].shape) == (48, 128)
        assert tuple(sd[f"{stage}.blocks.0.norm2.weight"].shape) == (kwargs["embed_dim"] + 48,)
    if family == "t2t":
        for key in ("w", "kqv.weight", "proj.weight", "norm1.weight", "norm2.weight", "mlp.0.weight", "mlp.2.weight"):
            assert f"normal_token.tokens_to_token.attention1.{key}" in sd
        assert "normal_token.blocks.0.attn.qkv.bias" not in sd
        assert tuple(sd["less_token.pos_embed"].shape) == (1, 101, kwargs["embed_dim"])
    else:
        assert tuple(sd["less_token.patch_embed.proj.weight"].shape) == (384, 3, 23, 23)


def test_full_size_deit_and_evit_layout(torch, ref):
    size = dict(embed_dim=384, depth=12, num_heads=6, mlp_ratio=4.0, num_classes=1000)
    with torch.device("meta"):
        deit = ref.build_deit(**size)
        evit = ref.build_evit(**size, keep_rate=0.7, fuse_token=True)
    sd = deit.state_dict()
    assert _count(sd) == (152, 22_050_664)
    assert [(k, tuple(v.shape)) for k, v in sd.items()] == [
        (k, tuple(v.shape)) for k, v in evit.state_dict().items()]
    assert list(sd)[:4] == ["cls_token", "pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias"]
    assert list(sd)[-4:] == ["norm.weight", "norm.bias", "head.weight", "head.bias"]


def test_matches_shared_dvt_deit_tiny_reference(torch, ref, reference_dir):
    meta = json.loads((reference_dir / "dvt_deit_tiny.json").read_text())
    cfg = meta["config"]
    model = ref.build_dvt(cfg["family"], embed_dim=cfg["embed_dim"], depth=cfg["depth"],
                          num_heads=cfg["num_heads"], mlp_ratio=cfg["mlp_ratio"],
                          num_classes=cfg["num_classes"], feature_reuse=cfg["feature_reuse"],
                          relation_reuse=cfg["relation_reuse"], image_size=cfg["image_size"])
    sd = model.state_dict()
    assert [(k, list(v.shape)) for k, v in sd.items()] == list(meta["state_dict_shapes"].items())

    checkpoint = torch.load(reference_dir / "dvt_deit_tiny.pth.tar", map_location="cpu", weights_only=True)
    model.load_state_dict(checkpoint["model_state_dict"], strict=True)
    data = np.load(reference_dir / "dvt_deit_tiny.npz")
    with torch.no_grad():
        exits = model(torch.from_numpy(data["input"]))
    assert len(exits) == 3
    for i, logits in enumerate(exits):
        np.testing.assert_allclose(logits.numpy(), data[f"exit{i}"], rtol=0, atol=1e-5)


@pytest.mark.parametrize("family", ["deit", "t2t"])
def test_randomize_is_seeded_and_spares_fixed_tensors(torch, ref, family):
    def build():
        return ref.build_dvt(family, **TINY, feature_reuse=True, relation_reuse=True)

    a, b, c = build(), build(), build()
    fresh = build().state_dict()
    ref.randomize_(a, 3)
    ref.randomize_(b, 3)
    ref.randomize_(c, 4)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key
        if family == "t2t" and key.endswith("pos_embed"):
            assert torch.equal(sa[key], fresh[key]), key  # sinusoidal table untouched
        else:
            assert not torch.equal(sa[key], sc[key]), key
    if family == "t2t":
        w = sa["normal_token.tokens_to_token.attention1.w"]
        m = w.shape[0]
        assert torch.allclose(w @ w.t(), m * torch.eye(m), atol=1e-3)  # still scaled orthogonal
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for logits in a(x):
            assert 0.1 < logits.std().item() < 10


def test_evit_token_pruning(torch, ref):
    model = ref.build_evit(**TINY, keep_rate=0.7, fuse_token=True, drop_loc=(0, 1))
    ref.randomize_(model, 1)
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits, idxs = model(x, get_idx=True)
        assert logits.shape == (2, 10)
        kept0 = math.ceil(0.7 * 196)
        kept1 = math.ceil(0.7 * (kept0 + 1))  # the fused token counts as a patch afterwards
        assert [tuple(i.shape) for i in idxs] == [(2, kept0), (2, kept1)]
        assert torch.equal(model(x), logits)
        # a runtime rate only applies where the model was built with a rate < 1
        _, idxs = model(x, keep_rate=[0.5, 1.0], get_idx=True)
        assert [tuple(i.shape) for i in idxs] == [(2, 98)]
        _, idxs = model(x, keep_rate=0.999, get_idx=True)  # ceil(0.999 * 196) == 196: no pruning
        assert idxs == []
        deit = ref.build_deit(**TINY)
        deit.load_state_dict(model.state_dict())
        assert torch.equal(deit(x), model(x, keep_rate=1.0))
        _, idxs = deit(x, keep_rate=0.5, get_idx=True)
        assert idxs == []


@pytest.mark.parametrize("legacy", [False, True])
def test_save_official_checkpoint_layouts(torch, ref, tmp_path, legacy):
    dvt = ref.build_dvt("deit", **TINY, feature_reuse=False, relation_reuse=True)
    ref.randomize_(dvt, 0)
    path = tmp_path / "dvt.pth.tar"
    ref.save_official_checkpoint(dvt, path, legacy=legacy, extra=ref.dvt_checkpoint_extras())
    loaded = torch.load(path, map_location="cpu", weights_only=True)
    assert list(loaded) == ["model_state_dict", "flops", "anytime_classification", "dynamic_threshold",
                            "budgeted_batch_classification"]
    assert tuple(loaded["dynamic_threshold"].shape) == (59, 3)
    assert list(loaded["model_state_dict"]) == list(dvt.state_dict())
    assert all(torch.equal(v, dvt.state_dict()[k]) for k, v in loaded["model_state_dict"].items())

    evit = ref.build_evit(**TINY, keep_rate=0.5, fuse_token=False, drop_loc=(1,))
    ref.save_official_checkpoint(evit, tmp_path / "evit.pth", wrapper="model", legacy=legacy)
    assert list(torch.load(tmp_path / "evit.pth", weights_only=True)) == ["model"]
    ref.save_official_checkpoint(evit, tmp_path / "bare.pth", wrapper=None, legacy=legacy)
    assert list(torch.load(tmp_path / "bare.pth", weights_only=True)) == list(evit.state_dict())
