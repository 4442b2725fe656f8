"""The pure parts of the benchmark (dvt_ms.benchmarks): ratios, the target table, precision labels, the
report header, the suite dispatch. The suites themselves time full-size models and are not run here."""
import argparse
import subprocess
import sys

import pytest

from dvt_ms.benchmarks import early_exit, environment, inference, ratios, train
from dvt_ms.benchmarks.timing import Measurement, framework_label
from dvt_ms.benchmarks.torch_baselines import build_torch_model, import_timm_vision_transformer, timm_label, torch_label

from .script_loader import script_env


def _timed(model, framework, batch, times, precision="fp32", macs=1e9, rounds=None):
    m = Measurement(model, framework, batch, lambda: None, macs_per_image=macs, precision=precision)
    m.times = list(times)
    m.round_medians = list(rounds or times)
    return m


def test_ratio_row_takes_medians_rounds_and_best_calls():
    fast = _timed("a", "x", 8, [1.0, 2.0, 3.0], rounds=[1.0, 3.0])
    slow = _timed("b", "y", 8, [2.0, 4.0, 9.0], rounds=[4.0, 3.0])
    row = ratios.ratio_row("k", "a / b", fast, slow, target=1.5)
    assert row["ratio"] == pytest.approx(2.0)  # medians 4 / 2
    assert (row["round_min"], row["round_max"]) == pytest.approx((1.0, 4.0))
    assert row["best_call_ratio"] == pytest.approx(2.0)
    assert row["met"] is True
    assert ratios.ratio_row("k", "b / a", slow, fast, target=1.5)["met"] is False
    assert ratios.ratio_row("k", "b / a", slow, fast, target=None)["met"] is None


def test_targets_of_the_issue():
    assert ratios.target_of("inference", "bf16_ms_over_torch", 8) == 1.2
    assert ratios.target_of("inference", "bf16_ms_over_timm", 8) == 1.2
    assert ratios.target_of("inference", "bf16_cascade_over_torch_cascade", 8) == 1.5
    assert ratios.target_of("inference", "bf16_cascade_over_torch_cascade", 1) is None  # other batch: no target
    assert ratios.target_of("inference", "cascade_over_torch_cascade", 8) is None
    assert ratios.target_of("train", "ms_over_torch", 8) == 1.0
    assert ratios.target_of("train", "bf16_ms_over_torch", 8) == 1.0
    assert ratios.target_of("early_exit", "realized_over_theoretical") == 0.85
    with pytest.raises(KeyError, match="suite 'nope'"):
        ratios.target_of("nope", "ms_over_torch")


def test_every_target_belongs_to_a_ratio_the_suites_compute():
    keys = {"inference": {p.key for p in inference.INFERENCE_PAIRS},
            "train": {p.key for precision in ("fp32", "bf16") for p in train.train_pairs(precision)},
            "early_exit": {"realized_over_theoretical", "evit_over_deit"}}
    for suite, targets in ratios.TARGETS.items():
        assert set(targets) <= keys[suite], suite


def test_inference_ratios_pair_the_official_cascade_in_its_precision():
    rows = [_timed("dvt_deit_small", "mindspore bf16", 8, [1.0], "bf16"),
            _timed("dvt_deit_small", torch_label("bf16"), 8, [3.0], "bf16"),
            _timed("dvt_deit_small", "torch", 8, [2.0]),
            _timed("deit_small", "mindspore bf16", 1, [1.0], "bf16")]
    out = inference.inference_ratios(rows, [1, 8])
    assert [(r["key"], r["batch"]) for r in out] == [("bf16_cascade_over_torch_cascade", 8)]
    assert out[0]["ratio"] == pytest.approx(3.0) and out[0]["target"] == 1.5 and out[0]["met"] is True
    assert "official torch cascade" in out[0]["label"]


def test_inference_ratios_compare_with_timms_own_deit():
    rows = [_timed("deit_small", "mindspore bf16", 8, [1.0], "bf16"),
            _timed("deit_small", timm_label("bf16"), 8, [1.1], "bf16"),
            _timed("deit_small", torch_label("bf16"), 8, [1.3], "bf16")]
    out = {r["key"]: r for r in inference.inference_ratios(rows, [8])}
    assert set(out) == {"bf16_ms_over_torch", "bf16_ms_over_timm"}
    assert out["bf16_ms_over_timm"]["ratio"] == pytest.approx(1.1) and out["bf16_ms_over_timm"]["met"] is False
    assert out["bf16_ms_over_torch"]["ratio"] == pytest.approx(1.3) and out["bf16_ms_over_torch"]["met"] is True
    assert timm_label("bf16") == "timm bf16-autocast"


def test_timm_is_optional():
    """Without timm the helper says so (None); with it, its VisionTransformer is importable without torchvision."""
    module = import_timm_vision_transformer()
    assert module is None or hasattr(module, "VisionTransformer")


def test_train_ratios_in_bf16_compare_with_autocast():
    rows = [_timed("deit_small", framework_label("mindspore", "bf16"), 8, [1.0], "bf16"),
            _timed("deit_small", torch_label("bf16"), 8, [0.9], "bf16"),
            _timed("deit_small", "torch", 8, [0.5])]
    (row,) = train.train_ratios(rows, 8, "bf16")
    assert row["key"] == "bf16_ms_over_torch" and "autocast" in row["label"]
    assert row["ratio"] == pytest.approx(0.9) and row["target"] == 1.0 and row["met"] is False
    assert train.train_ratios(rows, 8, "fp32") == []  # no fp32 MindSpore row


def test_precision_labels_and_mfu_against_the_own_peak():
    assert framework_label("mindspore", "fp32") == "mindspore"
    assert framework_label("mindspore", "bf16") == "mindspore bf16"
    assert (torch_label("fp32"), torch_label("bf16")) == ("torch", "torch bf16-autocast")
    peaks = {"fp32": 100e9, "bf16": 200e9}
    fp32 = _timed("m", "mindspore", 1, [0.1], macs=1e9)
    bf16 = _timed("m", "mindspore bf16", 1, [0.1], "bf16", macs=1e9)
    assert environment.mfu(fp32, peaks) == pytest.approx(0.2)
    assert environment.mfu(bf16, peaks) == pytest.approx(0.1)
    assert environment.mfu(bf16, peaks, passes=3) == pytest.approx(0.3)
    assert environment.mfu(bf16, {"fp32": 100e9}) == pytest.approx(0.2)  # no bf16 peak measured


def test_early_exit_measures_no_dynamic_engine_in_cpu_bf16():
    assert early_exit.engine_modes("fp32", "CPU") == ("dynamic", "buckets")
    assert early_exit.engine_modes("bf16", "CPU") == ("buckets",)
    assert early_exit.engine_modes("bf16", "GPU") == ("dynamic", "buckets")
    assert "float32" in early_exit.NO_DYNAMIC_REASON


def test_cpu_flags_and_the_header_of_every_suite(tmp_path, capsys):
    info = tmp_path / "cpuinfo"
    info.write_text("model name\t: Test CPU\nflags\t\t: fpu avx512f avx512_bf16 sse\n")
    assert environment.cpu_flags(str(info)) == "avx512f yes, avx512_bf16 yes, amx_tile no, amx_bf16 no"
    assert "unknown" in environment.cpu_flags(str(tmp_path / "missing"))
    args = argparse.Namespace(cpu_kernels="off", precision="fp32")
    for suite in ("inference", "early_exit", "train"):
        env = environment.header(suite, "CPU", args)
        assert env["suite"] == suite and env["CPU flags"] == environment.cpu_flags()
    gemms = [_timed("gemm 8^3", "mindspore", 1, [0.5]), _timed("gemm 8^3", "fused bf16", 1, [0.25], "bf16")]
    for g in gemms:
        g.flops_per_call, g.threads_used, g.cpu_over_wall = 1e9, [2], [1.9]
    environment.print_header(env, gemms)
    out = capsys.readouterr().out
    assert "CPU flags: " in out
    assert "fp32 GEMM peak (MS): 2.0 GFLOP/s" in out and "bf16 GEMM peak (fused): 4.0 GFLOP/s" in out


def test_official_torch_cascade_runs_at_its_own_image_size_only(torch):
    with pytest.raises(ValueError, match="image_size 224 only.*got 64"):
        build_torch_model("dvt_deit_small", 64)
    with pytest.raises(ValueError, match="no torch reference for 'evit_deit_small'"):
        build_torch_model("evit_deit_small", 224)


def test_cli_dispatches_the_suites(monkeypatch):
    from dvt_ms.commands import benchmark

    called = []
    for module, name in ((inference, "inference_suite"), (early_exit, "early_exit_suite"), (train, "train_suite")):
        monkeypatch.setattr(module, name, lambda args, device, name=name: called.append((name, args.precision)) or 0)
    assert benchmark.main(["--suite", "all", "--precision", "bf16", "--no_torch"]) == 0
    assert benchmark.main(["--suite", "train"]) == 0
    assert called == [("inference_suite", "bf16"), ("early_exit_suite", "bf16"), ("train_suite", "fp32")]


def test_import_dvt_ms_leaves_torch_and_the_benchmark_alone():
    code = ("import sys, dvt_ms, dvt_ms.commands.benchmark, dvt_ms.benchmarks.inference, dvt_ms.benchmarks.train; "
            "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('dvt_ms.reference')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            env=script_env(GLOG_v="3"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
