"""Token-grid resampling as constant matrices.

DVT resamples a ``src x src`` token grid to ``dst x dst`` by nearest upsampling to an intermediate grid
and adaptive average pooling down to ``dst``. The intermediate size of the official code (14 for 7->10,
20 for 10->14) is the smallest multiple of ``src`` that is at least ``dst``, which makes the upsampling
an exact replication. Both steps are linear, so the whole map is one ``[dst**2, src**2]`` matrix.
"""
import math

import numpy as np


def intermediate_size(src: int, dst: int) -> int:
    """Size of the nearest-upsampled grid before pooling down to ``dst``."""
    return src * math.ceil(dst / src)


def _nearest_matrix(src: int, size: int) -> np.ndarray:
    """``[size, src]`` selection matrix of nearest upsampling (``size`` is a multiple of ``src``)."""
    rows = np.arange(size)
    matrix = np.zeros((size, src), dtype=np.float64)
    matrix[rows, rows * src // size] = 1.0
    return matrix


def _adaptive_avg_pool_matrix(size: int, dst: int) -> np.ndarray:
    """``[dst, size]`` averaging matrix of 1-D adaptive average pooling."""
    matrix = np.zeros((dst, size), dtype=np.float64)
    for i in range(dst):
        start = (i * size) // dst
        end = -(-((i + 1) * size) // dst)
        matrix[i, start:end] = 1.0 / (end - start)
    return matrix


def axis_resample_matrix(src: int, dst: int) -> np.ndarray:
    """``[dst, src]`` matrix of the resampling along one grid axis (a few nonzeros per row)."""
    size = intermediate_size(src, dst)
    return _adaptive_avg_pool_matrix(size, dst) @ _nearest_matrix(src, size)


def grid_resample_matrix(src: int, dst: int) -> np.ndarray:
    """``[dst**2, src**2]`` matrix mapping a row-major ``src x src`` grid to ``dst x dst``: both axes'."""
    axis = axis_resample_matrix(src, dst)
    return np.kron(axis, axis)


def token_resample_matrix(src: int, dst: int, class_token_weight: float) -> np.ndarray:
    """``[1 + dst**2, 1 + src**2]`` matrix that resamples image tokens and scales the class token.

    ``class_token_weight`` is 1 to carry the class token over (relation reuse) and 0 to zero its slot
    (feature reuse).
    """
    grid = grid_resample_matrix(src, dst)
    matrix = np.zeros((1 + dst * dst, 1 + src * src), dtype=np.float32)
    matrix[0, 0] = class_token_weight
    matrix[1:, 1:] = grid
    return matrix
