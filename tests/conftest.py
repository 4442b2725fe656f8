"""Shared pytest fixtures.

Tests that need PyTorch to produce reference outputs ask for the ``torch`` fixture. Without torch they
are skipped, unless ``DVT_MS_REQUIRE_TORCH=1`` (set by CI), in which case a missing torch is a failure.
"""
import os
from pathlib import Path

import pytest

REFERENCE_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "reference"


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
