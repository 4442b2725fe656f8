"""Device and execution-mode selection, with a CPU fallback."""
import logging
from typing import Optional

import mindspore as ms

from ..kernels import CPU_KERNEL_MODES, library_path

logger = logging.getLogger(__name__)

DEVICE_TARGETS = ("CPU", "GPU", "Ascend")
MODES = {"graph": ms.GRAPH_MODE, "pynative": ms.PYNATIVE_MODE}


def device_available(device_target: str) -> bool:
    """Whether this MindSpore build and machine can run on ``device_target``."""
    try:
        return bool(ms.hal.is_available(device_target))
    except (RuntimeError, ValueError):
        return False


def configure_device(device_target: str = "CPU", mode: str = "graph", cpu_kernels: Optional[str] = None) -> str:
    """Set MindSpore's device and mode; fall back to CPU (with a warning) if the device is absent.

    ``cpu_kernels`` (``auto``/``on``/``off``) is only checked here, and ``on`` builds the kernels now so
    that a missing compiler fails before any work; models take the mode when they are built
    (``create_model(..., cpu_kernels=...)``). Returns the device actually used.
    """
    if device_target not in DEVICE_TARGETS:
        raise ValueError(f"device_target must be one of {', '.join(DEVICE_TARGETS)}, got {device_target!r}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    chosen = device_target
    if device_target != "CPU" and not device_available(device_target):
        logger.warning("requested device %s is not available here; falling back to CPU", device_target)
        chosen = "CPU"
    ms.set_context(mode=MODES[mode])
    ms.set_device(chosen)
    if cpu_kernels is not None and cpu_kernels not in CPU_KERNEL_MODES:
        raise ValueError(f"cpu_kernels must be one of {', '.join(CPU_KERNEL_MODES)}, got {cpu_kernels!r}")
    if cpu_kernels == "on" and chosen == "CPU":
        library_path()
    return chosen
