"""Per-epoch training metrics as JSON lines, and a loss/accuracy plot of them.

Each line of ``metrics.jsonl`` is one epoch, e.g.::

    {"epoch": 3, "lr": 0.0005, "train_loss": [2.1, 1.9, 1.8], "val_top1": [61.2, 68.0, 70.4],
     "val_top5": [...], "images_per_sec": 812.5, "epoch_time": 1577.1, "skipped_images": 0}

Lists are per exit (one entry for single-exit models). A non-finite number is written as ``null`` with a
warning naming its key (strict JSON has no NaN). After a resume the same epoch may appear twice;
:func:`read_metrics` keeps the last record of each epoch.
"""
import json
import logging
import math
import os
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np

from ..plots import PlotUnavailable, matplotlib_available
from ..utils.atomic import atomic_path

logger = logging.getLogger(__name__)

__all__ = ["MetricsLogger", "read_metrics", "plot_metrics", "METRICS_FILE"]

PathLike = Union[str, os.PathLike]
METRICS_FILE = "metrics.jsonl"


def _jsonable(key: str, value: Any) -> Any:
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, Mapping):
        return {str(k): _jsonable(f"{key}.{k}", v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(f"{key}[{i}]", v) for i, v in enumerate(value)]
    if isinstance(value, float) and not math.isfinite(value):
        logger.warning("metric %s is %s; written as null", key, value)
        return None
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"metric {key} has a value of type {type(value).__name__} that JSON cannot hold")


class MetricsLogger:
    """Append one JSON record per epoch to ``output_dir/metrics.jsonl`` (rank 0 only)."""

    def __init__(self, output_dir: PathLike, rank: int = 0, filename: str = METRICS_FILE):
        self.path = Path(output_dir) / filename
        self.rank = int(rank)

    def log(self, record: Mapping[str, Any]) -> Optional[Dict[str, Any]]:
        """Append ``record`` (it needs an integer ``epoch``); returns what was written (``None`` off rank 0)."""
        epoch = record.get("epoch")
        if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)) or epoch < 0:
            raise ValueError(f"metrics record needs a non-negative integer 'epoch', got {epoch!r}")
        if self.rank != 0:
            return None
        clean = {str(k): _jsonable(str(k), v) for k, v in record.items()}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(clean, allow_nan=False) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        return clean

    def drop_after(self, epoch: int) -> None:
        """Rewrite the file (atomically) without records of epochs after ``epoch``: the resume point."""
        if self.rank != 0 or not self.path.is_file():
            return
        kept = [r for r in read_metrics(self.path) if r["epoch"] <= epoch]
        lines = [line for line in self.path.read_text(encoding="utf-8").splitlines() if line.strip()]
        if len(lines) == len(kept):
            return  # one whole record per kept epoch and nothing after: the file is left untouched
        with atomic_path(self.path) as tmp_name:
            Path(tmp_name).write_text("".join(json.dumps(r, allow_nan=False) + "\n" for r in kept), encoding="utf-8")

    def log_epoch(self, epoch: int, *, train_loss: Sequence[float], lr: float,
                  val_top1: Optional[Sequence[float]] = None, val_top5: Optional[Sequence[float]] = None,
                  images_per_sec: Optional[float] = None, epoch_time: Optional[float] = None,
                  skipped_images: int = 0, **extra: Any) -> Optional[Dict[str, Any]]:
        """Log the standard per-epoch record (per-exit lists for losses and accuracies) plus ``extra``."""
        record: Dict[str, Any] = dict(epoch=epoch, lr=lr, train_loss=list(train_loss),
                                      val_top1=None if val_top1 is None else list(val_top1),
                                      val_top5=None if val_top5 is None else list(val_top5),
                                      images_per_sec=images_per_sec, epoch_time=epoch_time,
                                      skipped_images=skipped_images)
        record.update(extra)
        return self.log(record)


def read_metrics(path: PathLike) -> List[Dict[str, Any]]:
    """The records of a ``metrics.jsonl``, sorted by epoch, the last record of each epoch winning.

    A torn last line (a crash while writing) is skipped with a warning; a bad line elsewhere is an error
    naming its line number.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such metrics file")
    lines = path.read_text(encoding="utf-8").splitlines()
    by_epoch: Dict[int, Dict[str, Any]] = {}
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            epoch = int(record["epoch"])
        except (ValueError, KeyError, TypeError) as exc:
            if number == len(lines):
                logger.warning("%s: ignoring an incomplete last line (%s)", path, exc)
                continue
            raise ValueError(f"{path}:{number}: not a metrics record ({exc})") from None
        by_epoch[epoch] = record
    return [by_epoch[e] for e in sorted(by_epoch)]


def _series(records: List[Dict[str, Any]], key: str):
    """``(epochs, [exit0_values, exit1_values, ...])`` for a per-exit key, gaps as NaN."""
    rows = [(r["epoch"], r[key]) for r in records if r.get(key) is not None]
    if not rows:
        return [], []
    rows = [(e, v if isinstance(v, list) else [v]) for e, v in rows]
    exits = max(len(v) for _, v in rows)
    values = [[(v[i] if i < len(v) and v[i] is not None else math.nan) for _, v in rows] for i in range(exits)]
    return [e for e, _ in rows], values


def plot_metrics(jsonl: PathLike, png: PathLike) -> Path:
    """Plot training loss and validation top-1 per exit against epoch into ``png``.

    Needs matplotlib (not a dependency of this project): without it :class:`dvt_ms.plots.PlotUnavailable`
    is raised saying how to install it.
    """
    if not matplotlib_available():
        raise PlotUnavailable("plot_metrics needs matplotlib, which is not installed: pip install matplotlib")
    from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global state

    records = read_metrics(jsonl)
    if not records:
        raise ValueError(f"{jsonl}: no metrics records to plot")
    figure = Figure(figsize=(10, 4), dpi=100)
    for index, (key, title, ylabel) in enumerate((("train_loss", "training loss", "loss"),
                                                  ("val_top1", "validation top-1", "top-1 (%)"))):
        axes = figure.add_subplot(1, 2, index + 1)
        epochs, per_exit = _series(records, key)
        for exit_index, values in enumerate(per_exit):
            label = f"exit {exit_index + 1}" if len(per_exit) > 1 else key
            axes.plot(epochs, values, marker="o" if len(epochs) < 30 else None, label=label)
        axes.set_title(title)
        axes.set_xlabel("epoch")
        axes.set_ylabel(ylabel)
        axes.grid(alpha=0.3)
        if per_exit:
            axes.legend()
        else:
            axes.text(0.5, 0.5, f"no {key} values", ha="center", va="center", transform=axes.transAxes)
    figure.tight_layout()
    png = Path(png)
    with atomic_path(png, suffix=".tmp.png") as tmp_name:
        figure.savefig(tmp_name, format="png")
    return png
