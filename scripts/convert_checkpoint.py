"""`python scripts/convert_checkpoint.py ...` is `dvt-ms convert ...`: see dvt_ms/commands/convert_checkpoint.py (or --help)."""
import sys

try:
    from dvt_ms.commands import run_script
except ImportError as exc:  # the package is not installed in this Python
    sys.exit(f"error: cannot import dvt_ms ({exc}); install it first: pip install -e . (in the repository root)")

if __name__ == "__main__":
    run_script("convert_checkpoint")
