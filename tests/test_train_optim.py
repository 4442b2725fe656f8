"""Optimizer grouping and maths, the linear lr scaling rule, the cosine lr and EViT keep-rate schedules."""
import math

import mindspore as ms
import numpy as np
import pytest
from mindspore import nn

from dvt_ms import create_model
from dvt_ms.layers.token_reorganization import kept_token_count, resolve_keep_count
from dvt_ms.train.optim import (AdamW, create_optimizer, optimizer_state_params, param_groups, scaled_lr,
                                split_decay_params)
from dvt_ms.train.schedule import (cosine_lr, evit_keep_rate, keep_rate_at_step, keep_token_counts, lr_at,
                                   quantize_keep_rate)

TINY = dict(embed_dim=64, depth=2, num_heads=2, mlp_ratio=2.0, num_classes=10)
# Two computations of one float32 rate may round one float64 ulp apart (numpy's cos differs between its
# array and scalar paths on some CPUs): equal within two float32 ulps, not bit for bit.
FLOAT32_EPS = 2 * float(np.finfo(np.float32).eps)
NO_DECAY_LEAVES = {"gamma", "beta", "bias", "pos_embed", "cls_token"}


pytestmark = pytest.mark.usefixtures("module_in_tmp_cwd")


class _Small(nn.Cell):
    def __init__(self):
        super().__init__()
        self.fc = nn.Dense(4, 3)
        self.norm = nn.LayerNorm((3,))

    def construct(self, x):
        return self.norm(self.fc(x))


# ------------------------------------------------------------------------------------- grouping
def test_weight_decay_groups_dvt():
    net = create_model("dvt_deit_small", **TINY)
    decay, no_decay = split_decay_params(net)
    decay_names = {p.name for p in decay}
    no_decay_names = {p.name for p in no_decay}
    assert decay_names.isdisjoint(no_decay_names)
    assert decay_names | no_decay_names == {p.name for p in net.trainable_params()}
    for p in decay:
        assert len(p.shape) >= 2 and p.name.rsplit(".", 1)[-1] not in NO_DECAY_LEAVES, p.name
    for p in no_decay:
        assert len(p.shape) <= 1 or p.name.rsplit(".", 1)[-1] in NO_DECAY_LEAVES, p.name
    for stage in range(3):
        assert {f"stages.{stage}.pos_embed", f"stages.{stage}.cls_token", f"stages.{stage}.norm.gamma",
                f"stages.{stage}.norm.beta", f"stages.{stage}.head.bias"} <= no_decay_names
        assert {f"stages.{stage}.blocks.0.attn.qkv.weight", f"stages.{stage}.head.weight"} <= decay_names
    # DVT reuse modules: their matrices decay, their biases and LayerNorms do not
    assert {"stages.1.relation_reuse.fc1.weight", "stages.2.blocks.0.feature_reuse.mlp.fc1.weight"} <= decay_names
    assert {"stages.1.relation_reuse.fc1.bias", "stages.2.blocks.0.feature_reuse.norm.gamma"} <= no_decay_names

    optimizer = create_optimizer(net, lr=1e-3, weight_decay=0.05)
    flags = dict(zip((p.name for p in optimizer.parameters), optimizer.decay_flags))
    assert all(flags[n] for n in decay_names) and not any(flags[n] for n in no_decay_names)
    weight_decays = dict(zip((p.name for p in optimizer.parameters),
                             (float(w.asnumpy()) for w in optimizer.weight_decay)))
    assert all(weight_decays[n] == pytest.approx(0.05) for n in decay_names)
    assert {weight_decays[n] for n in no_decay_names} == {0.0}

    everything = create_optimizer(net, lr=1e-3, weight_decay=0.05, no_decay_norm_bias=False)
    assert {p.name for p in everything.parameters} == decay_names | no_decay_names
    assert all(float(w.asnumpy()) == pytest.approx(0.05) for w in everything.weight_decay)


def test_frozen_parameters_are_not_optimized():
    net = create_model("t2t_vit_12", embed_dim=64, depth=1, num_heads=2, mlp_ratio=2.0, num_classes=10,
                       token_dim=16)
    frozen = {p.name for p in net.get_parameters() if not p.requires_grad}
    assert "pos_embed" in frozen and any("random_features" in n for n in frozen)
    optimizer = create_optimizer(net)
    names = {p.name for p in optimizer.parameters}
    assert names.isdisjoint(frozen)
    assert names == {p.name for p in net.trainable_params()}
    state = {p.name for p in optimizer_state_params(optimizer)}
    assert {"global_step", "adam_updates"} <= state
    assert not any(n.startswith("learning_rate") for n in state)
    assert len([n for n in state if n.startswith("adam_m.")]) == len(names)


def test_empty_group_is_dropped_and_errors_name_the_value():
    groups = param_groups(_Small(), 0.0)
    assert [g["weight_decay"] for g in groups] == [0.0, 0.0]
    with pytest.raises(ValueError, match="unknown optimizer 'lamb'"):
        create_optimizer(_Small(), name="lamb")
    with pytest.raises(ValueError, match="weight_decay"):
        create_optimizer(_Small(), weight_decay=-1.0)
    with pytest.raises(ValueError, match="first at step 2"):
        create_optimizer(_Small(), lr=np.array([1e-3, 1e-3, np.nan], np.float32))
    for name in ("adamweightdecay", "sgd"):
        assert isinstance(create_optimizer(_Small(), name=name), nn.Optimizer)


@pytest.mark.parametrize("cpu_kernels", ["off", "on"])
def test_adamw_matches_torch(torch, cpu_kernels):
    """Both updates (MindSpore's AdamWeightDecay op, and the fused CPU kernel a model on the fused kernels gets)
    follow torch.optim.AdamW over steps with a changing lr, with and without weight decay."""
    net = create_model("deit_small", embed_dim=32, depth=1, num_heads=2, mlp_ratio=2.0, num_classes=5,
                       image_size=32, cpu_kernels=cpu_kernels)
    rng = np.random.default_rng(0)
    for p in net.trainable_params():
        p.set_data(ms.Tensor(rng.standard_normal(p.shape).astype(np.float32)))
    lrs = np.array([1e-2, 2e-2, 3e-2, 3e-2, 1e-2], np.float32)
    optimizer = create_optimizer(net, lr=lrs, weight_decay=0.1)
    assert isinstance(optimizer, AdamW) and optimizer.cpu_kernel == (cpu_kernels == "on")
    ref = {p.name: torch.tensor(p.asnumpy(), requires_grad=True) for p in net.trainable_params()}
    decay, no_decay = split_decay_params(net)
    ref_opt = torch.optim.AdamW([{"params": [ref[p.name] for p in decay], "weight_decay": 0.1},
                                 {"params": [ref[p.name] for p in no_decay], "weight_decay": 0.0}],
                                lr=1e-2, betas=(0.9, 0.999), eps=1e-8)
    start = {p.name: p.asnumpy().copy() for p in net.trainable_params()}
    for lr in lrs:
        grads = [rng.standard_normal(p.shape).astype(np.float32) for p in optimizer.parameters]
        optimizer(tuple(ms.Tensor(g) for g in grads))
        for g, p in zip(grads, optimizer.parameters):
            ref[p.name].grad = torch.tensor(g)
        for group in ref_opt.param_groups:
            group["lr"] = float(lr)
        ref_opt.step()
    for p in net.trainable_params():
        assert np.abs(p.asnumpy() - start[p.name]).max() > 1e-2, f"{p.name} was not updated"
        np.testing.assert_allclose(p.asnumpy(), ref[p.name].detach().numpy(), atol=1e-6, err_msg=p.name)
    state = {p.name: p for p in optimizer_state_params(optimizer)}
    for p in optimizer.parameters:
        torch_state = ref_opt.state[ref[p.name]]
        np.testing.assert_allclose(state[f"adam_m.{p.name}"].asnumpy(), torch_state["exp_avg"].numpy(), atol=1e-6)
        np.testing.assert_allclose(state[f"adam_v.{p.name}"].asnumpy(), torch_state["exp_avg_sq"].numpy(), atol=1e-6)
    assert int(optimizer.global_step.asnumpy()[0]) == len(lrs)


def test_scaled_lr():
    assert scaled_lr(5e-4, 1024, 512) == pytest.approx(1e-3)
    assert scaled_lr(5e-4, 128) == pytest.approx(1.25e-4)
    with pytest.raises(ValueError, match="global_batch"):
        scaled_lr(5e-4, 0, 512)
    with pytest.raises(ValueError, match="reference_batch"):
        scaled_lr(5e-4, 64, 2.5)


# ------------------------------------------------------------------------------------ lr schedule
def test_cosine_lr_key_points():
    base, low, warm, spe = 1e-3, 1e-5, 1e-6, 10
    lr = cosine_lr(base, spe, min_lr=low, warmup_lr=warm, warmup_epochs=20, cooldown_epochs=10, epochs=300)
    assert lr.dtype == np.float32 and lr.shape == ((300 + 10) * spe,)
    assert lr[0] == pytest.approx(warm)
    # linear warmup: t = 19.9 epochs
    assert lr[199] == pytest.approx(warm + 19.9 * (base - warm) / 20, rel=1e-5)
    assert np.all(np.diff(lr[:200]) > 0)
    # end of warmup: the cosine phase counts the warmup epochs (timm warmup_prefix=False)
    assert lr[200] == pytest.approx(low + 0.5 * (base - low) * (1 + math.cos(math.pi * 20 / 300)), rel=1e-5)
    assert lr[200] < base
    assert lr[1500] == pytest.approx((base + low) / 2, rel=1e-5)          # midpoint, t = 150
    assert np.all(np.diff(lr[200:3000]) <= 0)
    assert lr[2999] == pytest.approx(low, rel=1e-3)                        # end of the cosine
    assert np.all(lr[3000:] == np.float32(low))                            # cooldown, flat
    staircase = cosine_lr(base, spe, min_lr=low, warmup_lr=warm, per_epoch=True)
    assert np.all(staircase.reshape(-1, spe) == staircase.reshape(-1, spe)[:, :1])
    assert staircase[1500] == pytest.approx(lr[1500], rel=FLOAT32_EPS)  # np.cos of one value vs an array


def test_cosine_lr_errors_name_the_key():
    with pytest.raises(ValueError, match="warmup_epochs"):
        cosine_lr(1e-3, 10, warmup_epochs=301)
    with pytest.raises(ValueError, match="min_lr"):
        cosine_lr(1e-3, 10, min_lr=1e-2)
    with pytest.raises(ValueError, match="steps_per_epoch"):
        cosine_lr(1e-3, 0)
    with pytest.raises(ValueError, match="past the end"):
        lr_at(3100, 1e-3, 10)


def test_lr_resume_equivalence():
    kwargs = dict(min_lr=1e-5, warmup_lr=1e-6, warmup_epochs=2, cooldown_epochs=1, epochs=6)
    lr = cosine_lr(1e-3, 7, **kwargs)
    for k in (0, 1, 13, 14, 20, 41, 42, 48):
        assert lr_at(k, 1e-3, 7, **kwargs) == pytest.approx(lr[k], rel=FLOAT32_EPS)
    # the optimizer reads lr[global_step]: restoring global_step = k restores the schedule position
    optimizer = create_optimizer(_Small(), lr=lr)
    for k in (0, 13, 42):
        optimizer.global_step.set_data(ms.Tensor([k], ms.int32))
        assert float(optimizer.get_lr().asnumpy()) == lr[k]


# -------------------------------------------------------------------------------- keep-rate schedule
def test_evit_keep_rate_schedule():
    kw = dict(target=0.7, start_epoch=10, end_epoch=110)
    assert evit_keep_rate(0, **kw) == 1.0
    assert evit_keep_rate(9.99, **kw) == 1.0
    assert evit_keep_rate(10, **kw) == pytest.approx(1.0)
    assert evit_keep_rate(35, **kw) == pytest.approx(0.7 + 0.3 * (math.cos(math.pi / 4) + 1) / 2)
    assert evit_keep_rate(60, **kw) == pytest.approx(0.85)
    assert evit_keep_rate(110, **kw) == 0.7
    assert evit_keep_rate(300, **kw) == 0.7
    assert keep_rate_at_step(600, 10, **kw) == evit_keep_rate(60, **kw)
    rates = [evit_keep_rate(e / 4, **kw) for e in range(40, 441)]
    assert all(a >= b for a, b in zip(rates, rates[1:]))
    with pytest.raises(ValueError, match="target"):
        evit_keep_rate(5, target=1.5)


def test_quantized_keep_rates_bound_the_graph_count():
    n = 196
    rates = [keep_rate_at_step(s, 50, target=0.7, start_epoch=10, end_epoch=110) for s in range(0, 6000, 3)]
    for step in (1, 4):
        quantized = [quantize_keep_rate(r, n, step) for r in rates]
        for rate, q in zip(rates, quantized):
            keep = resolve_keep_count(0.7, q, n) or n       # what the model keeps with the quantized rate
            assert keep >= kept_token_count(rate, n)        # never fewer tokens than scheduled
            assert keep - kept_token_count(rate, n) < step
        # one rate per first-block token count, and token counts fix every later block
        assert len(set(quantized)) == len({keep_token_counts(q, n, 3) for q in quantized})
    assert len({quantize_keep_rate(r, n, 1) for r in rates}) == 196 - 138 + 1
    assert len({quantize_keep_rate(r, n, 4) for r in rates}) <= 16
    assert len(set(rates)) > 1000
    assert quantize_keep_rate(1.0, n) == 1.0 and quantize_keep_rate(0.999, n) == 1.0
    assert keep_token_counts(0.7, n, 3) == (138, 98, 70)
    assert keep_token_counts(1.0, n, 3) == (196, 196, 196)
