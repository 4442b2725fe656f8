"""`python scripts/visualize.py ...` is `dvt-ms visualize ...`: see dvt_ms/commands/visualize.py (or --help)."""
import sys

try:
    from dvt_ms.commands import run_script
except ImportError as exc:  # the package is not installed in this Python
    sys.exit(f"error: cannot import dvt_ms ({exc}); install it first: pip install -e . (in the repository root)")

if __name__ == "__main__":
    run_script("visualize")
