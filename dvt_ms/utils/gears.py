"""The compile budget on GPU and Ascend: shapes that vary at run time snap to a bounded set of gears.

Every distinct static shape is one more graph to compile, and compiling is slow on GPU and above all on
Ascend (minutes per graph for a DeiT-S training step). Two shapes vary at run time: the EViT keep rate of
the training schedule (each first-block token count is a graph) and the batch sizes of the early-exit
engine's buckets (a graph per stage and bucket). On GPU and Ascend both are held to at most
:data:`MAX_GEARS` values per stage; CPU compiles fast and keeps the finer defaults.
"""
import math
from typing import Tuple

__all__ = ["ACCELERATORS", "MAX_GEARS", "bucket_gears", "keep_count_gears", "uses_gears"]

#: the devices whose compile time the gears bound
ACCELERATORS = ("GPU", "Ascend")
#: the most graphs per stage for each run-time shape (keep-rate token counts, engine bucket sizes)
MAX_GEARS = 8


def uses_gears(device_target: str) -> bool:
    """Whether runs on ``device_target`` snap their run-time shapes to gears."""
    return device_target in ACCELERATORS


def bucket_gears(max_batch: int, gears: int = MAX_GEARS) -> Tuple[int, ...]:
    """The engine's batch-size buckets: ``max_batch`` and the largest powers of two below it, ``gears`` at most."""
    if max_batch < 1 or gears < 1:
        raise ValueError(f"max_batch and gears must be >= 1, got {max_batch} and {gears}")
    sizes = {max_batch} | {2 ** i for i in range(int(math.log2(max_batch)) + 1)}
    return tuple(sorted(sizes)[-gears:])


def keep_count_gears(target_count: int, num_tokens: int, gears: int = MAX_GEARS) -> Tuple[int, ...]:
    """First-block kept-token counts for a keep-rate schedule from all ``num_tokens`` down to
    ``target_count``: both ends and evenly spaced counts between them, ``gears`` at most."""
    if not 1 <= target_count <= num_tokens or gears < 2:
        raise ValueError(f"need 1 <= target_count <= num_tokens and gears >= 2, got {target_count}, {num_tokens}, "
                         f"{gears}")
    span = num_tokens - target_count
    return tuple(sorted({target_count + round(span * i / (gears - 1)) for i in range(gears)}))
