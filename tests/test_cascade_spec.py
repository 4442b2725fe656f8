"""The cascade as data: spec validation, derived shapes and wiring, cascades of any length with any reuse
edges, and EViT inside DVT stages (against independent compositions)."""
import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor, nn

from dvt_ms import create_model
from dvt_ms.config import model_num_exits
from dvt_ms.flops import count
from dvt_ms.infer import AdaptiveClassifier, softmax, thresholds_for_fractions
from dvt_ms.models import CascadeSpec, PatchTokenizer, StageSpec, model_spec

TINY = dict(embed_dim=32, depth=2, num_heads=2, mlp_ratio=2.0, num_classes=5)
FOUR_STAGES = [{"patch_size": 32}, {"patch_size": 23, "padding": 3}, {"patch_size": 19, "padding": 2},
               {"patch_size": 16}]  # 7x7, 10x10, 12x12, 14x14 tokens at 224 pixels


def images(n, seed=0, size=224):
    return Tensor(np.random.default_rng(seed).standard_normal((n, 3, size, size)).astype(np.float32))


def copy_weights(src: nn.Cell, dst: nn.Cell, prefix: str = "") -> None:
    """Load ``src``'s parameters (those under ``prefix``, with it removed) into ``dst``; every one must be used."""
    weights = {p.name[len(prefix):]: ms.Parameter(Tensor(p.asnumpy()), name=p.name[len(prefix):])
               for p in src.get_parameters() if p.name.startswith(prefix)}
    assert ms.load_param_into_net(dst, weights, strict_load=True) == ([], [])


# ---------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize("stages,message", [
    ([{"patch_size": 32}, {"patch_size": 16, "features_from": 1}],
     r"stages\[1\]\.features_from: 1 is not an earlier stage \(allowed: 0\.\.0\)"),
    ([{"patch_size": 32, "relations_from": 0}, {"patch_size": 16}],
     r"stages\[0\]\.relations_from: 0 is not an earlier stage \(allowed: none"),
    ([{"patch_size": 32}, {"patch_size": 23}],
     r"stages\[1\]\.patch_size: patch_size 23 with padding 0 does not tile a 224-pixel image"),
    ([{"patch_size": 32}, {"patch_size": 16, "keep_rate": [1.0, 1.5]}],
     r"stages\[1\]\.keep_rate\[1\] must be a number in \(0(\.0)?, 1(\.0)?\]"),
    ([{"patch_size": 32}, {"patch_size": 16, "keep_rate": 0.0, "drop_loc": [1]}],
     r"stages\[1\]\.keep_rate\[1\] must be a number in \(0(\.0)?, 1(\.0)?\]"),
    ([{"patch_size": 32, "keep_rate": [0.5, 1.0]}, {"patch_size": 16}],
     r"stages\[0\]\.keep_rate: stage 0 prunes tokens, but stage\(s\) 1 reuse"),
    ([{"patchsize": 32}], r"stages\[0\]: unknown key\(s\) 'patchsize'"),
    ([{}, {}, {}, {}], r"stages\[3\]: give its tokenizer"),
    ([{"patch_size": 32}, {"patch_size": 16, "embed_dim": 30, "num_heads": 4}],
     r"stages\[1\]\.embed_dim \(30\) must be divisible by num_heads \(4\)"),
    ([{"unfolds": [[7, 4, 2]]}], r"stages\[0\]\.unfolds: unfolds needs at least two"),
])
def test_impossible_specs_name_the_stage_and_field(stages, message):
    with pytest.raises(ValueError, match=message):
        model_spec("dvt_deit_small", **TINY, stages=stages)


def test_a_spec_needs_a_stage_and_a_tokenizer():
    with pytest.raises(ValueError, match="at least one stage"):
        CascadeSpec(())
    with pytest.raises(TypeError, match="overrides are not accepted with a CascadeSpec"):
        create_model(CascadeSpec((StageSpec(PatchTokenizer(16)),)), depth=3)


# ---------------------------------------------------------------------------------------------- derived
def test_the_official_cascade_is_three_stages_wired_to_their_predecessor():
    spec = model_spec("dvt_deit_small", **TINY)
    assert [spec.grid_size(k) for k in range(3)] == [7, 10, 14]
    assert [spec.exit_name(k) for k in range(3)] == ["7x7", "10x10", "14x14"]
    io = [spec.stage_io(k, batch=8) for k in range(3)]
    assert [x.input_names for x in io] == [("images",), ("images", "tokens", "relations"),
                                           ("images", "tokens", "relations")]
    assert [x.output_names for x in io] == [("logits", "tokens", "relations"), ("logits", "tokens", "relations"),
                                            ("logits",)]  # the last stage gives nothing: nobody reads it
    assert io[1].inputs[1].shape == (8, 50, 32) and io[1].inputs[1].source == (0, "tokens")
    assert io[2].inputs[2].shape == (8, 4, 101, 101) and io[2].inputs[2].source == (1, "relations")
    assert spec.stage_io(0).inputs[0].shape == (None, 3, 224, 224)
    # what a built stage collects follows the spec
    net = create_model("dvt_deit_small", **TINY)
    assert [s.gives_relations for s in net.stages] == [True, True, False]
    assert net.spec == spec and net.num_exits == 3


@pytest.mark.parametrize("feature_reuse,relation_reuse", [(True, False), (False, True), (False, False)])
def test_reuse_flags_become_edges(feature_reuse, relation_reuse):
    spec = model_spec("dvt_t2t_vit_12", **TINY, feature_reuse=feature_reuse, relation_reuse=relation_reuse)
    assert [s.features_from for s in spec.stages] == ([None, 0, 1] if feature_reuse else [None] * 3)
    assert [s.relations_from for s in spec.stages] == ([None, 0, 1] if relation_reuse else [None] * 3)
    assert [spec.gives_tokens(k) for k in range(3)] == [feature_reuse, feature_reuse, False]


def test_exit_counts_come_from_the_spec_without_building():
    assert model_num_exits("dvt_deit_small") == 3 and model_num_exits("deit_small") == 1
    assert model_num_exits("dvt_deit_small", {"stages": FOUR_STAGES}) == 4
    assert model_num_exits("dvt_t2t_vit_12", {"stages": [{}, {}]}) == 2


# ------------------------------------------------------------------------------ any number of stages
def _engine_matches_cascade(net, x, fractions, shape_mode):
    """Early-exit results with thresholds that send ``fractions`` to each exit; each sample's logits must
    be the full cascade's at the exit it took."""
    logits = [o.asnumpy() for o in net(x)]
    thresholds = thresholds_for_fractions(np.stack([softmax(o) for o in logits]), fractions)
    buckets = [2, 4] if shape_mode == "buckets" else None
    result = AdaptiveClassifier(net, thresholds, shape_mode=shape_mode, buckets=buckets)(x.asnumpy(), return_logits=True)
    for i, k in enumerate(result.exits):
        np.testing.assert_allclose(result.logits[i], logits[k][i], rtol=0, atol=1e-5)
    return result


@pytest.mark.parametrize("stages,grids", [
    ([{"patch_size": 32}, {"patch_size": 16}], [7, 14]),
    (FOUR_STAGES, [7, 10, 12, 14]),
])
def test_cascades_of_two_and_four_stages_run_with_early_exits(stages, grids):
    net = create_model("dvt_deit_small", **TINY, stages=stages)
    net.set_train(False)
    assert [s.grid_size for s in net.stages] == grids and net.num_exits == len(grids)
    x = images(8, seed=1)
    n = len(grids)
    fractions = [2 / 8] * (n - 1) + [1 - 2 * (n - 1) / 8]
    result = _engine_matches_cascade(net, x, fractions, "buckets")
    assert result.exit_counts(n).tolist() == [2] * (n - 1) + [8 - 2 * (n - 1)]
    macs = count(net)
    assert len(macs) == n and all(b > a for a, b in zip(macs, macs[1:]))


def test_reuse_edges_may_skip_stages():
    stages = [{"patch_size": 32}, {"patch_size": 23, "padding": 3, "features_from": None},
              {"patch_size": 16, "features_from": 0, "relations_from": 1}]
    net = create_model("dvt_deit_small", **TINY, stages=stages)
    net.set_train(False)
    spec = net.spec
    assert spec.stage_io(1).input_names == ("images", "relations")
    assert spec.stage_io(0).output_names == ("logits", "tokens", "relations")  # stage 1 takes its relations
    assert spec.stage_io(2).inputs[1].source == (0, "tokens") and spec.stage_io(2).inputs[1].shape[1] == 50
    assert net.stages[2].blocks[0].feature_reuse.resample.shape == (197, 50)
    result = _engine_matches_cascade(net, images(8, seed=2), [0.25, 0.25, 0.5], "dynamic")
    assert result.exit_counts(3).tolist() == [2, 2, 4]


# ------------------------------------------------------------------------------------------ DVT x EViT
EVIT = dict(TINY, depth=4, drop_loc=[1, 3], keep_rate=0.5)


def test_dvt_evit_with_keep_rate_one_is_dvt_deit_small():
    dvt = create_model("dvt_deit_small", **{**TINY, "depth": 4})
    both = create_model("dvt_evit_deit_small", **{**EVIT, "keep_rate": 1.0})
    assert not any(s.prunes for s in both.spec.stages)
    copy_weights(dvt, both)
    for net in (dvt, both):
        net.set_train(False)
    x = images(2, seed=3)
    for a, b in zip(dvt(x), both(x)):
        np.testing.assert_allclose(b.asnumpy(), a.asnumpy(), rtol=0, atol=1e-6)


class _LogitsAndKept(nn.Cell):
    def __init__(self, stage):
        super().__init__(auto_prefix=False)
        self.stage = stage

    def construct(self, x):
        tokens, _, kept = self.stage.forward_features(x)
        return self.stage.head_logits(tokens), tuple(kept)


def test_dvt_evit_last_stage_without_reuse_is_evit_deit_small():
    both = create_model("dvt_evit_deit_small", **EVIT, feature_reuse=False, relation_reuse=False)
    evit = create_model("evit_deit_small", **EVIT)
    assert both.spec.stages[2].keep_rates == evit.spec.stages[0].keep_rates == (1.0, 0.5, 1.0, 0.5)
    copy_weights(both, evit, prefix="stages.2.")
    for net in (both, evit):
        net.set_train(False)
    x = images(3, seed=4)
    logits, kept = _LogitsAndKept(both.stages[2])(x)
    ref_logits, ref_kept = evit(x, None, True)
    np.testing.assert_allclose(logits.asnumpy(), ref_logits.asnumpy(), rtol=0, atol=1e-5)
    assert len(kept) == len(ref_kept) == 2
    for a, b in zip(kept, ref_kept):
        np.testing.assert_array_equal(a.asnumpy(), b.asnumpy())
    np.testing.assert_allclose(both(x)[2].asnumpy(), ref_logits.asnumpy(), rtol=0, atol=1e-5)


def test_a_pruning_stage_that_reuses_runs_in_the_engine_and_counts_fewer_macs():
    both = create_model("dvt_evit_deit_small", **EVIT)
    dvt = create_model("dvt_deit_small", **{**TINY, "depth": 4})
    assert both.spec.stages[2].prunes and both.spec.stages[2].features_from == 1
    assert both.spec.block_tokens(2) == [197, 100, 100, 52]  # 1 + ceil(196 / 2) + fused; 1 + ceil(99 / 2) + 1
    macs, full = count(both), count(dvt)
    assert macs[:2] == full[:2] and macs[2] < full[2]
    both.set_train(False)
    x = images(8, seed=5)
    for mode in ("buckets", "dynamic"):
        result = _engine_matches_cascade(both, x, [0.25, 0.25, 0.5], mode)
        assert result.exit_counts(3).tolist() == [2, 2, 4]


@pytest.mark.parametrize("fuse", [False, True])
def test_reused_inputs_follow_the_kept_tokens(fuse):
    """A pruning stage's reused inputs follow its tokens: after two reorganizations they must equal ``M @ F``
    and ``M @ B @ M.T`` for the matrix ``M`` [n_now, n_full] that maps the original tokens to the current
    ones (one-hot rows for the class token and the kept tokens, the fusion weights for the fused token)."""
    from dvt_ms.layers.token_reorganization import follow_rows, follow_rows_and_columns, select_tokens

    rng = np.random.default_rng(6)
    n, keep1, keep2 = 11, 6, 3
    probs1 = Tensor(rng.dirichlet(np.ones(n), size=(2, 3, n)).astype(np.float32))
    kept1, w1 = select_tokens(probs1, keep1, fuse)
    n1 = 1 + keep1 + fuse
    probs2 = Tensor(rng.dirichlet(np.ones(n1), size=(2, 3, n1)).astype(np.float32))
    kept2, w2 = select_tokens(probs2, keep2, fuse)
    selections = ((kept1, w1), (kept2, w2))

    def step_matrix(kept, weights, size):
        kept, rows = kept.asnumpy(), []
        for b in range(kept.shape[0]):
            m = np.zeros((1 + kept.shape[1] + fuse, size))
            m[0, 0] = 1
            m[np.arange(1, 1 + kept.shape[1]), 1 + kept[b]] = 1
            if fuse:
                m[-1, 1:] = weights.asnumpy()[b]
            rows.append(m)
        return np.stack(rows)

    m = step_matrix(kept2, w2, n1) @ step_matrix(kept1, w1, n)
    features = rng.standard_normal((2, n, 4)).astype(np.float32)
    bias = rng.standard_normal((2, 3, n, n)).astype(np.float32)
    np.testing.assert_allclose(follow_rows(Tensor(features), selections).asnumpy(), m @ features, atol=1e-6)
    expected = m[:, None] @ bias @ m[:, None].swapaxes(-1, -2)
    np.testing.assert_allclose(follow_rows_and_columns(Tensor(bias), selections).asnumpy(), expected, atol=1e-5)
