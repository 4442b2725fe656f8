"""The official MindSpore DVT (dvt_mindspore_deit_small): its checkpoints loaded and converted, its outputs
matched at any batch size (the reference file of the official code, and the independent numpy port of its
arithmetic for the other reuse combinations), its layout recognised, and the engine and export on it."""
import json
import logging

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor, nn

from dvt_ms import create_model, load_checkpoint
from dvt_ms.checkpoint import map_mindspore_state_dict, read_checkpoint
from dvt_ms.infer import AdaptiveClassifier, model_from_checkpoint, softmax, thresholds_for_fractions
from dvt_ms.models.variants import MINDSPORE_DVT_OFFICIAL_GFLOPS

from .dvtms_reference import official_forward, official_shapes, random_official_params, write_official_ckpt
from .script_loader import load_script

NAME = "dvt_mindspore_deit_small"
TINY = dict(embed_dim=64, depth=2, num_heads=2, mlp_ratio=2.0, num_classes=10)  # the reference's sizes
ATOL = 1e-4


def oracle_config(feature_reuse, relation_reuse, **sizes):
    sizes = {**TINY, **sizes}
    return dict(embed_dim=sizes["embed_dim"], depth=sizes["depth"], num_heads=sizes["num_heads"],
                mlp_dim=int(sizes["embed_dim"] * sizes["mlp_ratio"]), num_classes=sizes["num_classes"],
                feature_reuse=feature_reuse, relation_reuse=relation_reuse)


def run(net, images):
    net.set_train(False)
    return [o.asnumpy() for o in net(Tensor(np.ascontiguousarray(images, np.float32)))]


@pytest.fixture(scope="module")
def reference(reference_dir):
    data = np.load(reference_dir / "dvtms_official_tiny.npz")
    return dict(ckpt=reference_dir / "dvtms_official_tiny.ckpt", input=data["input"],
                exits=[data["exit0"], data["exit1"]])


@pytest.mark.parametrize("cpu_kernels", ["auto", "off"])
def test_reference_outputs_through_load_checkpoint(reference, cpu_kernels):
    net = create_model(NAME, **TINY, cpu_kernels=cpu_kernels)
    load_checkpoint(net, reference["ckpt"])
    for got, want in zip(run(net, reference["input"]), reference["exits"]):
        np.testing.assert_allclose(got, want, rtol=0, atol=ATOL)


def test_any_batch_size(reference):
    """The official code runs at its training batch (2) only; here batch 1 and 5 give the same rows."""
    net, _ = model_from_checkpoint(reference["ckpt"])
    x = reference["input"]
    one = run(net, x[1:2])
    five = run(net, np.concatenate([x, x, x[:1]]))
    for k in range(2):
        np.testing.assert_allclose(one[k][0], reference["exits"][k][1], rtol=0, atol=ATOL)
        np.testing.assert_allclose(five[k][[0, 1, 2, 3, 4]], reference["exits"][k][[0, 1, 0, 1, 0]], rtol=0, atol=ATOL)


def test_converter_recognises_the_layout_and_the_converted_file_matches(reference, tmp_path, caplog):
    dst = tmp_path / "dvt_ms.ckpt"
    with caplog.at_level(logging.INFO):
        assert load_script("convert_checkpoint").main([str(reference["ckpt"]), str(dst)]) == 0  # no --model
    assert "official MindSpore DVT layout, read as dvt_mindspore_deit_small" in caplog.text
    net, metadata = model_from_checkpoint(dst)
    assert metadata["model"] == NAME and metadata["model_overrides"] == {**TINY}
    assert "flops" not in metadata  # the official exit GFLOPs are those of the DeiT-S sizes only
    for got, want in zip(run(net, reference["input"]), reference["exits"]):
        np.testing.assert_allclose(got, want, rtol=0, atol=ATOL)


@pytest.mark.parametrize("feature_reuse,relation_reuse", [(True, False), (False, True), (False, False), (True, True)])
def test_reuse_combinations_match_the_official_arithmetic(tmp_path, feature_reuse, relation_reuse):
    config = oracle_config(feature_reuse, relation_reuse)
    params = random_official_params(config, seed=11)
    path = tmp_path / "official.ckpt"
    write_official_ckpt(path, params)
    x = np.random.default_rng(3).standard_normal((3, 3, 224, 224)).astype(np.float32)
    expected = official_forward(params, x, depth=2, heads=2, dim_head=32, feature_reuse=feature_reuse,
                                relation_reuse=relation_reuse)
    net = create_model(NAME, **TINY, feature_reuse=feature_reuse, relation_reuse=relation_reuse)
    load_checkpoint(net, path)
    for got, want in zip(run(net, x), expected):
        np.testing.assert_allclose(got, want, rtol=0, atol=ATOL)
    if relation_reuse:  # the heads are read off the relation channels, so the file alone names the model
        named, _ = model_from_checkpoint(path)
        assert named.spec == net.spec


def test_training_checkpoint_optimizer_state_is_skipped_and_counted(tmp_path, caplog):
    config = oracle_config(True, True)
    params = random_official_params(config, seed=2)
    path = tmp_path / "deit_dvt_12_49_196-300_625.ckpt"
    write_official_ckpt(path, params, optimizer_state=True)
    net = create_model(NAME, **TINY)
    with caplog.at_level(logging.INFO):
        load_checkpoint(net, path)
    assert f"; {2 * len(params) + 4} optimizer-state entries skipped" in caplog.text
    x = np.random.default_rng(4).standard_normal((2, 3, 224, 224)).astype(np.float32)
    expected = official_forward(params, x, depth=2, heads=2, dim_head=32, feature_reuse=True, relation_reuse=True)
    for got, want in zip(run(net, x), expected):
        np.testing.assert_allclose(got, want, rtol=0, atol=ATOL)


def test_a_missing_weight_is_still_an_error(tmp_path):
    params = random_official_params(oracle_config(True, True), seed=2)
    del params["normal_token.layers.1.mlp.ff2.dense.bias"]
    path = tmp_path / "broken.ckpt"
    write_official_ckpt(path, params, optimizer_state=True)
    with pytest.raises(Exception, match=r"stages\.1\.blocks\.1\.mlp\.fc2\.bias"):
        load_checkpoint(create_model(NAME, **TINY), path)


def test_full_size_layout_is_the_model(tmp_path):
    shapes = official_shapes(dict(embed_dim=384, depth=12, num_heads=6, mlp_dim=1536, num_classes=1001,
                                  feature_reuse=True, relation_reuse=True))
    assert len(shapes) == 476
    mapped = map_mindspore_state_dict({k: np.zeros(v, np.float32) for k, v in shapes.items()})
    net = create_model(NAME, cpu_kernels="off")
    ours = {p.name: tuple(p.shape) for p in net.get_parameters()}
    assert {k: v.shape for k, v in mapped.items()} == ours
    spec = net.spec
    assert [spec.grid_size(k) for k in range(2)] == [7, 14] and spec.num_classes == 1001
    assert spec.stage_io(1).inputs[2].shape == (None, 72, 50, 50)
    assert net.stages[1].relation_reuse.fc1.weight.shape == (216, 72)
    assert net.stages[1].blocks[0].norm2.gamma.shape == (432,)


def test_official_sizes_carry_the_official_exit_flops(tmp_path):
    shapes = official_shapes(dict(embed_dim=384, depth=12, num_heads=6, mlp_dim=1536, num_classes=1001,
                                  feature_reuse=True, relation_reuse=True))
    path = tmp_path / "full.ckpt"
    write_official_ckpt(path, {k: np.zeros(v, np.float32) for k, v in shapes.items()})
    _, metadata = read_checkpoint(path)
    assert metadata["model"] == NAME and metadata["model_overrides"] == {}
    assert metadata["flops"] == list(MINDSPORE_DVT_OFFICIAL_GFLOPS)


def test_a_file_in_no_known_layout_says_so(tmp_path):
    path = tmp_path / "other.ckpt"
    ms.save_checkpoint([{"name": "encoder.weight", "data": Tensor(np.zeros((2, 2), np.float32))}], str(path))
    with pytest.raises(ValueError, match="does not name its model .*follow no known layout"):
        model_from_checkpoint(path)


def test_numerics_of_the_official_network():
    net = create_model(NAME, **TINY)
    stage = net.spec.stages[1]
    assert stage.gelu == "tanh" and stage.norm_eps == 1e-7 and not stage.feature_reuse_norm
    assert all(b.mlp.act.approximate for b in net.stages[1].blocks) and net.stages[1].relation_reuse.act.approximate
    x = np.random.default_rng(5).standard_normal((2, 3, 224, 224)).astype(np.float32)
    before = run(net, x)
    # the feature-reuse LayerNorm is loaded but not applied: changing it changes nothing
    for block in net.stages[1].blocks:
        block.feature_reuse.norm.gamma.set_data(Tensor(np.full(64, 3.0, np.float32)))
    after = run(net, x)
    np.testing.assert_array_equal(before[1], after[1])


def test_no_gradient_flows_into_the_reused_tokens():
    """Feature reuse only: stage 0 gets no gradient from exit 2 (the official stop_gradient); with relation
    reuse it does, through the relations."""
    x = Tensor(np.random.default_rng(6).standard_normal((2, 3, 224, 224)).astype(np.float32))
    for relation_reuse, flows in ((False, False), (True, True)):
        net = create_model(NAME, **TINY, relation_reuse=relation_reuse)
        net.set_train(True)
        stage0 = [p for p in net.trainable_params() if p.name.startswith("stages.0.")]
        grads = ms.grad(lambda images: net(images)[1].sum(), None, stage0)(x)
        total = float(sum(np.abs(g.asnumpy()).sum() for g in grads))
        assert (total > 0) == flows, (relation_reuse, total)


def test_engine_and_export_on_the_official_network(reference, tmp_path):
    from dvt_ms.export import export_cascade

    net, metadata = model_from_checkpoint(reference["ckpt"])
    x = np.concatenate([reference["input"]] * 3)
    logits = run(net, x)
    thresholds = thresholds_for_fractions(np.stack([softmax(o) for o in logits]), [0.5, 0.5])
    result = AdaptiveClassifier(net, thresholds, buckets=[1, 2, 4])(x, return_logits=True)
    assert result.exit_counts(2).tolist() == [3, 3]
    for i, k in enumerate(result.exits):
        np.testing.assert_allclose(result.logits[i], logits[k][i], rtol=0, atol=1e-5)
    manifest = json.loads(export_cascade(net, tmp_path, metadata=metadata).read_text())
    assert [s["grid_size"] for s in manifest["stages"]] == [7, 14] and manifest["model"] == NAME
    first = nn.GraphCell(ms.load(str(tmp_path / manifest["stages"][0]["file"])))
    second = nn.GraphCell(ms.load(str(tmp_path / manifest["stages"][1]["file"])))
    out0 = first(Tensor(x[:3]))
    out1 = second(Tensor(x[:3]), out0[1], out0[2])
    np.testing.assert_allclose(out1[0].asnumpy() if isinstance(out1, tuple) else out1.asnumpy(), logits[1][:3],
                               rtol=0, atol=ATOL)


def test_eval_from_the_official_file_alone_with_fewer_class_folders_than_outputs(reference, tmp_path, monkeypatch,
                                                                                 caplog):
    """The official network has one output more than the dataset has labels (1001 for ImageNet's 1000):
    eval reads the official .ckpt with no model named, and counts the extra outputs as wrong."""
    from .test_train_cli import make_image_folder

    data = make_image_folder(tmp_path / "data", train_per_class=1, val_per_class=1, size=224,
                             classes=tuple(f"c{i}" for i in range(9)))
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "results.json"
    with caplog.at_level(logging.WARNING):
        status = load_script("eval").main(["--checkpoint", str(reference["ckpt"]), "--data_dir", str(data),
                                           "--output", str(out), "--num_parallel_workers", "1"])
    assert status == 0
    assert "has 9 class folders and the model 10 outputs: outputs 9..9 are no label here" in caplog.text
    results = json.loads(out.read_text())
    assert results["model"] == NAME and results["num_exits"] == 2 and len(results["anytime"]) == 2
