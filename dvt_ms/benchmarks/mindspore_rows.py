"""The MindSpore rows: registered models in GRAPH_MODE with random weights, for inference and training.

A model is built with ``create_model(name, precision=...)``: in bf16 on CPU the fused kernels compute the
matrix products (and in training their gradients) in bfloat16 with float32 accumulation and float32
weights. The ``STOCK`` rows are built on MindSpore's own ops, in fp32.
"""
import logging
from typing import Dict, List, Sequence

import numpy as np
import mindspore as ms
from mindspore import Tensor

from ..flops import count
from ..models import create_model
from ..train import MultiExitLoss, TrainStep, create_optimizer
from .environment import STOCK, kernel_mode
from .timing import Measurement, framework_label

logger = logging.getLogger("benchmark")

__all__ = ["macs_of", "mindspore_measurements", "mindspore_train_measurement", "soft_targets"]


def macs_of(measurements: Sequence[Measurement], name: str, image_size: int) -> float:
    """MACs per image of the full model ``name``: from its MindSpore row if there is one, else counted."""
    row = next((m for m in measurements if m.model == name and m.framework.startswith("mindspore")), None)
    if row is not None:
        return row.macs_per_image
    return count(create_model(name, image_size=image_size), image_size)[-1]


def _build(name: str, image_size: int, cpu_kernels: str, framework: str, precision: str):
    precision = "fp32" if framework == STOCK else precision
    return create_model(name, image_size=image_size, cpu_kernels=kernel_mode(cpu_kernels, framework),
                        precision=precision)


def mindspore_measurements(names: Sequence[str], image_size: int, images: Dict[int, object], cpu_kernels: str,
                           precision: str, framework: str = "mindspore") -> List[Measurement]:
    """Eval-mode rows of ``names`` at each batch of ``images``; a cascade computes every exit."""
    out = []
    for name in names:
        logger.info("building %s (%s)", name, framework)
        net = _build(name, image_size, cpu_kernels, framework, precision)
        net.set_train(False)
        macs = count(net, image_size)[-1]
        actual = net.kernels.precision  # fp32 where cpu_kernels auto found no bf16 path
        for batch, array in images.items():
            x = Tensor(array, ms.float32)

            def run(net=net, x=x) -> None:
                result = net(x)
                for t in (result if isinstance(result, (tuple, list)) else (result,)):
                    t.asnumpy()

            out.append(Measurement(name, framework_label(framework, actual), batch, run, macs_per_image=macs,
                                   precision=actual))
    return out


def soft_targets(batch: int, num_classes: int, smoothing: float, seed: int):
    """Label-smoothed one-hot targets ``float32 [batch, num_classes]`` (what the mixup recipe feeds the loss)."""
    rng = np.random.default_rng(seed)
    targets = np.full((batch, num_classes), smoothing / num_classes, dtype=np.float32)
    targets[np.arange(batch), rng.integers(0, num_classes, batch)] += 1.0 - smoothing
    return targets


def mindspore_train_measurement(name: str, batch: int, image_size: int, images, targets, cpu_kernels: str,
                                precision: str = "fp32", framework: str = "mindspore") -> Measurement:
    """One ``TrainStep`` call: forward, multi-exit loss, backward, finite checks, AdamW update (no EMA, no
    loss scaler: bf16 keeps float32's exponent range)."""
    ms.set_seed(0)
    net = _build(name, image_size, cpu_kernels, framework, precision)
    optimizer = create_optimizer(net, "adamw", 5e-4, weight_decay=0.05)
    step = TrainStep(net, MultiExitLoss(label_smoothing=0.1), optimizer)
    x, y = Tensor(images, ms.float32), Tensor(targets, ms.float32)

    def run() -> None:
        step(x, y)  # reads the loss back, so the step has finished

    actual = net.kernels.precision
    return Measurement(name, framework_label(framework, actual), batch, run,
                       macs_per_image=count(net, image_size)[-1], precision=actual)
