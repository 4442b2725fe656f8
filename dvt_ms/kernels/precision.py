"""The MindSpore side of the precision rules (the rules themselves: :mod:`dvt_ms.precision`).

A model carries its precision into its layers (:class:`~dvt_ms.kernels.choice.KernelChoice`). On CPU with
the fused kernels, ``bf16`` runs their products on bfloat16 operands. With MindSpore's own ops (GPU, Ascend,
and CPU with ``cpu_kernels: off``), ``fp16`` and ``bf16`` cast the operands of every dense and matrix
product (dense layers, attention scores and mix, DVT reuse products) to the low dtype and the product back
to float32 (:func:`dvt_ms.layers.products.low_precision_product`). LayerNorm, softmax, GELU, the T2T
Performer's random-feature attention, the exit logits and confidences and everything outside the products
stay float32. It is what
``mindspore.amp`` level O1 means (its white list: dense and matrix products), held by the model instead of
a source rewrite, so it holds for every cascade, in the engine's stage graphs and in exported files.

On CPU, MindSpore's float16 kernels run the GPU/Ascend graph, slowly: ``cpu_kernels: off`` with ``fp16``
is for checking that graph, not for speed.
"""
from mindspore.common import dtype as mstype

__all__ = ["AMP_DTYPES", "CHECK_GRAPH_NOTE"]

#: the MindSpore dtype of each low precision
AMP_DTYPES = {"bf16": mstype.bfloat16, "fp16": mstype.float16}
#: what the log says when the GPU/Ascend float16 graph runs on CPU
CHECK_GRAPH_NOTE = ("MindSpore's own float16 ops on CPU: this checks the GPU/Ascend graph and is slow "
                    "(for speed on CPU use the fused kernels in fp32 or bf16)")

