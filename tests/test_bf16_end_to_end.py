"""bf16 as a user runs it on CPU: train a small DVT with ``train --precision bf16`` on a shapes ImageFolder
the test writes, then evaluate the checkpoint with ``eval --precision fp32`` and ``--precision bf16``.

The two evaluations agree on at least 99.5% of the top-1 predictions at every exit, and the budgeted
accuracy-vs-GMACs curve (thresholds fitted on the train split) moves by at most 0.5 points at any step.
The same checkpoint through ``eval --cpu_kernels off --precision fp16`` (the GPU/Ascend float16 graph, on
MindSpore's CPU ops) agrees with fp32 on at least 99% of the top-1 predictions at every exit."""
import json

import numpy as np
import pytest
import yaml

from dvt_ms.data.synthetic import make_shapes_dataset
from dvt_ms.kernels import KernelChoice, choice

from .script_loader import load_script

pytestmark = pytest.mark.skipif(not (KernelChoice.resolve("auto", "CPU").available and choice.cpu_supports_bf16()),
                                reason="needs the fused CPU kernels and a CPU with AVX512-BF16 or AMX")

SIZE = 64
#: per class: 4 classes x 100 = 400 val images, so 99.5% allows two disagreements
VAL_PER_CLASS = 100
AGREEMENT = 0.995
#: eval --cpu_kernels off --precision fp16 against fp32 (the issue's bar: 99%, four disagreements of 400)
FP16_AGREEMENT = 0.99
CURVE_POINTS = 0.5


def _config(path, data):
    config = {"model": "dvt_deit_small",
              "model_overrides": {"embed_dim": 48, "depth": 2, "num_heads": 3, "mlp_ratio": 2.0,
                                  "image_size": SIZE, "num_classes": 4},
              "data_dir": str(data), "batch_size": 20, "num_parallel_workers": 1, "epochs": 20, "label_smoothing": 0.0,
              "warmup_epochs": 1, "cooldown_epochs": 0, "lr": 2e-3, "lr_scaling": "none", "min_lr": 1e-4,
              "drop_path": 0.0, "auto_augment": None, "reprob": 0.0, "mixup": 0.0, "cutmix": 0.0,
              "hflip": 0.5, "crop_scale": [0.8, 1.0], "model_ema": False, "log_interval": 20,
              "weight_init": "fan_in", "fit_samples": 400, "budget_steps": 39}
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    work = tmp_path_factory.mktemp("bf16")
    data = make_shapes_dataset(work / "data", num_classes=4, train_per_class=150, val_per_class=VAL_PER_CLASS,
                               image_size=SIZE, hard_fraction=0.25).root
    config = _config(work / "shapes.yaml", data)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(work)  # MindSpore writes compile artefacts into the working directory
        assert load_script("train").main(["--config", str(config), "--precision", "bf16",
                                          "--output_dir", str(work / "run")]) == 0
        results = {}
        for precision, extra in (("fp32", ["--mode", "fit"]), ("bf16", ["--mode", "fit"]),
                                 ("fp16", ["--mode", "anytime", "--cpu_kernels", "off"])):
            out, preds = work / f"results_{precision}.json", work / f"preds_{precision}.npz"
            assert load_script("eval").main([
                "--config", str(config), "--checkpoint", str(work / "run" / "final_weights.ckpt"), *extra,
                "--precision", precision, "--output", str(out), "--predictions", str(preds)]) == 0
            results[precision] = (json.loads(out.read_text()), np.load(preds))
    return work, results


def test_the_run_trained_in_bf16(run):
    work, _ = run
    saved = yaml.safe_load((work / "run" / "config.yaml").read_text())
    assert saved["precision"] == "bf16"
    records = [json.loads(line) for line in (work / "run" / "metrics.jsonl").read_text().splitlines()]
    first, last = records[0]["train_loss"], records[-1]["train_loss"]
    assert sum(last) < 0.8 * sum(first), (first, last)


def test_bf16_and_fp32_agree_at_every_exit(run):
    _, results = run
    (json32, p32), (json16, p16) = results["fp32"], results["bf16"]
    assert (json32["precision"]["used"], json16["precision"]["used"]) == ("fp32", "bf16")
    assert np.array_equal(p32["targets"], p16["targets"]) and p32["targets"].shape == (4 * VAL_PER_CLASS,)
    accuracy = (p32["probs"].argmax(-1) == p32["targets"]).mean(axis=1)
    assert accuracy.min() > 0.6, f"the model did not learn (fp32 accuracy per exit {accuracy})"
    assert not np.array_equal(p32["probs"], p16["probs"]), "bf16 gave the fp32 outputs exactly"
    agreement = (p32["probs"].argmax(-1) == p16["probs"].argmax(-1)).mean(axis=1)
    assert (agreement >= AGREEMENT).all(), f"top-1 agreement per exit {agreement}"
    for a, b in zip(json32["anytime"], json16["anytime"]):
        assert abs(a["top1"] - b["top1"]) <= 100 * (1 - AGREEMENT), (a, b)


def test_the_budgeted_curve_moves_by_at_most_half_a_point(run):
    _, results = run
    curve32, curve16 = results["fp32"][0]["budget"], results["bf16"][0]["budget"]
    assert len(curve32) == len(curve16) == 39
    moved = max(abs(a["accuracy"] - b["accuracy"]) for a, b in zip(curve32, curve16))
    assert moved <= CURVE_POINTS, f"the budgeted curve moved by {moved} points"


def test_the_float16_accelerator_graph_agrees_with_fp32_at_every_exit(run):
    _, results = run
    (json32, p32), (json16, p16) = results["fp32"], results["fp16"]
    assert json16["precision"]["used"] == "fp16" and "fp16" in json16["precision"]["kernels"]
    assert np.array_equal(p32["targets"], p16["targets"])
    assert not np.array_equal(p32["probs"], p16["probs"]), "fp16 gave the fp32 outputs exactly"
    agreement = (p32["probs"].argmax(-1) == p16["probs"].argmax(-1)).mean(axis=1)
    print(f"\nfp16 (cpu_kernels off) vs fp32 top-1 agreement per exit: {agreement.tolist()}")
    assert (agreement >= FP16_AGREEMENT).all(), f"top-1 agreement per exit {agreement}"
