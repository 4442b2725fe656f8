"""What a training run computes in: the ``precision`` and ``amp_level`` keys, resolved for one device.

Master weights, gradients and the optimizer state are float32 in every case; the precision is that of the
forward and backward computations.

* **CPU** has one mixed precision, bfloat16 (``precision: bf16``): the model is built with
  ``create_model(..., precision="bf16")``, so the fused kernels run every matrix product and its
  gradients on bfloat16 operands with float32 accumulation, while LayerNorm, softmax, GELU and the loss
  stay float32 inside the same kernels. ``amp_level`` O1 and O2 (or ``auto``) both mean exactly this;
  MindSpore's own amp is not applied (its CPU kernels have no fast float16 or bfloat16). O3 would also
  cast the normalizations and is refused. ``precision: fp32`` trains in float32 (O0).
* **GPU and Ascend** use ``mindspore.amp.auto_mixed_precision`` at ``amp_level`` (``auto``: O2) in
  float16, or in bfloat16 with ``precision: bf16``; ``precision: fp32`` with ``amp_level: O0`` trains in
  float32.
* **Loss scaling** is for float16 only (``loss_scale: auto`` is a dynamic scaler there): bfloat16 has
  float32's exponent range, so its gradients do not underflow and it runs unscaled.
"""
from dataclasses import dataclass

from ..kernels.choice import check_precision

__all__ = ["AMP_LEVELS", "TrainingPrecision", "resolve_training_precision"]

AMP_LEVELS = ("O0", "O1", "O2", "O3")
#: ``amp_level: auto`` on GPU and Ascend
ACCELERATOR_AUTO_LEVEL = "O2"
#: the levels that mean "bf16 products" on CPU
CPU_BF16_LEVELS = ("O1", "O2")


@dataclass(frozen=True)
class TrainingPrecision:
    """The resolved precision of one training run on ``device``.

    ``compute``: what the products run in (``fp32``, ``bf16``, ``fp16``); ``level``: the amp level as
    configured and resolved (``O0``-``O3``); ``amp_level``: the level handed to MindSpore's
    ``auto_mixed_precision`` (``O0`` on CPU, where the fused kernels carry out bf16);
    ``model_precision``: the ``create_model`` precision.
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
        if self.device == "CPU":
            how = ("the fused CPU kernels run the matrix products and their gradients in bfloat16 with float32 "
                   "accumulation; LayerNorm, softmax, GELU and the loss stay float32")
        else:
            how = f"mindspore.amp {self.amp_level} in {'bfloat16' if self.compute == 'bf16' else 'float16'}"
        scaling = ("float16 needs loss scaling" if self.loss_scaling
                   else "no loss scaling: bfloat16 has float32's exponent range")
        return f"{self.compute} mixed precision, amp_level {self.level}: {how}; float32 master weights; {scaling}"


def resolve_training_precision(precision: str, amp_level: str, device: str) -> TrainingPrecision:
    """The :class:`TrainingPrecision` of ``precision`` and ``amp_level`` on ``device``; a ``ValueError``
    naming both keys where they contradict each other or the device cannot train that way."""
    check_precision(precision)
    if amp_level not in ("auto",) + AMP_LEVELS:
        raise ValueError(f"amp_level must be auto or one of {', '.join(AMP_LEVELS)}, got {amp_level!r}")
    keys = f"precision {precision} with amp_level {amp_level}"
    if amp_level == "O0" and precision != "fp32":
        raise ValueError(f"{keys}: O0 trains in float32; use amp_level auto, O1 or O2 for {precision}, "
                         "or precision fp32")
    if device == "CPU":
        if precision == "fp16":
            raise ValueError(f"{keys} on CPU: float16 is not supported on CPU (no fast float16 products); "
                             "use precision bf16 (AVX512-BF16 or AMX) or fp32")
        if precision == "fp32":
            if amp_level not in ("auto", "O0"):
                raise ValueError(f"{keys} on CPU: mixed precision on CPU is bfloat16; set precision bf16, or "
                                 "amp_level O0/auto for float32")
            return TrainingPrecision("fp32", "O0", "O0", "fp32", device)
        if amp_level == "O3":
            raise ValueError(f"{keys} on CPU: O3 would cast LayerNorm and softmax too, which the CPU kernels keep "
                             f"float32; use amp_level {' or '.join(CPU_BF16_LEVELS)} (or auto)")
        level = CPU_BF16_LEVELS[-1] if amp_level == "auto" else amp_level
        return TrainingPrecision("bf16", level, "O0", "bf16", device)
    level = ACCELERATOR_AUTO_LEVEL if amp_level == "auto" else amp_level
    if level == "O0":
        return TrainingPrecision("fp32", "O0", "O0", "fp32", device)
    compute = "bf16" if precision == "bf16" else "fp16"
    return TrainingPrecision(compute, level, level, "fp32", device)
