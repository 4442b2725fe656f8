"""Tests of dvt_ms.config: schema -> flags, YAML + command line, validation errors, saving."""
from pathlib import Path

import pytest
import yaml

from dvt_ms.config import (
    COMMON,
    EVAL,
    ConfigError,
    Option,
    Schema,
    build_parser,
    load_config_file,
    resolve_config,
    save_config,
    validate_config,
)

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = COMMON + EVAL


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.fixture
def tiny_yaml(tmp_path):
    return write(tmp_path / "tiny.yaml", "model: dvt_deit_small\n"
                 "model_overrides: {embed_dim: 64, depth: 2, num_heads: 2, num_classes: 10}\n"
                 "batch_size: 8\nmode: fit\n")


def test_precedence_default_file_command_line(tiny_yaml):
    config = resolve_config(SCHEMA, ["--config", str(tiny_yaml), "--batch_size", "4", "--verbose",
                                     "--crop_pct", "1"])
    assert config.batch_size == 4 and config.sources["batch_size"] == "command line"
    assert config.mode == "fit" and config.sources["mode"] == str(tiny_yaml)
    assert config.model_overrides == {"embed_dim": 64, "depth": 2, "num_heads": 2, "num_classes": 10}
    assert config.seed == 0 and config.sources.get("seed", "default") == "default"
    assert config.verbose is True
    assert config.crop_pct == 1.0 and isinstance(config.crop_pct, float)
    assert config["fit_samples"] == 50000
    assert list(config.to_dict()) == list(SCHEMA.names)
    with pytest.raises(AttributeError):
        config.batch_size = 3


def test_command_line_only_and_special_values(tmp_path):
    config = resolve_config(SCHEMA, ["--model", "deit_small", "--model_overrides", "{num_classes: 5}",
                                     "--verbose", "false", "--output", "null", "--plot", "c.png"])
    assert config.model == "deit_small" and config.model_overrides == {"num_classes": 5}
    assert config.verbose is False and config.output is None and config.plot == "c.png"
    assert config.config_file is None


@pytest.mark.parametrize("text, message", [
    ("model: deit_small\nbatch_sise: 3\n", "unknown key(s) 'batch_sise' (did you mean 'batch_size'?)"),
    ("model: deit_small\nbatch_size: abc\n", "batch_size: expected an integer, got str 'abc'"),
    ("model: deit_small\nbatch_size: 2.5\n", "batch_size: expected an integer"),
    ("model: deit_small\nbatch_size: true\n", "batch_size: expected an integer"),
    ("model: deit_small\nbatch_size: 0\n", "batch_size: must be > 0, got 0"),
    ("model: deit_small\ncrop_pct: 1.5\n", "crop_pct: must be in (0, 1], got 1.5"),
    ("model: deit_small\ndevice_target: TPU\n", "device_target: 'TPU' is not one of auto, CPU, GPU, Ascend"),
    ("model: deit_smal\n", "model: unknown model 'deit_smal' (did you mean 'deit_small'?)"),
    ("model: deit_small\nmodel_overrides: {num_clases: 3}\n",
     "model_overrides: unknown key(s) 'num_clases' (did you mean 'num_classes'?) for model 'deit_small'"),
    ("model: deit_small\nmodel_overrides: [1, 2]\n", "model_overrides: expected a mapping"),
    ("model: deit_small\nverbose: maybe\n", "verbose: expected true or false"),
    ("model: deit_small\nplot: curve.jpg\n", "plot must end in .png, .pdf or .svg"),
    ("- model\n", "expected a mapping of key: value at the top level"),
    ("model: [deit_small\n", "not valid YAML (line 2"),
])
def test_file_errors_name_the_file_and_key(tmp_path, text, message):
    path = write(tmp_path / "bad.yaml", text)
    with pytest.raises(ConfigError) as info:
        resolve_config(SCHEMA, ["--config", str(path)])
    assert message in str(info.value)
    if "missing required" not in message:
        assert str(path) in str(info.value)


@pytest.mark.parametrize("argv, message", [
    (["--batch_size", "x"], "--batch_size: expected an integer, got 'x'"),
    (["--batch_size", "-1"], "--batch_size: must be > 0, got -1"),
    (["--fit_samples", "0"], "--fit_samples: must be > 0"),
    (["--seed", "-3"], "--seed: must be >= 0"),
    (["--crop_pct", "nan"], "--crop_pct: expected a finite number"),
    (["--model_overrides", "{a: [1"], "--model_overrides: cannot parse"),
    (["--ms_mode", "eager"], "--ms_mode: 'eager' is not one of graph, pynative"),
    (["--mode", "budget"], "--mode: 'budget' is not one of anytime, saved, saved-thresholds, fit"),
])
def test_command_line_errors_name_the_flag(argv, message):
    with pytest.raises(ConfigError) as info:
        resolve_config(SCHEMA, ["--model", "deit_small"] + argv)
    assert message in str(info.value)


@pytest.mark.parametrize("argv, message", [
    (["--bogus", "1"], "unknown flag(s) --bogus"),
    (["--crop_pc", "0.9"], "--crop_pc (did you mean 'crop_pct'?)"),  # no abbreviations either
    (["--crop", "0.9"], "unknown flag(s) --crop"),
    (["--model_overides.depth", "2"], "'model_overides' is not a mapping key (did you mean 'model_overrides'?)"),
    (["--model_overrides.num_clases", "3"], "unknown key(s) 'num_clases' (did you mean 'num_classes'?)"),
    (["--model_overrides.depth"], "--model_overrides.depth: expected a value"),
])
def test_unknown_flags_are_refused_with_a_suggestion(argv, message):
    with pytest.raises(ConfigError) as info:
        resolve_config(SCHEMA, ["--model", "deit_small"] + argv)
    assert message in str(info.value)


QUICKSTART = ROOT / "configs" / "quickstart.yaml"


def test_num_classes_flag_beats_the_files_model_overrides(tmp_path):
    """Issue 11, point 1: --num_classes with the quickstart config was refused."""
    from dvt_ms.config.training import TRAIN_SCHEMA

    config = resolve_config(TRAIN_SCHEMA, ["--config", str(QUICKSTART), "--num_classes", "10"])
    assert config.num_classes == 10 and config.model_overrides["num_classes"] == 10
    assert config.model_overrides["embed_dim"] == 64  # the file's other keys stay
    # the other way round: the command line's nested key beats a num_classes of the file
    config = resolve_config(SCHEMA, ["--config", str(write(tmp_path / "seven.yaml", "num_classes: 7\n")), "--model_overrides.num_classes",
                                     "3", "--model", "deit_small"])
    assert config.num_classes == 3 and config.model_overrides == {"num_classes": 3}
    # one source giving two different values is an error naming both
    with pytest.raises(ConfigError, match=r"--num_classes is 10 but --model_overrides.num_classes is 4"):
        resolve_config(SCHEMA, ["--model", "deit_small", "--num_classes", "10", "--model_overrides.num_classes", "4"])
    config = resolve_config(SCHEMA, ["--config", str(QUICKSTART)])  # the file alone: num_classes follows it
    assert config.num_classes == 4


def test_a_mapping_flag_never_replaces_the_files_mapping(tmp_path):
    """Issue 11, point 2: --model_overrides "{num_classes: 10}" silently dropped the file's tiny architecture."""
    tiny = {"embed_dim": 64, "depth": 2, "num_heads": 2, "mlp_ratio": 2.0, "image_size": 224}
    for argv in (["--model_overrides", "{num_classes: 10}"], ["--model_overrides.num_classes", "10"],
                 ["--model_overrides.num_classes=10"]):
        config = resolve_config(SCHEMA, ["--config", str(QUICKSTART)] + argv)
        assert config.model_overrides == {**tiny, "num_classes": 10}, argv
        assert config.sources["model_overrides.num_classes"] == "command line"
        assert config.sources["model_overrides.embed_dim"] == str(QUICKSTART)
    # a dotted key in a file sets one key too; values are YAML
    path = write(tmp_path / "evit.yaml", "model: evit_deit_small\nmodel_overrides: {depth: 2, drop_loc: [1]}\n"
                                           "model_overrides.keep_rate: 0.5\n")
    config = resolve_config(SCHEMA, ["--config", str(path), "--model_overrides.fuse_token", "false"])
    assert config.model_overrides == {"depth": 2, "drop_loc": [1], "keep_rate": 0.5, "fuse_token": False}


def test_the_resolved_model_is_logged_once_with_its_changes(caplog):
    """Issue 11, point 2: nothing said that the full-size model was being trained."""
    import logging

    from dvt_ms import create_model
    from dvt_ms.run import describe_model, log_model

    overrides = {"embed_dim": 32, "depth": 1, "num_heads": 2, "num_classes": 10, "mlp_ratio": 4.0}
    net = create_model("deit_small", **overrides)
    count = sum(int(p.size) for p in net.get_parameters())
    text = describe_model("deit_small", overrides, net)
    assert text == (f"model deit_small: depth 1 (default 12), embed_dim 32 (default 384), num_classes 10 "
                    f"(default 1000), num_heads 2 (default 6); {count:,} parameters")  # mlp_ratio 4.0 is the default
    with caplog.at_level(logging.INFO):
        log_model("deit_small", {}, net)
    assert "deit_small: the registered architecture, no value changed" in caplog.text


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        resolve_config(SCHEMA, ["--config", str(tmp_path / "nope.yaml")])


def test_save_config_round_trip(tmp_path, tiny_yaml):
    config = resolve_config(SCHEMA, ["--config", str(tiny_yaml), "--seed", "7", "--plot", "a.svg"])
    saved = save_config(config, tmp_path / "out" / "resolved.yaml", header="resolved by a test")
    assert saved.read_text().startswith("# resolved by a test\n")
    assert not [p for p in saved.parent.iterdir() if p.name != "resolved.yaml"]  # no temp file left
    again = resolve_config(SCHEMA, ["--config", str(saved)])
    assert again.to_dict() == config.to_dict()
    assert yaml.safe_load(saved.read_text())["seed"] == 7


def test_schemas_add_up_and_other_sections_keys_are_ignored(tmp_path):
    train = Schema("training", [Option("lr", float, default=0.1, help="learning rate"),
                                Option("epochs", int, default=1)])
    with pytest.raises(ValueError, match="declared twice"):
        COMMON + Schema("clash", [Option("seed", int, default=1)])
    with pytest.raises(ValueError, match="declared twice"):
        Schema("bad", [Option("config", str)])
    path = write(tmp_path / "shared.yaml", "model: deit_small\nlr: 0.5\nmode: fit\n")
    # the evaluation script: lr belongs to another section, it is accepted and ignored
    config = resolve_config(SCHEMA, ["--config", str(path)], file_sections=(COMMON, EVAL, train))
    assert config.ignored == {"lr": 0.5} and "lr" not in config
    # ...but it is not a flag of the evaluation script
    with pytest.raises(ConfigError, match="unknown flag"):
        resolve_config(SCHEMA, ["--config", str(path), "--lr", "1"], file_sections=(COMMON, EVAL, train))
    # the training script sees it; the evaluation key is ignored there
    config = resolve_config(COMMON + train, ["--config", str(path), "--epochs", "3"],
                            file_sections=(COMMON, EVAL, train))
    assert config.lr == 0.5 and config.epochs == 3 and config.ignored == {"mode": "fit"}
    # a key of no section is unknown, and the error names it
    typo = write(tmp_path / "typo.yaml", "model: deit_small\nlearning_rate: 0.5\n")
    with pytest.raises(ConfigError, match="unknown key.*learning_rate"):
        resolve_config(SCHEMA, ["--config", str(typo)])


def test_cross_key_checks_and_replace():
    def needs_output(values, sources):
        if values["plot"] and not values["output"]:
            raise ConfigError("--plot needs --output")

    schema = SCHEMA + Schema("script", checks=[needs_output])
    with pytest.raises(ConfigError, match="--plot needs --output"):
        resolve_config(schema, ["--model", "deit_small", "--plot", "x.png"])
    config = resolve_config(schema, ["--model", "deit_small"])
    changed = config.replace(batch_size=2)
    assert changed.batch_size == 2 and config.batch_size == 64
    with pytest.raises(ConfigError, match="batch_size"):
        config.replace(batch_size=0)


def test_validate_config_directly():
    values = validate_config(SCHEMA, {"model": "evit_deit_small", "model_overrides": {"keep_rate": 0.5}})
    assert values["model_overrides"] == {"keep_rate": 0.5} and values["mode"] == "anytime"
    with pytest.raises(ConfigError, match="unknown config key"):
        validate_config(SCHEMA, {"model": "deit_small", "nope": 1})


def test_help_lists_every_key_by_section():
    text = build_parser(SCHEMA, "test").format_help()
    for name in SCHEMA.names:
        assert f"--{name}" in text
    assert "evaluation:" in text and "model, data and runtime:" in text


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "configs").glob("*.yaml")))
def test_shipped_configs_are_valid(name):
    path = ROOT / "configs" / name
    config = resolve_config(SCHEMA, ["--config", str(path)])
    assert config.model in name.replace(".yaml", "") or name == "quickstart.yaml"
    from dvt_ms.config.training import TRAIN_SCHEMA

    training = resolve_config(TRAIN_SCHEMA, ["--config", str(path)])
    assert training.model == config.model and training.lr > 0
    assert set(load_config_file(path)) <= set(SCHEMA.names) | set(TRAIN_SCHEMA.names)


def test_shipped_config_set_is_complete():
    names = {p.name for p in (ROOT / "configs").glob("*.yaml")}
    assert {"dvt_deit_small.yaml", "dvt_t2t_vit_12.yaml", "dvt_t2t_vit_14.yaml", "evit_deit_small.yaml",
            "deit_small.yaml", "quickstart.yaml"} <= names


def test_quickstart_builds_a_tiny_dvt():
    from dvt_ms import create_model
    from dvt_ms.models import exit_names, num_exits

    config = resolve_config(SCHEMA, ["--config", str(ROOT / "configs" / "quickstart.yaml")])
    net = create_model(config.model, **config.model_overrides)
    assert num_exits(net) == 3 and exit_names(net) == ["7x7", "10x10", "14x14"]
    assert sum(int(p.size) for p in net.get_parameters()) < 1_000_000
