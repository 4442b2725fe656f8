"""The command-line programs: ``dvt-ms NAME ...`` (console entry point), ``python -m dvt_ms NAME ...`` and
``python scripts/NAME.py ...`` all run ``dvt_ms.commands.<module>.main``.

Every command but ``make-quickstart-data`` reads the same ``--config FILE.yaml`` and schema
(:mod:`dvt_ms.config`, :mod:`dvt_ms.config.scripts`); ``dvt-ms NAME --help`` lists its keys.
"""
import difflib
import importlib
import sys
from typing import Dict, Optional, Sequence

from ..train.interrupt import route_sigint_to_thread
from ..utils.cli import quiet_mindspore, run_cli

__all__ = ["COMMANDS", "main", "run_script"]

#: command name -> module of dvt_ms.commands
COMMANDS: Dict[str, str] = {
    "train": "train",
    "eval": "eval",
    "infer": "infer",
    "export": "export",
    "convert": "convert_checkpoint",
    "visualize": "visualize",
    "benchmark": "benchmark",
    "make-quickstart-data": "make_quickstart_data",
}
_ALIASES = {"convert_checkpoint": "convert", "make_quickstart_data": "make-quickstart-data"}


def _usage() -> str:
    names = ", ".join(COMMANDS)
    return (f"usage: dvt-ms COMMAND [--config FILE.yaml] [--key value ...]\n\ncommands: {names}\n"
            "'dvt-ms COMMAND --help' lists the keys of a command.")


def run_script(module: str, argv: Optional[Sequence[str]] = None) -> None:
    """Run ``dvt_ms.commands.<module>.main`` as a program (errors: one line on stderr, exit status 2)."""
    quiet_mindspore()
    command = importlib.import_module(f"{__name__}.{module}")
    run_cli(lambda: command.main(None if argv is None else list(argv)))


def main(argv: Optional[Sequence[str]] = None) -> None:
    """``dvt-ms COMMAND ...``: dispatch to the command's ``main``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(_usage())
        sys.exit(0 if args else 2)
    name = _ALIASES.get(args[0], args[0])
    if name not in COMMANDS:
        close = difflib.get_close_matches(name, list(COMMANDS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        print(f"error: unknown command {args[0]!r}{hint}\n{_usage()}", file=sys.stderr)
        sys.exit(2)
    if name == "train":  # as scripts/train.py: SIGINT to a watcher thread, not MindSpore's handler
        route_sigint_to_thread()
    run_script(COMMANDS[name], args[1:])
