"""The assembly of a run, above data, config and evaluation: the device it runs on and its model, built from
the config and a checkpoint (reconciled with what the checkpoint records), loaded, logged, with its data
config."""
from .device import DEVICE_TARGETS, DeviceUnavailableError, configure_device, resolve_device_target
from .model import LoadedModel, describe_model, load_model, log_model, parameter_count

__all__ = ["DEVICE_TARGETS", "DeviceUnavailableError", "LoadedModel", "configure_device", "describe_model",
           "load_model", "log_model", "parameter_count", "resolve_device_target"]
