"""Shared pytest fixtures.

Tests run in GRAPH_MODE on the device named by ``DVT_MS_DEVICE`` (default CPU). Tests that need
PyTorch to produce reference outputs ask for the ``torch`` fixture. Without torch they are skipped,
unless ``DVT_MS_REQUIRE_TORCH=1`` (set by CI), in which case a missing torch is a failure.
"""
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REFERENCE_DIR = ROOT.parent / "shared" / "reference"
os.environ.setdefault("GLOG_v", "3")


@pytest.fixture(scope="session", autouse=True)
def mindspore_context():
    from dvt_ms.run import configure_device

    return configure_device(os.environ.get("DVT_MS_DEVICE", "CPU"), "graph")


@pytest.fixture(scope="session")
def torch():
    try:
        import torch as torch_module
    except ImportError:
        if os.environ.get("DVT_MS_REQUIRE_TORCH") == "1":
            pytest.fail("torch is required (DVT_MS_REQUIRE_TORCH=1) but is not installed")
        pytest.skip("torch is not installed")
    return torch_module


@pytest.fixture(scope="session")
def reference_dir():
    if not REFERENCE_DIR.is_dir():
        pytest.skip(f"reference directory not found: {REFERENCE_DIR}")
    return REFERENCE_DIR


@pytest.fixture(scope="module")
def module_in_tmp_cwd(tmp_path_factory):
    """Run a module's tests in a scratch directory, so MindSpore's compile artefacts stay out of the repo."""
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp_path_factory.mktemp("cwd"))
        yield
