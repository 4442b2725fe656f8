"""``python -m dvt_ms COMMAND ...``: the same as the ``dvt-ms`` console command."""
from .commands import main

if __name__ == "__main__":
    main()
