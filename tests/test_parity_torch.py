"""Parity with PyTorch re-implementations of the official models, loaded through our converter.

dvt_ms/reference/torch_models.py was checked to give the official code's outputs bit for bit; here its
randomly weighted models are saved as official checkpoints, loaded with ``dvt_ms.load_checkpoint`` and
run in GRAPH_MODE.
"""
import mindspore as ms
import numpy as np
import pytest

from dvt_ms import create_model, load_checkpoint

TOLERANCE = 1e-4
TINY = dict(embed_dim=64, depth=2, num_heads=2, mlp_ratio=2.0, num_classes=10)
EVIT_TINY = dict(embed_dim=64, depth=4, num_heads=2, mlp_ratio=2.0, num_classes=10)


@pytest.fixture(scope="module")
def ref(torch):
    from dvt_ms.reference import torch_models as torch_reference

    return torch_reference


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(7).standard_normal((2, 3, 224, 224)).astype(np.float32)


def _torch_outputs(torch, model, images, **kwargs):
    with torch.no_grad():
        out = model(torch.from_numpy(images), **kwargs)
    return out


def _close(actual, expected, what):
    np.testing.assert_allclose(actual.asnumpy(), expected.numpy(), atol=TOLERANCE, rtol=0, err_msg=what)


@pytest.mark.parametrize("family,model_name", [("deit", "dvt_deit_small"), ("t2t", "dvt_t2t_vit_12")])
@pytest.mark.parametrize("feature_reuse", [False, True])
@pytest.mark.parametrize("relation_reuse", [False, True])
def test_dvt_cascade(torch, ref, images, tmp_path, family, model_name, feature_reuse, relation_reuse):
    reuse = dict(feature_reuse=feature_reuse, relation_reuse=relation_reuse)
    reference = ref.build_dvt(family, **TINY, **reuse)
    ref.randomize_(reference, seed=11)
    path = tmp_path / "dvt.pth.tar"
    ref.save_official_checkpoint(reference, path, wrapper="model_state_dict", extra=ref.dvt_checkpoint_extras())
    expected = _torch_outputs(torch, reference, images)

    net = create_model(model_name, **TINY, **reuse)
    metadata = load_checkpoint(net, path)
    assert "dynamic_threshold" in metadata
    net.set_train(False)
    outputs = net(ms.Tensor(images))
    assert len(outputs) == 3
    for i, (out, exp) in enumerate(zip(outputs, expected)):
        _close(out, exp, f"{family} exit {i} reuse={reuse}")


@pytest.mark.parametrize("keep_rate", [0.7, 0.5])
@pytest.mark.parametrize("fuse_token", [True, False])
def test_evit(torch, ref, images, tmp_path, keep_rate, fuse_token):
    evit = dict(keep_rate=keep_rate, fuse_token=fuse_token, drop_loc=(1, 2))
    reference = ref.build_evit(**EVIT_TINY, **evit)
    ref.randomize_(reference, seed=5)
    path = tmp_path / "evit.pth"
    ref.save_official_checkpoint(reference, path, wrapper="model")
    expected_logits, expected_idx = _torch_outputs(torch, reference, images, get_idx=True)

    net = create_model("evit_deit_small", **EVIT_TINY, **evit)
    load_checkpoint(net, path)
    net.set_train(False)
    logits, kept = net(ms.Tensor(images), None, True)
    _close(logits, expected_logits, f"evit {evit}")
    assert len(kept) == len(expected_idx) == 2
    for ours, theirs in zip(kept, expected_idx):
        np.testing.assert_array_equal(ours.asnumpy(), theirs.numpy())


def test_evit_keep_rate_at_call_time(torch, ref, images, tmp_path):
    evit = dict(keep_rate=0.7, fuse_token=True, drop_loc=(1, 2))
    reference = ref.build_evit(**EVIT_TINY, **evit)
    ref.randomize_(reference, seed=6)
    path = tmp_path / "evit.pth"
    ref.save_official_checkpoint(reference, path, wrapper="model")
    net = create_model("evit_deit_small", **EVIT_TINY, **evit)
    load_checkpoint(net, path)
    net.set_train(False)
    expected = _torch_outputs(torch, reference, images, keep_rate=0.4)
    _close(net(ms.Tensor(images), 0.4), expected, "evit keep_rate=0.4 at call time")


@pytest.mark.parametrize("legacy", [False, True])
@pytest.mark.parametrize("wrapper", ["model", None])
def test_deit_formats(torch, ref, images, tmp_path, legacy, wrapper):
    reference = ref.build_deit(**TINY)
    ref.randomize_(reference, seed=3)
    path = tmp_path / "deit.pth"
    ref.save_official_checkpoint(reference, path, wrapper=wrapper, legacy=legacy)
    net = create_model("deit_tiny", **TINY)
    load_checkpoint(net, path)
    net.set_train(False)
    _close(net(ms.Tensor(images)), _torch_outputs(torch, reference, images), f"deit legacy={legacy}")


def test_dvt_t2t_legacy_format(torch, ref, images, tmp_path):
    reference = ref.build_dvt("t2t", **TINY, feature_reuse=True, relation_reuse=True)
    ref.randomize_(reference, seed=13)
    path = tmp_path / "dvt_t2t_legacy.pth.tar"
    ref.save_official_checkpoint(reference, path, legacy=True, extra=ref.dvt_checkpoint_extras())
    net = create_model("dvt_t2t_vit_12", **TINY)
    load_checkpoint(net, path)
    net.set_train(False)
    for i, (out, exp) in enumerate(zip(net(ms.Tensor(images)), _torch_outputs(torch, reference, images))):
        _close(out, exp, f"legacy t2t exit {i}")
