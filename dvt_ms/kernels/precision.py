"""A model's precision on GPU and Ascend: MindSpore's own mixed precision (``mindspore.amp``).

On CPU the precision is carried out by the fused kernels (:mod:`dvt_ms.kernels.choice`). On GPU and Ascend,
``bf16`` and ``fp16`` map onto ``mindspore.amp.auto_mixed_precision`` at level ``O1``: the dense layers and
the (batch) matrix products run in the low precision, while LayerNorm, softmax, GELU, the exit confidences
and all other ops stay float32, as the CPU path computes.
"""
import logging
from typing import Any, Dict, Optional

from mindspore import nn
from mindspore.common import dtype as mstype

from .choice import KernelChoice, check_precision

logger = logging.getLogger(__name__)

__all__ = ["AMP_DTYPES", "AMP_LEVEL", "amp_settings", "apply_precision"]

#: the level of ``mindspore.amp.auto_mixed_precision`` a low precision maps onto (its white list: Dense,
#: MatMul, BatchMatMul, convolutions; LayerNorm and Softmax are not in it and stay float32)
AMP_LEVEL = "O1"
#: the MindSpore dtype of each low precision
AMP_DTYPES = {"bf16": mstype.bfloat16, "fp16": mstype.float16}


def amp_settings(precision: str, device_target: str) -> Optional[Dict[str, Any]]:
    """The ``auto_mixed_precision`` keyword arguments for ``precision`` on ``device_target``, or ``None``
    where MindSpore's mixed precision is not used (fp32 anywhere; CPU, where the fused kernels compute)."""
    check_precision(precision)
    if precision == "fp32" or device_target == "CPU":
        return None
    return {"amp_level": AMP_LEVEL, "dtype": AMP_DTYPES[precision]}


def apply_precision(net: nn.Cell, kernels: KernelChoice) -> nn.Cell:
    """``net`` in ``kernels.model_precision``: unchanged on CPU and in fp32, else through MindSpore's amp."""
    settings = amp_settings(kernels.model_precision, kernels.device_target)
    if settings is None:
        return net
    from mindspore.amp import auto_mixed_precision

    logger.info("precision %s on %s: mindspore.amp.auto_mixed_precision(%s)", kernels.model_precision,
                kernels.device_target, settings)
    converted = auto_mixed_precision(net, **settings)
    converted.kernels = kernels
    return converted
