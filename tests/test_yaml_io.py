"""dvt_ms.utils.yaml_io: duplicate keys are errors naming key and line; 5e-4 is a number."""
import pytest
import yaml

from dvt_ms.config import COMMON, EVAL, ConfigError, resolve_config
from dvt_ms.utils.yaml_io import DuplicateKeyError, load_yaml


def test_exponent_numbers_are_floats_and_strings_stay_strings():
    data = load_yaml("a: 5e-4\nb: 1E3\nc: -2e+5\nd: 1.5e-3\ne: '5e-4'\nf: 12\ng: e5\nh: 1_0\n")
    assert data == {"a": 5e-4, "b": 1000.0, "c": -2e5, "d": 1.5e-3, "e": "5e-4", "f": 12, "g": "e5", "h": 10}
    assert isinstance(data["b"], float) and isinstance(data["f"], int)
    assert yaml.safe_load("a: 5e-4\n") == {"a": "5e-4"}  # PyYAML's own loader is left as it is


def test_duplicate_keys_name_the_key_and_the_lines():
    with pytest.raises(DuplicateKeyError, match=r"duplicate key 'lr' \(first given on line 1, again on line 3\)"):
        load_yaml("lr: 1\nepochs: 2\nlr: 3\n")
    with pytest.raises(DuplicateKeyError, match="duplicate key 'depth'"):
        load_yaml("model_overrides: {depth: 2, depth: 3}\n")
    assert load_yaml("base: &b {x: 1}\nother:\n  <<: *b\n  y: 2\n") == {"base": {"x": 1}, "other": {"x": 1, "y": 2}}


def test_config_files_use_the_strict_loader(tmp_path):
    schema = COMMON + EVAL
    path = tmp_path / "c.yaml"
    path.write_text("model: deit_small\nbatch_size: 4\nbatch_size: 8\n")
    with pytest.raises(ConfigError, match=r"c.yaml: not valid YAML \(line 3, column 1\): duplicate key 'batch_size'"):
        resolve_config(schema, ["--config", str(path)])
    path.write_text("model: deit_small\ncrop_pct: 9e-1\n")
    assert resolve_config(schema, ["--config", str(path)]).crop_pct == 0.9
