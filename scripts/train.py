"""`python scripts/train.py ...` is `dvt-ms train ...`: see dvt_ms/commands/train.py (or --help)."""
import signal
import sys

if __name__ == "__main__" and hasattr(signal, "pthread_sigmask"):
    # before MindSpore starts its threads (they inherit the mask): see dvt_ms.train.interrupt
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})

try:
    from dvt_ms.commands import run_script
except ImportError as exc:  # the package is not installed in this Python
    sys.exit(f"error: cannot import dvt_ms ({exc}); install it first: pip install -e . (in the repository root)")

if __name__ == "__main__":
    from dvt_ms.train.interrupt import route_sigint_to_thread

    route_sigint_to_thread()  # SIGINT is taken by a watcher thread, out of reach of MindSpore's handler
    run_script("train")
