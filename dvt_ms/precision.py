"""The precision rules, with no MindSpore or config import (the ground floor): the precisions a model runs
in, which of them MindSpore's own ops run on each device, and what a training run computes in: the
``precision`` and ``amp_level`` keys, resolved for one device.

Master weights, gradients and the optimizer state are float32 in every case; the precision is that of the
forward and backward computations.

* **CPU with the fused kernels** has one mixed precision, bfloat16 (``precision: bf16``): the model is built
  with ``create_model(..., precision="bf16")``, so the fused kernels run every matrix product and its
  gradients on bfloat16 operands with float32 accumulation, while LayerNorm, softmax, GELU and the loss
  stay float32 inside the same kernels. ``amp_level`` O1 and O2 (or ``auto``) both mean exactly this;
  MindSpore's own amp is not applied. O3 would also cast the normalizations and is refused.
  ``precision: fp32`` trains in float32 (O0); float16 is refused.
* **MindSpore's own ops** -- GPU and Ascend, and CPU with ``cpu_kernels: off`` (MindSpore's float16 CPU
  kernels: the GPU/Ascend graph, for checking; slow) -- train at the levels of mindcv and MindSpore's amp, in
  float16 (bfloat16 with ``precision: bf16``, Ascend only):

  - **O1**: the dense and matrix products in the low precision, everything else float32. The model carries
    it (``create_model(..., precision=...)``, :mod:`dvt_ms.kernels.precision`), so every product of every
    cascade is covered and the exits are float32;
  - **O2**: ``mindspore.amp.auto_mixed_precision(net, "O2")``: the whole network in the low precision except
    LayerNorm (amp's black list), the outputs cast to float32;
  - **O3**: ``auto_mixed_precision(net, "O3")``: everything in the low precision (the official MindSpore
    DVT's Ascend setting), the outputs cast to float32.

  ``amp_level: auto`` is O2 on GPU/Ascend; on CPU with ``cpu_kernels: off`` float16 must be asked for
  (``precision: fp16``), and ``auto`` is then O2 as well.
* **Loss scaling** is for float16 only (``loss_scale: auto`` is a dynamic scaler there; an overflowing step
  is skipped and the scale lowered): bfloat16 has float32's exponent range, so its gradients do not
  underflow and it runs unscaled.
"""
from dataclasses import dataclass
from typing import Dict

__all__ = ["AMP_LEVELS", "DEVICE_PRECISIONS", "PRECISIONS", "TrainingPrecision", "check_device_precision",
           "check_precision", "resolve_training_precision"]

#: the precisions a model can run in (``precision``), the default first
PRECISIONS = ("fp32", "bf16", "fp16")
#: the precisions MindSpore's own ops run on each device (CPU: float16 kernels exist, for checking the
#: accelerator graph; MindSpore 2.10's GPU kernels have no bfloat16 matrix products)
DEVICE_PRECISIONS: Dict[str, tuple] = {"CPU": ("fp32", "fp16"), "GPU": ("fp32", "fp16"),
                                       "Ascend": ("fp32", "bf16", "fp16")}

AMP_LEVELS = ("O0", "O1", "O2", "O3")
#: ``amp_level: auto`` on GPU and Ascend
ACCELERATOR_AUTO_LEVEL = "O2"
#: the levels that mean "bf16 products" on CPU
CPU_BF16_LEVELS = ("O1", "O2")
#: the level the model carries itself with MindSpore's ops (products only; ``create_model(precision=...)``)
MODEL_CARRIED_LEVEL = "O1"


def check_precision(precision: str) -> str:
    """``precision`` if it is one of :data:`PRECISIONS`, else a ``ValueError`` naming the choices."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return precision


def check_device_precision(precision: str, device_target: str) -> str:
    """``precision`` if MindSpore's own ops run it on ``device_target``, else a ``ValueError`` saying why."""
    allowed = DEVICE_PRECISIONS.get(device_target)
    if allowed is None or precision in allowed:
        return precision
    if device_target == "GPU" and precision == "bf16":
        raise ValueError("precision bf16 on GPU: MindSpore 2.10's GPU kernels have no bfloat16 matrix products; "
                         "use precision fp16 (mixed precision, float16 products) or fp32")
    raise ValueError(f"precision {precision} is not supported by MindSpore's own ops on {device_target}; "
                     f"use one of {', '.join(allowed)}")


@dataclass(frozen=True)
class TrainingPrecision:
    """The resolved precision of one training run on ``device``.

    ``compute``: what the products run in (``fp32``, ``bf16``, ``fp16``); ``level``: the amp level as
    configured and resolved (``O0``-``O3``); ``amp_level``: the level handed to MindSpore's
    ``auto_mixed_precision`` (``O0`` where the model carries the precision: the fused CPU kernels' bf16 and
    level O1); ``model_precision``: the ``create_model`` precision.
    """

    compute: str
    level: str
    amp_level: str
    model_precision: str
    device: str

    @property
    def loss_scaling(self) -> bool:
        """Whether ``loss_scale: auto`` means a dynamic loss scaler (float16 only)."""
        return self.compute == "fp16"

    def describe(self) -> str:
        """One line for the log: what computes in what, and why there is (no) loss scaling."""
        if self.compute == "fp32":
            return f"float32 (amp_level {self.level})"
        dtype = "bfloat16" if self.compute == "bf16" else "float16"
        if self.device == "CPU" and self.compute == "bf16":
            how = ("the fused CPU kernels run the matrix products and their gradients in bfloat16 with float32 "
                   "accumulation; LayerNorm, softmax, GELU and the loss stay float32")
        elif self.amp_level == "O0":
            how = f"the model runs its dense and matrix products in {dtype}, everything else in float32"
        else:
            how = f"mindspore.amp.auto_mixed_precision {self.amp_level} in {dtype}, float32 outputs"
        if self.device == "CPU" and self.compute == "fp16":
            how += " (MindSpore's float16 CPU ops: checks the GPU/Ascend graph, slow)"
        scaling = ("float16 needs loss scaling" if self.loss_scaling
                   else "no loss scaling: bfloat16 has float32's exponent range")
        return f"{self.compute} mixed precision, amp_level {self.level}: {how}; float32 master weights; {scaling}"


def resolve_training_precision(precision: str, amp_level: str, device: str,
                               cpu_kernels: str = "auto") -> TrainingPrecision:
    """The :class:`TrainingPrecision` of ``precision`` and ``amp_level`` on ``device`` (on CPU with
    ``cpu_kernels``); a ``ValueError`` naming both keys where they contradict each other or the device cannot
    train that way."""
    check_precision(precision)
    if amp_level not in ("auto",) + AMP_LEVELS:
        raise ValueError(f"amp_level must be auto or one of {', '.join(AMP_LEVELS)}, got {amp_level!r}")
    keys = f"precision {precision} with amp_level {amp_level}"
    if amp_level == "O0" and precision != "fp32":
        raise ValueError(f"{keys}: O0 trains in float32; use amp_level auto, O1, O2 or O3 for {precision}, "
                         "or precision fp32")
    if device == "CPU" and cpu_kernels != "off":
        if precision == "fp16":
            raise ValueError(f"{keys} on CPU: float16 is not supported with the fused CPU kernels (no fast float16 "
                             "products); use precision bf16 (AVX512-BF16 or AMX) or fp32, or cpu_kernels off to "
                             "check the GPU/Ascend float16 graph on CPU (slow)")
        if precision == "fp32":
            if amp_level not in ("auto", "O0"):
                raise ValueError(f"{keys} on CPU: mixed precision on CPU is bfloat16; set precision bf16, or "
                                 "amp_level O0/auto for float32 (or precision fp16 with cpu_kernels off to check "
                                 "the GPU/Ascend graph)")
            return TrainingPrecision("fp32", "O0", "O0", "fp32", device)
        if amp_level == "O3":
            raise ValueError(f"{keys} on CPU: O3 would cast LayerNorm and softmax too, which the CPU kernels keep "
                             f"float32; use amp_level {' or '.join(CPU_BF16_LEVELS)} (or auto)")
        level = CPU_BF16_LEVELS[-1] if amp_level == "auto" else amp_level
        return TrainingPrecision("bf16", level, "O0", "bf16", device)
    if device == "CPU" and precision == "fp32":  # cpu_kernels off: float16 only when asked for
        if amp_level not in ("auto", "O0"):
            raise ValueError(f"{keys} on CPU with cpu_kernels off: set precision fp16 to check the GPU/Ascend "
                             "float16 graph, or amp_level O0/auto for float32")
        return TrainingPrecision("fp32", "O0", "O0", "fp32", device)
    level = ACCELERATOR_AUTO_LEVEL if amp_level == "auto" else amp_level
    if level == "O0":
        return TrainingPrecision("fp32", "O0", "O0", "fp32", device)
    compute = check_device_precision("bf16" if precision == "bf16" else "fp16", device)
    if level == MODEL_CARRIED_LEVEL:
        return TrainingPrecision(compute, level, "O0", compute, device)
    return TrainingPrecision(compute, level, level, "fp32", device)
