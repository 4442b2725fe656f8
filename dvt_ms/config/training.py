"""The training script's schema: the shared keys (COMMON), training's (TRAIN), the training plot, and the
check that a data folder is given."""
from typing import Any, Dict, Optional, Sequence

from .resolve import resolve_config
from .schema import Config, ConfigError, Option, Schema
from .sections import COMMON, TRAIN, plot_suffix

__all__ = ["TRAIN_SCHEMA", "resolve_train_config"]


def _require_data(values: Dict[str, Any], sources: Dict[str, str]) -> None:
    if not values["data_dir"]:
        raise ConfigError("missing required key 'data_dir': pass --data_dir DIR (an ImageFolder root holding "
                          f"{values['train_split']}/ and {values['val_split']}/)")


#: The training script's keys: model/data/runtime, training, and where to draw the training curves.
TRAIN_SCHEMA = COMMON + TRAIN + Schema("training plot", [
    Option("plot", str, nullable=True, validator=plot_suffix,
           help="draw the training loss and every exit's validation top-1 per epoch to this .png "
                "(needs matplotlib); redrawn after every epoch"),
], checks=[_require_data])


def resolve_train_config(argv: Optional[Sequence[str]] = None, description: Optional[str] = None) -> Config:
    """Flags and ``--config`` file merged and validated against :data:`TRAIN_SCHEMA`."""
    return resolve_config(TRAIN_SCHEMA, argv, description=description)
