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


def test_new_files_follow_the_umask_and_rewrites_keep_the_mode(tmp_path):
    import os
    import stat

    old = os.umask(0o027)
    try:
        target = tmp_path / "new.txt"
        with atomic_path(target) as tmp:
            with open(tmp, "w") as f:
                f.write("a")
            os.chmod(tmp, 0o400)  # what MindSpore's checkpoint writer does to its file
        assert stat.S_IMODE(target.stat().st_mode) == 0o640
        os.chmod(target, 0o664)
        with atomic_path(target) as tmp:
            with open(tmp, "w") as f:
                f.write("b")
        assert stat.S_IMODE(target.stat().st_mode) == 0o664 and target.read_text() == "b"
    finally:
        os.umask(old)
