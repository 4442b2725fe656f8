"""Command-line plumbing shared by the scripts: quiet start-up, logging and error reporting."""
import argparse
import logging
import os
import sys
from typing import Any, Callable, Dict, Iterable

import yaml


def quiet_mindspore() -> None:
    """Hide MindSpore's C++ warnings (missing GPU/Ascend plug-ins and the like) unless asked for."""
    os.environ.setdefault("GLOG_v", "3")


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")


def add_override_argument(parser: argparse.ArgumentParser) -> None:
    """``--set KEY=VALUE`` (repeatable) into ``args.overrides``; read them with :func:`parse_overrides`."""
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="architecture override, e.g. --set num_classes=100 (repeatable)")


def parse_overrides(items: Iterable[str]) -> Dict[str, Any]:
    """Turn ``["depth=2", "keep_rate=[1, 0.7]"]`` into a dict, values parsed as YAML scalars/lists."""
    overrides: Dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set expects key=value, got {item!r}")
        try:
            overrides[key.strip()] = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ValueError(f"--set {item!r}: cannot parse the value ({exc})") from None
    return overrides


def run_cli(main: Callable[[], int]) -> None:
    """Run ``main`` and turn user errors into one line on stderr and exit status 2 (no traceback)."""
    try:
        status = main()
    except (ValueError, KeyError, TypeError, OSError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)
    sys.exit(status or 0)
