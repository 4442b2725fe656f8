"""dvt_ms.utils.atomic: a file is replaced only by a complete one, and no temporary file is left behind."""
import pytest

from dvt_ms.utils.atomic import atomic_path


def test_success_replaces_and_failure_keeps_the_old_file(tmp_path):
    target = tmp_path / "sub" / "out.json"
    with atomic_path(target) as tmp:
        assert not target.exists()
        with open(tmp, "w") as f:
            f.write("new")
    assert target.read_text() == "new"
    with pytest.raises(RuntimeError, match="crash"):
        with atomic_path(target) as tmp:
            with open(tmp, "w") as f:
                f.write("partial")
            raise RuntimeError("crash")
    assert target.read_text() == "new"
    assert [p.name for p in target.parent.iterdir()] == ["out.json"]
