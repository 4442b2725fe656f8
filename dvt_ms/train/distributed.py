"""Data-parallel set-up: start the communication, know this process's rank, sum numbers over ranks.

Launchers. ``msrun`` (single or multi node) starts one worker per device and exports ``MS_WORKER_NUM``,
``MS_ROLE``, ``MS_SCHED_HOST``/``MS_SCHED_PORT`` and ``RANK_ID``; an Ascend rank table launch
(``scripts/run_distributed_ascend.sh``) exports ``RANK_TABLE_FILE``, ``RANK_SIZE`` and ``RANK_ID``.
:func:`launched_distributed` looks for either, so ``distributed: null`` (the default) turns data
parallelism on exactly when a launcher started the process.

:func:`init_distributed` calls ``mindspore.communication.init()`` and sets the auto-parallel context
to ``DATA_PARALLEL`` with ``gradients_mean=True``; the training step then averages gradients over the
ranks (:class:`~dvt_ms.train.step.TrainStep`). The device must be set first.

:meth:`DistributedContext.all_reduce_sum` sums a small numpy vector over the ranks (validation counts,
loss sums, "has a batch" flags). On the CPU backend MindSpore 2.10 only has a float32 SUM all-reduce,
compiled as a graph (the functional ``comm_func.all_reduce`` has no CPU kernel), so every reduction
here is a float32 sum: integer counts are exact up to 2**24 per entry.
"""
import hashlib
import logging
import os
from dataclasses import dataclass
from typing import Dict, Optional, Sequence

import numpy as np
import mindspore as ms
from mindspore import Tensor, nn, ops
from mindspore.communication import get_group_size, get_rank, init

logger = logging.getLogger(__name__)

__all__ = ["DistributedContext", "DistributedError", "SINGLE", "init_distributed", "launched_distributed",
           "weights_digest"]

#: Largest integer a float32 sum carries exactly.
EXACT_FLOAT32_INT = 2 ** 24
_MSRUN_ENV = ("MS_WORKER_NUM", "MS_ROLE")
_RANK_TABLE_ENV = ("RANK_TABLE_FILE",)


class DistributedError(RuntimeError):
    """The communication could not be started, or a cross-rank reduction failed."""


def launched_distributed(environ: Optional[Dict[str, str]] = None) -> bool:
    """Whether this process was started by ``msrun`` or an Ascend rank-table launcher."""
    env = os.environ if environ is None else environ
    return any(k in env for k in _MSRUN_ENV + _RANK_TABLE_ENV)


class _SumAllReduce:
    """A compiled SUM all-reduce of float32 vectors (one graph per vector length)."""

    def __init__(self):
        class _Cell(nn.Cell):
            def __init__(self):
                super().__init__()
                self.reduce = ops.AllReduce(ops.ReduceOp.SUM)

            def construct(self, x):
                return self.reduce(x)

        self._cell = _Cell()

    def __call__(self, values: np.ndarray) -> np.ndarray:
        return self._cell(Tensor(values)).asnumpy()


@dataclass
class DistributedContext:
    """This process's place in the job: ``rank`` in ``[0, world_size)``; rank 0 writes the files."""

    rank: int = 0
    world_size: int = 1
    _reducer: Optional[_SumAllReduce] = None

    @property
    def enabled(self) -> bool:
        """Whether more than one process takes part."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: logs progress, writes checkpoints, metrics and plots."""
        return self.rank == 0

    @property
    def num_shards(self) -> Optional[int]:
        """``num_shards`` for MindData (``None`` for a single process)."""
        return self.world_size if self.enabled else None

    @property
    def shard_id(self) -> Optional[int]:
        """``shard_id`` for MindData (``None`` for a single process)."""
        return self.rank if self.enabled else None

    def all_reduce_sum(self, values: Sequence[float], exact_ints: bool = False) -> np.ndarray:
        """Elementwise sum of ``values`` over all ranks (float64 result; identity for one process).

        Every rank must call it with vectors of the same length, in the same order. With
        ``exact_ints`` the values are counts: integers whose sums stay below 2**24, so the float32
        sum is exact.
        """
        array = np.asarray(values, dtype=np.float64).reshape(-1)
        if exact_ints:
            _check_exact(array, self.world_size)
        result = self._reduce(array)
        return np.round(result) if exact_ints else result

    def all_gather(self, values: Sequence[float], exact_ints: bool = False) -> np.ndarray:
        """``[world_size, len(values)]``: every rank's ``values`` (a sum where each rank fills its own row)."""
        array = np.asarray(values, dtype=np.float64).reshape(-1)
        if exact_ints:
            _check_exact(array, 1)
        rows = np.zeros((self.world_size, array.size))
        rows[self.rank] = array
        result = self._reduce(rows.reshape(-1)).reshape(self.world_size, array.size)
        return np.round(result) if exact_ints else result

    def _reduce(self, array: np.ndarray) -> np.ndarray:
        if not self.enabled:
            return array.copy()
        if self._reducer is None:
            self._reducer = _SumAllReduce()
        try:
            summed = self._reducer(array.astype(np.float32))
        except RuntimeError as exc:
            raise DistributedError(f"rank {self.rank}: all-reduce over {self.world_size} ranks failed: {exc}") \
                from None
        return summed.astype(np.float64)

    def check_replicas(self, net) -> str:
        """Check that every rank holds bit-identical weights; returns the digest (hex).

        Raises :class:`DistributedError` naming the ranks that differ from rank 0.
        """
        digest = weights_digest(net)
        if not self.enabled:
            return digest
        chunks = [int(digest[i:i + 6], 16) for i in range(0, 24, 6)]  # 4 x 24 bits, exact in float32
        table = self.all_gather(chunks, exact_ints=True).astype(np.int64)
        differ = [r for r in range(self.world_size) if not np.array_equal(table[r], table[0])]
        if differ:
            raise DistributedError(f"the weights of rank(s) {differ} differ from rank 0's: the replicas diverged")
        return digest


def _check_exact(array: np.ndarray, terms: int) -> None:
    if np.any(array != np.round(array)) or np.any(np.abs(array) * terms >= EXACT_FLOAT32_INT):
        raise DistributedError(f"cannot sum the counts {array.tolist()[:8]} exactly in float32 over {terms} "
                               "rank(s)")


def weights_digest(net) -> str:
    """SHA-256 (first 24 hex digits) of every parameter's name, shape, dtype and bytes, in order."""
    hasher = hashlib.sha256()
    for param in net.get_parameters():
        value = np.ascontiguousarray(param.asnumpy())
        hasher.update(f"{param.name}:{value.shape}:{value.dtype};".encode())
        hasher.update(value.tobytes())
    return hasher.hexdigest()[:24]


#: The context of a single-process run.
SINGLE = DistributedContext()


def init_distributed(enabled: Optional[bool] = None) -> DistributedContext:
    """Start data parallelism if ``enabled`` (``None``: if :func:`launched_distributed`).

    Call after the device is set (``configure_device``). Returns the rank and world size; raises
    :class:`DistributedError` with the launcher hints if the communication cannot start.
    """
    if enabled is None:
        enabled = launched_distributed()
    if not enabled:
        return DistributedContext()
    if not launched_distributed():
        raise DistributedError("distributed: true, but no launcher started this process: run it with msrun "
                               "(scripts/run_msrun.sh) or an Ascend rank table "
                               "(scripts/run_distributed_ascend.sh)")
    try:
        init()
        rank, world_size = int(get_rank()), int(get_group_size())
    except RuntimeError as exc:
        raise DistributedError(f"could not start the distributed communication ({exc}); check the launcher's "
                               "master address/port and that every worker was started") from None
    ms.reset_auto_parallel_context()
    ms.set_auto_parallel_context(parallel_mode=ms.ParallelMode.DATA_PARALLEL, gradients_mean=True,
                                 device_num=world_size)
    logger.info("data parallel: rank %d of %d", rank, world_size)
    return DistributedContext(rank, world_size)
