"""The installable package and its commands (issue 11, points 5 and 7): pyproject.toml, one entry point
for every script, one schema and --config for all of them, no sys.path edits."""
import subprocess
import sys
from pathlib import Path

import pytest

from dvt_ms.config import COMMON

from .script_loader import load_script, script_env

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ("train", "eval", "infer", "export", "convert_checkpoint", "visualize", "benchmark")


def _pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib")
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_pyproject_declares_the_package():
    project = _pyproject()
    assert project["project"]["dynamic"] == ["dependencies"]
    assert project["tool"]["setuptools"]["dynamic"]["dependencies"] == {"file": ["requirements.txt"]}
    extras = project["project"]["optional-dependencies"]
    assert "pytest" in extras["test"] and any(r.startswith("torch") for r in extras["test"])
    assert "matplotlib" in extras["plot"]
    assert project["project"]["scripts"] == {"dvt-ms": "dvt_ms.commands:main"}
    assert "*.cc" in project["tool"]["setuptools"]["package-data"]["dvt_ms.kernels"]  # the kernel source ships


def test_no_sys_path_edits():
    needle = "sys.path" + ".insert"
    offenders = [str(p.relative_to(ROOT)) for folder in ("tests", "scripts", "dvt_ms")
                 for p in (ROOT / folder).rglob("*.py") if needle in p.read_text()]
    assert offenders == []


def _schema(name):
    module = load_script(name)
    if name == "train":
        from dvt_ms.config.training import TRAIN_SCHEMA

        return TRAIN_SCHEMA
    if name == "visualize":
        return module.SCHEMAS["exits"]
    return module.SCHEMA


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_script_reads_the_same_schema_and_config_file(name):
    schema = _schema(name)
    assert set(COMMON.names) <= set(schema.names)
    from dvt_ms.config import build_parser

    assert "--config" in build_parser(schema).format_help()


def test_infer_export_convert_take_the_quickstart_config():
    """These three used --set key=value and had no --config."""
    from dvt_ms.config import resolve_config

    config = ROOT / "configs" / "quickstart.yaml"
    infer = resolve_config(load_script("infer").SCHEMA, ["--config", str(config), "--checkpoint", "x.ckpt", "img.png",
                                                         "--model_overrides.depth", "3", "--budget_step", "2"])
    assert infer.inputs == ["img.png"] and infer.model_overrides["depth"] == 3
    assert infer.model_overrides["embed_dim"] == 64 and infer.batch_size == 16  # from the file
    export = resolve_config(load_script("export").SCHEMA, ["--config", str(config), "--checkpoint", "x.ckpt",
                                                           "--export_dir", "out"])
    assert export.export_dir == "out" and export.model == "dvt_deit_small"
    convert = resolve_config(load_script("convert_checkpoint").SCHEMA, ["a.pth", "b.ckpt", "--config", str(config)])
    assert (convert.src, convert.dst, convert.model_overrides["num_classes"]) == ("a.pth", "b.ckpt", 4)


def test_dvt_ms_command_and_script_wrappers(capsys):
    from dvt_ms.commands import COMMANDS, main

    assert set(COMMANDS.values()) >= set(SCRIPTS)
    for module in COMMANDS.values():
        assert (ROOT / "scripts" / f"{module}.py").is_file()
    with pytest.raises(SystemExit) as info:
        main(["evall"])
    assert info.value.code == 2 and "did you mean 'eval'?" in capsys.readouterr().err
    # python scripts/NAME.py still works (here on the package these tests import)
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "export.py"), "--help"], capture_output=True,
                            text=True, timeout=120, env=script_env(GLOG_v="3"))
    assert result.returncode == 0 and "--export_dir" in result.stdout and "--model_overrides" in result.stdout
    result = subprocess.run([sys.executable, "-m", "dvt_ms", "infer", "--checkpoint"], capture_output=True,
                            text=True, timeout=120, env=script_env(GLOG_v="3"), cwd="/")
    assert result.returncode == 2 and "--checkpoint" in result.stderr and "Traceback" not in result.stderr
