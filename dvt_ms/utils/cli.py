"""Command-line plumbing shared by the scripts: quiet start-up, logging and error reporting."""
import logging
import os
import sys
from typing import Callable


def quiet_mindspore() -> None:
    """Hide MindSpore's C++ warnings (missing GPU/Ascend plug-ins and the like) unless asked for."""
    os.environ.setdefault("GLOG_v", "3")


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")


def run_cli(main: Callable[[], int]) -> None:
    """Run ``main`` and turn user errors into one line on stderr and exit status 2 (no traceback)."""
    try:
        status = main()
    except (ValueError, KeyError, TypeError, OSError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)
    sys.exit(status or 0)
