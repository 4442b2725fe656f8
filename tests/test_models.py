"""Model factory, configuration checks and structural facts (no reference outputs needed)."""
import math

import mindspore as ms
import numpy as np
import pytest
from mindspore import nn, ops

from dvt_ms import create_model, list_models
from dvt_ms.layers.activation import GELU
from dvt_ms.layers.resample import grid_resample_matrix, intermediate_size

TINY = dict(embed_dim=64, depth=2, num_heads=2, mlp_ratio=2.0, num_classes=10)
REQUIRED_BY_BRIEF = ["deit_tiny", "deit_small", "deit_base", "t2t_vit_12", "t2t_vit_14", "dvt_deit_small",
                     "dvt_t2t_vit_12", "dvt_t2t_vit_14", "evit_deit_small", "evit_deit_base"]


def test_registry_lists_required_models():
    assert set(REQUIRED_BY_BRIEF) <= set(list_models())
    assert list_models() == sorted(list_models())
    assert list_models("dvt_*") == [name for name in list_models() if name.startswith("dvt_")]


def test_unknown_model_and_override_are_named():
    with pytest.raises(KeyError, match="no_such_model"):
        create_model("no_such_model")
    with pytest.raises(TypeError, match="'keep_rate'"):
        create_model("deit_small", keep_rate=0.7)
    with pytest.raises(TypeError, match="'token_dim'"):
        create_model("dvt_deit_small", token_dim=32)


@pytest.mark.parametrize("overrides,fragment", [
    (dict(embed_dim=65), "divisible by num_heads"),
    (dict(depth=0), "depth must be a positive integer"),
    (dict(drop_path_rate=1.5), "drop_path_rate"),
    (dict(num_classes=-1), "num_classes"),
    (dict(mlp_ratio=0), "mlp_ratio"),
])
def test_bad_values_are_named(overrides, fragment):
    with pytest.raises(ValueError, match=fragment):
        create_model("deit_small", **overrides)


def test_evit_keep_rate_forms():
    net = create_model("evit_deit_small", **{**TINY, "depth": 4}, keep_rate=0.5, drop_loc=[1, 3])
    assert [b.keep_rate for b in net.blocks] == [1.0, 0.5, 1.0, 0.5]
    net = create_model("evit_deit_small", **{**TINY, "depth": 3}, keep_rate=[1, 0.9, 0.6])
    assert [b.keep_rate for b in net.blocks] == [1.0, 0.9, 0.6]
    with pytest.raises(ValueError, match="keep_rate has 2 entries but depth is 3"):
        create_model("evit_deit_small", **{**TINY, "depth": 3}, keep_rate=[1, 0.5])
    with pytest.raises(ValueError, match=r"keep_rate\[1\]"):
        create_model("evit_deit_small", **{**TINY, "depth": 3}, keep_rate=[1, 0, 1])
    with pytest.raises(ValueError, match=r"drop_loc entry 3 is not a layer index in \[0, 3\)"):
        create_model("evit_deit_small", **{**TINY, "depth": 3}, keep_rate=0.7)


@pytest.mark.parametrize("name,grids", [("dvt_deit_small", [7, 10, 14]), ("dvt_t2t_vit_12", [7, 10, 14])])
def test_dvt_grids_are_derived(name, grids):
    net = create_model(name, **TINY)
    assert [stage.grid_size for stage in net.stages] == grids
    assert net.stages[0].relation_reuse is None
    assert net.stages[1].relation_reuse.resample_t.shape == (50, 101)
    assert net.stages[2].blocks[0].feature_reuse.resample.shape == (197, 101)


def test_dvt_follows_image_size():
    net = create_model("dvt_deit_small", **TINY, image_size=160)
    assert [stage.grid_size for stage in net.stages] == [5, 7, 10]
    net.set_train(False)
    outputs = net(ms.Tensor(np.zeros((1, 3, 160, 160), np.float32)))
    assert [o.shape for o in outputs] == [(1, 10)] * 3


def test_resample_intermediate_sizes_are_official():
    assert intermediate_size(7, 10) == 14
    assert intermediate_size(10, 14) == 20
    matrix = grid_resample_matrix(7, 10)
    assert matrix.shape == (100, 49)
    np.testing.assert_allclose(matrix.sum(axis=1), 1.0)


def test_gelu_is_exact_erf():
    x = np.linspace(-8, 8, 20001).astype(np.float32)
    ours = GELU()(ms.Tensor(x)).asnumpy()
    exact = np.array([0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in x.astype(np.float64)])
    assert np.abs(ours - exact).max() < 1e-6
    grad = ms.grad(GELU())(ms.Tensor(x)).asnumpy()
    x64 = x.astype(np.float64)
    exact_grad = np.array([0.5 * (1 + math.erf(v / math.sqrt(2))) for v in x64]) \
        + x64 * np.exp(-0.5 * x64 ** 2) / math.sqrt(2 * math.pi)
    assert np.abs(grad - exact_grad).max() < 1e-6


def test_dvt_returns_every_exit_in_train_mode_and_trains():
    net = create_model("dvt_deit_small", **TINY, drop_path_rate=0.1)
    net.set_train(True)
    images = ms.Tensor(np.random.default_rng(0).standard_normal((2, 3, 224, 224)).astype(np.float32))
    labels = ms.Tensor(np.array([1, 2], np.int32))
    loss_fn = nn.CrossEntropyLoss()

    def forward(x, y):
        return sum(loss_fn(logits, y) for logits in net(x))

    grad_fn = ms.value_and_grad(forward, None, net.trainable_params())
    loss, grads = ms.jit(grad_fn)(images, labels)
    assert np.isfinite(loss.asnumpy())
    assert len(grads) == len(net.trainable_params())
    assert all(np.isfinite(g.asnumpy()).all() for g in grads)
    assert float(ops.stack([g.abs().sum() for g in grads]).sum().asnumpy()) > 0
