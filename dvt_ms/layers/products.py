"""Products in a model's low precision, on MindSpore's own ops (GPU, Ascend, CPU with ``cpu_kernels: off``)."""
from typing import Callable, Optional

from mindspore import Tensor, ops
from mindspore.common import dtype as mstype


def low_precision_product(op: Callable[[Tensor, Tensor], Tensor], a: Tensor, b: Tensor,
                          dtype: Optional[mstype.Type]) -> Tensor:
    """``op(a, b)`` on operands cast to ``dtype`` with a float32 result (the model's precision, see
    :mod:`dvt_ms.kernels.precision`); with ``dtype`` ``None``, ``op(a, b)`` in the operands' own dtype
    (float32, or what ``mindspore.amp`` cast them to)."""
    if dtype is None:
        return op(a, b)
    return ops.cast(op(ops.cast(a, dtype), ops.cast(b, dtype)), mstype.float32)
