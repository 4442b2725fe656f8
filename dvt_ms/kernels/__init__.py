"""Fused C++ kernels for the CPU backend: dense layers, attention and DVT reuse products, DVT's sparse relation
resampling, LayerNorm, bias + exact GELU, softmax, the attention-head layout and a non-finite count, each with
its backward, and the AdamW update in place.

MindSpore 2.10's own CPU kernels for these ops are slow: a LayerNorm backward on ``[8, 197, 384]`` takes
about 8 ms, against 0.5 ms in PyTorch, and its MatMul reaches 140-160 GFLOP/s on a DeiT-S layer where the
sgemm of the oneDNN library it ships reaches 190-215. ``cpu_ops.cc`` implements them as AOT custom
operators (``ops.Custom(func_type="aot")``, see :mod:`dvt_ms.kernels.ops`). The library is compiled with
the system C++ compiler on first use, linked against MindSpore's ``lib/libdnnl.so.3``, and cached under
``$DVT_MS_KERNEL_CACHE`` (default ``~/.cache/dvt_ms/kernels``), keyed by the source, the build command
and the host CPU, so a shared home folder never serves a library built for another CPU or MindSpore.

Whether a model uses them is a :class:`~dvt_ms.kernels.choice.KernelChoice`, resolved once when the
model is built (``create_model(..., cpu_kernels="auto"|"on"|"off")``, the config key ``cpu_kernels``, or
``$DVT_MS_CPU_KERNELS`` as the default mode) and held by the model as ``net.kernels``, with the model's
precision (``create_model(..., precision="fp32"|"bf16"|"fp16")``, see :mod:`dvt_ms.kernels.choice`). GPU and
Ascend always use MindSpore's ops, in the precision's mixed-precision mapping
(:mod:`dvt_ms.kernels.precision`).
"""
from .build import CPU_KERNEL_MODES, KernelBuildError, library_key, library_path
from .choice import (BF16_CPU_FLAGS, PRECISIONS, STOCK, KernelChoice, UsesKernels, check_precision, cpu_bf16_flags,
                     cpu_supports_bf16, default_mode)

__all__ = ["BF16_CPU_FLAGS", "CPU_KERNEL_MODES", "KernelBuildError", "KernelChoice", "PRECISIONS", "STOCK",
           "UsesKernels", "check_precision", "cpu_bf16_flags", "cpu_supports_bf16", "default_mode", "library_key", "library_path"]
