"""Device and execution-mode selection: an explicit device that is absent is an error, never a CPU run."""
import logging
import os
from typing import Optional

import mindspore as ms

from ..kernels import CPU_KERNEL_MODES, library_path

logger = logging.getLogger(__name__)

DEVICE_TARGETS = ("CPU", "GPU", "Ascend")
#: ``device_target: auto`` takes the first of these that is available
AUTO_ORDER = ("Ascend", "GPU", "CPU")
MODES = {"graph": ms.GRAPH_MODE, "pynative": ms.PYNATIVE_MODE}
#: what MindSpore's backend for each accelerator needs on the machine
DEVICE_NEEDS = {
    "GPU": "an NVIDIA GPU and driver, CUDA 11.1 or 11.6 with cuDNN 8, and MindSpore's GPU plugin",
    "Ascend": "an Ascend NPU with its driver, the CANN toolkit (libge_runner.so and friends) and MindSpore's "
              "Ascend plugin",
}
#: the environment variable a rank-table launch (scripts/run_distributed_ascend.sh) sets per process
DEVICE_ID_ENV = "DEVICE_ID"


class DeviceUnavailableError(ValueError):
    """An explicitly requested device_target that this machine or MindSpore build cannot run."""


def device_available(device_target: str) -> bool:
    """Whether this MindSpore build and machine can run on ``device_target``."""
    try:
        return bool(ms.hal.is_available(device_target))
    except (RuntimeError, ValueError):
        return False


def resolve_device_target(device_target: str) -> str:
    """The device to run on: ``auto`` is the first available of Ascend, GPU, CPU (logged); an explicit
    GPU/Ascend that is absent raises :class:`DeviceUnavailableError` naming the device and what it needs."""
    if device_target == "auto":
        chosen = next(d for d in AUTO_ORDER if d == "CPU" or device_available(d))
        logger.info("device_target auto: running on %s (checked %s in that order)", chosen, ", ".join(AUTO_ORDER))
        return chosen
    if device_target not in DEVICE_TARGETS:
        raise ValueError(f"device_target must be auto or one of {', '.join(DEVICE_TARGETS)}, got {device_target!r}")
    if device_target != "CPU" and not device_available(device_target):
        raise DeviceUnavailableError(
            f"device_target {device_target} was requested, but MindSpore {ms.__version__} has no usable "
            f"{device_target} backend on this machine: it needs {DEVICE_NEEDS[device_target]}. Use --device_target "
            "CPU, or auto to take the best device present")
    return device_target


def device_id() -> Optional[int]:
    """The device id of this process from ``$DEVICE_ID`` (rank-table launches), or ``None``."""
    value = os.environ.get(DEVICE_ID_ENV)
    if value is None or value == "":
        return None
    if not value.isdigit():
        raise ValueError(f"${DEVICE_ID_ENV} must be a non-negative integer, got {value!r}")
    return int(value)


def configure_device(device_target: str = "CPU", mode: str = "graph", cpu_kernels: Optional[str] = None) -> str:
    """Set MindSpore's device and mode, before any work; returns the device used.

    ``device_target`` is ``auto``, ``CPU``, ``GPU`` or ``Ascend`` (:func:`resolve_device_target`: an absent
    explicit device is an error). On an accelerator, ``$DEVICE_ID`` (set per process by rank-table launches)
    picks the device. ``cpu_kernels`` (``auto``/``on``/``off``) is only checked here, and ``on`` builds the
    kernels now so that a missing compiler fails before any work; models take the mode when they are built
    (``create_model(..., cpu_kernels=...)``).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if cpu_kernels is not None and cpu_kernels not in CPU_KERNEL_MODES:
        raise ValueError(f"cpu_kernels must be one of {', '.join(CPU_KERNEL_MODES)}, got {cpu_kernels!r}")
    chosen = resolve_device_target(device_target)
    ms.set_context(mode=MODES[mode])
    index = device_id() if chosen != "CPU" else None
    if index is None:
        ms.set_device(chosen)
    else:
        logger.info("%s device %d ($%s)", chosen, index, DEVICE_ID_ENV)
        ms.set_device(chosen, index)
    if cpu_kernels == "on" and chosen == "CPU":
        library_path()
    return chosen
