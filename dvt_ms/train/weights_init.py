"""A training run's starting weights: a pretrained checkpoint (heads of another class count re-drawn) or the
fan-in initialization of small models."""
import logging
from typing import Any, Dict, List

from mindspore import nn
from mindspore.common.initializer import TruncatedNormal, initializer

from ..checkpoint import load_state, read_checkpoint

logger = logging.getLogger(__name__)

__all__ = ["classifier_head_names", "load_pretrained", "reinit_fan_in"]


def classifier_head_names(net) -> List[str]:
    """Parameter names of every classifier head (one per DVT stage): ``...head.weight`` / ``...head.bias``."""
    return [p.name for p in net.get_parameters() if len(p.name.split(".")) >= 2 and p.name.split(".")[-2] == "head"]


def reinit_fan_in(net) -> int:
    """Re-draw every dense weight from a truncated normal with std ``1/sqrt(fan_in)`` (biases stay 0).

    The official init (std 0.02) suits 384-wide and wider models; a 64-wide model starts with signals
    about 4x too small and sits on a plateau for hundreds of steps. Returns the number of layers changed.
    """
    count = 0
    for _, cell in net.cells_and_names():
        if isinstance(cell, nn.Dense):
            fan_in = int(cell.weight.shape[1])
            cell.weight.set_data(initializer(TruncatedNormal(fan_in ** -0.5), cell.weight.shape, cell.weight.dtype))
            count += 1
    logger.info("weight_init fan_in: %d dense layers re-initialized with std 1/sqrt(fan_in)", count)
    return count


def load_pretrained(net, path: str, weights: str = "model") -> Dict[str, Any]:
    """Load ``path`` into ``net`` (strict), except classifier heads of another shape, re-initialized.

    Every file :func:`dvt_ms.checkpoint.read_checkpoint` reads is accepted: official ``.pth``/``.pth.tar``,
    ``.safetensors``, weights ``.ckpt`` and training checkpoints (optimizer state skipped); ``weights`` picks
    the trained weights (``"model"``) or their EMA (``"model_ema"``). Returns the checkpoint's metadata.
    """
    state, metadata = read_checkpoint(path, weights)
    params = {p.name: p for p in net.get_parameters()}
    heads = [n for n in classifier_head_names(net)
             if n in state and tuple(state[n].shape) != tuple(params[n].shape)]
    if heads:
        biases = [n for n in heads if n.endswith(".bias")] or heads
        found = sorted({int(state[n].shape[0]) for n in biases})
        logger.warning("%s: classifier head(s) %s have %s classes in the checkpoint but the model has %d: "
                       "they are re-initialized, not loaded", path, ", ".join(heads),
                       "/".join(map(str, found)), int(params[biases[0]].shape[0]))
    load_state(net, state, path, exclude=heads)
    return metadata
