"""Plain-PyTorch re-implementations of the official models (:mod:`dvt_ms.reference.torch_models`).

They need torch, which is no runtime dependency of dvt_ms: this package imports nothing, and only the
parity tests and the benchmark's torch rows import :mod:`~dvt_ms.reference.torch_models`.
"""
