"""The command-line programs for tests: their modules (to call ``main``) and an environment for subprocesses."""
import importlib
import os
from pathlib import Path
from types import ModuleType
from typing import Dict

import dvt_ms

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
#: The folder holding the ``dvt_ms`` package these tests import (the installed one, or this checkout).
PACKAGE_PARENT = Path(dvt_ms.__file__).resolve().parents[1]


def load_script(name: str) -> ModuleType:
    """The module behind ``scripts/<name>.py``: ``dvt_ms.commands.<name>``."""
    return importlib.import_module(f"dvt_ms.commands.{name}")


def script_env(**extra: str) -> Dict[str, str]:
    """``os.environ`` plus ``extra``, for running a script as a subprocess on the same ``dvt_ms`` as the tests
    (``PYTHONPATH`` names its folder: an editable install of another checkout must not be picked up)."""
    path = os.pathsep.join(p for p in (str(PACKAGE_PARENT), os.environ.get("PYTHONPATH", "")) if p)
    return dict(os.environ, PYTHONPATH=path, **extra)
