"""Early-exit inference with a DVT cascade: each sample runs only as many stages as it needs.

:class:`AdaptiveClassifier` runs stage 1 on the whole batch, lets every sample whose top softmax
probability reaches the exit's threshold leave, and runs the next stage on the rest only, with the
reused tokens and attention logits gathered for just those samples. The exit rule is the one of
:func:`dvt_ms.budget.exit_assignment`, so the predictions equal those of the full cascade at the
exits taken.

The engine calls the model's own stage cells (:class:`~dvt_ms.models.dvt.CascadeStage`), whose named
inputs and outputs are the cascade spec's ``stage_io``: a stage may reuse the outputs of any earlier
stage, and the engine keeps each stage's outputs for as long as a later stage needs them. Two
batch-shape strategies are offered:

- ``"dynamic"``: one graph per stage, compiled once with a dynamic batch dimension
  (``Cell.set_inputs``). Any remainder size runs without a recompile. On MindSpore 2.10's CPU backend
  the dynamic-shape Transpose and 4-D batched MatMul kernels are 2-3x slower than the static ones,
  which makes a stage 20-30% slower (see BENCHMARKS.md).
- ``"buckets"``: static graphs for a few batch sizes (by default 1, 2, 3, 4, 6, 8, 12, ..., 64 on CPU; on
  GPU/Ascend the compile budget's gears 1, 2, 4, ..., 64, :mod:`dvt_ms.utils.gears`). A
  remainder runs as one or a few bucket-sized calls; only the last is padded (by repeating one of its
  rows; the padding's outputs are dropped). Each (stage, bucket) compiles once, on first use; later
  remainders reuse the cached graphs. This is the faster mode once the buckets in use are compiled.
"""
from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import mindspore as ms
import numpy as np
from mindspore import Tensor, nn, ops

from ..evaluate import softmax
from ..models.cascade_spec import CascadeSpec
from ..models.dvt import CascadeStage, DynamicVisionTransformer
from ..utils.gears import bucket_gears, uses_gears
from .thresholds import check_thresholds

logger = logging.getLogger(__name__)

__all__ = ["AdaptiveClassifier", "EngineStage", "ExitResult", "SHAPE_MODES", "default_buckets", "exit_probabilities",
           "stage_input_specs", "topk"]

SHAPE_MODES = ("dynamic", "buckets")
DEFAULT_MAX_BUCKET = 64


# --------------------------------------------------------------------------------------------------
# stage cells
# --------------------------------------------------------------------------------------------------
class EngineStage(nn.Cell):
    """An engine's own handle on one :class:`~dvt_ms.models.dvt.CascadeStage` (shared parameters, same
    names): each engine compiles, and caches, its own graphs of the stage."""

    def __init__(self, stage: CascadeStage):
        super().__init__(auto_prefix=False)
        self.stage = stage
        self.set_train(False)  # inference graphs (the "predict" phase), compiled once per input shape

    def construct(self, *inputs):
        return self.stage.forward(*inputs)


def _check_cascade(model: Any) -> DynamicVisionTransformer:
    if not isinstance(model, DynamicVisionTransformer):
        raise TypeError(f"model must be a DynamicVisionTransformer (a dvt_* model), got {type(model).__name__}")
    return model


def stage_input_specs(spec: CascadeSpec, index: int, batch: Optional[int] = None) -> List[Tensor]:
    """Placeholder tensors of stage ``index``'s inputs (``spec.stage_io``); ``batch=None`` is dynamic."""
    return [Tensor(shape=list(t.shape), dtype=ms.float32) for t in spec.stage_io(index, batch).inputs]


# --------------------------------------------------------------------------------------------------
# numerics shared with calibration
# --------------------------------------------------------------------------------------------------
def topk(probs: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray]:
    """``(classes, probs)`` of the ``k`` most probable classes per row, most probable first."""
    probs = np.asarray(probs)
    if probs.ndim != 2:
        raise ValueError(f"probs must be 2-D [B, C], got shape {probs.shape}")
    k = min(int(k), probs.shape[1])
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(probs, order, axis=1)


@dataclass
class ExitResult:
    """Per-sample outcome of an early-exit run, in input order (all numpy).

    ``exits`` are 0-based; ``probs``/``logits`` are those of the exit each sample took, or None if not
    requested.
    """

    predictions: np.ndarray  # int64 [B]
    exits: np.ndarray  # int64 [B]
    confidences: np.ndarray  # float32 [B]
    probs: Optional[np.ndarray] = None  # float32 [B, num_classes]
    logits: Optional[np.ndarray] = None  # float32 [B, num_classes]

    def __len__(self) -> int:
        return int(self.predictions.shape[0])

    def exit_counts(self, n_exits: int) -> np.ndarray:
        """How many samples left at each exit."""
        return np.bincount(self.exits, minlength=n_exits)


def default_buckets(max_batch: int = DEFAULT_MAX_BUCKET) -> Tuple[int, ...]:
    """Powers of two and three times powers of two up to ``max_batch`` (plus ``max_batch``)."""
    sizes = {max_batch}
    power = 1
    while power <= max_batch:
        sizes.add(power)
        if 3 * power // 2 <= max_batch and power >= 2:
            sizes.add(3 * power // 2)
        power *= 2
    return tuple(sorted(sizes))


def _pad_rows(rows: np.ndarray, size: int) -> np.ndarray:
    """``rows`` extended to ``size`` entries by repeating its first row (padding whose output is dropped)."""
    if size == rows.shape[0]:
        return rows
    return np.concatenate([rows, np.full(size - rows.shape[0], rows[0], dtype=rows.dtype)])


def _gather_rows(tensor: Tensor, rows: np.ndarray) -> Tensor:
    if rows.shape[0] == tensor.shape[0] and np.array_equal(rows, np.arange(rows.shape[0])):
        return tensor
    return ops.gather(tensor, Tensor(rows.astype(np.int32)), 0)


# --------------------------------------------------------------------------------------------------
# the engine
# --------------------------------------------------------------------------------------------------
class AdaptiveClassifier:
    """Early-exit classifier over a :class:`DynamicVisionTransformer`.

    ``thresholds[k]`` is the confidence (top softmax probability) at which a sample leaves at exit
    ``k``; the last one must accept everyone (normally -1e8). ``shape_mode`` is ``"buckets"`` (the
    default: static graphs for the ``buckets`` batch sizes only, see :meth:`batch_plan`; each compiles once
    on first use) or ``"dynamic"`` (one graph per stage for any batch size, but MindSpore 2.10's CPU
    kernels run 20-30% slower with a dynamic batch dimension, see BENCHMARKS.md). The model is put in eval mode; its parameters are shared, not copied.
    With ``"dynamic"``, the stage graphs are compiled on MindSpore's own ops (the fused CPU kernels of
    :mod:`dvt_ms.kernels` need static shapes); the model itself keeps its kernels.

    The engine runs in the precision the model was built with (``create_model(..., precision=...)``),
    reported as :attr:`precision`; ``precision``, if given, must be that one. A CPU ``bf16`` model needs
    ``"buckets"`` (MindSpore's own CPU ops, which ``"dynamic"`` compiles on, are float32).
    """

    def __init__(self, model: DynamicVisionTransformer, thresholds: Any, *, shape_mode: str = "buckets",
                 buckets: Optional[Sequence[int]] = None, precision: Optional[str] = None):
        self.model = _check_cascade(model)
        kernels = model.kernels
        if precision is not None and precision != kernels.model_precision:
            raise ValueError(f"precision {precision!r}: the model was built for {kernels.model_precision!r}; "
                             f"build it with create_model(..., precision={precision!r})")
        if shape_mode == "dynamic" and kernels.available and kernels.model_precision != "fp32":
            raise ValueError(f"shape_mode 'dynamic' runs on MindSpore's float32 CPU ops, not in "
                             f"{kernels.model_precision}; use shape_mode 'buckets' or precision fp32")
        self.num_exits = int(model.num_exits)
        self.thresholds = check_thresholds(thresholds, self.num_exits)
        if shape_mode not in SHAPE_MODES:
            raise ValueError(f"shape_mode must be one of {', '.join(SHAPE_MODES)}, got {shape_mode!r}")
        self.shape_mode = shape_mode
        self.buckets: Tuple[int, ...] = ()
        if shape_mode == "buckets":
            if buckets is None:  # GPU/Ascend: a bounded set of gears (compile budget)
                buckets = bucket_gears(DEFAULT_MAX_BUCKET) if uses_gears(kernels.device_target) else default_buckets()
            self.buckets = self._check_buckets(buckets)
        elif buckets is not None:
            raise ValueError("buckets are only used with shape_mode='buckets'")
        self.spec: CascadeSpec = model.spec
        self.image_size = int(self.spec.image_size)
        self.num_classes = int(self.spec.num_classes)
        model.set_train(False)
        self.cells = [EngineStage(stage) for stage in model.stages]
        self._stage_ops = contextlib.nullcontext
        if shape_mode == "dynamic":
            self._stage_ops = model.kernels.stock
            for k, cell in enumerate(self.cells):
                cell.set_inputs(*stage_input_specs(self.spec, k))
        # per stage: graph batch size -> number of calls (what ran, for tests and benchmarks)
        self.stage_batches: List[Dict[int, int]] = [{} for _ in self.cells]

    @property
    def precision(self) -> str:
        """The precision the stage graphs run in (``fp32``, ``bf16``, ``fp16``)."""
        with self._stage_ops():
            return self.model.kernels.precision

    @staticmethod
    def _check_buckets(buckets: Sequence[int]) -> Tuple[int, ...]:
        values = sorted(set(int(b) for b in buckets))
        if not values or values[0] < 1 or any(float(b) != int(b) for b in buckets):
            raise ValueError(f"buckets must be positive integers, got {list(buckets)!r}")
        return tuple(values)

    def set_thresholds(self, thresholds: Any) -> None:
        """Replace the per-exit thresholds (validated as in the constructor)."""
        self.thresholds = check_thresholds(thresholds, self.num_exits)

    def compiled_graphs(self) -> List[int]:
        """How many graphs MindSpore has compiled for each stage so far."""
        return [len(cell.compile_cache) for cell in self.cells]

    def _check_images(self, images: Any) -> np.ndarray:
        if isinstance(images, Tensor):
            images = images.asnumpy()
        if not isinstance(images, np.ndarray):
            raise TypeError(f"images must be a numpy array or a MindSpore Tensor, got {type(images).__name__}")
        size = self.image_size
        if images.ndim != 4 or images.shape[1:] != (3, size, size):
            raise ValueError(f"images must have shape [B, 3, {size}, {size}], got {tuple(images.shape)}")
        if images.shape[0] < 1:
            raise ValueError("images is an empty batch")
        if not (np.issubdtype(images.dtype, np.floating) or np.issubdtype(images.dtype, np.integer)):
            raise TypeError(f"images must be real numbers, got dtype {images.dtype}")
        images = np.ascontiguousarray(images, dtype=np.float32)
        finite = np.isfinite(images.reshape(images.shape[0], -1)).all(axis=1)
        if not finite.all():
            raise ValueError(f"images[{int(np.flatnonzero(~finite)[0])}] contains NaN or Inf")
        return images

    def batch_plan(self, n: int) -> List[Tuple[int, int, int]]:
        """How ``n`` rows run through one stage: ``(start, stop, graph batch size)`` per call.

        Dynamic shapes: one call. Buckets: the rest is padded up to the next bucket if that wastes at most
        an eighth of it (or one row); otherwise the largest bucket that fits runs first, unpadded.
        """
        if self.shape_mode == "dynamic":
            return [(0, n, n)]
        plan = []
        start = 0
        while start < n:
            left = n - start
            up = next((b for b in self.buckets if b >= left), None)
            down = max((b for b in self.buckets if b <= left), default=None)
            if up is not None and (down is None or up - left <= max(1, left // 8)):
                plan.append((start, n, up))
                break
            plan.append((start, start + down, down))
            start += down
        return plan

    def __call__(self, images: Any, *, return_probs: bool = False, return_logits: bool = False) -> ExitResult:
        """Classify ``images`` ``[B, 3, H, W]`` (normalized, float32) with early exits."""
        images = self._check_images(images)
        batch = images.shape[0]
        predictions = np.zeros(batch, dtype=np.int64)
        exits = np.full(batch, -1, dtype=np.int64)
        confidences = np.zeros(batch, dtype=np.float32)
        all_probs = np.zeros((batch, self.num_classes), np.float32) if return_probs else None
        all_logits = np.zeros((batch, self.num_classes), np.float32) if return_logits else None

        remaining = np.arange(batch)  # input rows still in the cascade, ascending
        x = Tensor(images)
        given: Dict[int, Tuple[np.ndarray, Dict[str, Tensor]]] = {}  # stage -> (its input rows, outputs by name)
        for k, cell in enumerate(self.cells):
            io = cell.stage.io
            n = remaining.shape[0]
            reused = []  # (tensor, row of each remaining sample in it)
            for tensor_spec in io.inputs[1:]:
                source, name = tensor_spec.source
                source_rows, outputs = given[source]
                reused.append((outputs[name], np.searchsorted(source_rows, remaining)))
            calls = []
            for start, stop, size in self.batch_plan(n):
                args = [_gather_rows(x, _pad_rows(remaining[start:stop], size))]
                args += [_gather_rows(t, _pad_rows(rows[start:stop], size)) for t, rows in reused]
                with self._stage_ops():  # a dynamic-shape stage compiles (once) on MindSpore's ops
                    calls.append(cell(*args))
                self.stage_batches[k][size] = self.stage_batches[k].get(size, 0) + 1
            # only the last call is padded, so rows 0..n-1 of the concatenation are the remaining samples
            logits = np.concatenate([c[0].asnumpy() for c in calls])[:n]
            probs = softmax(logits)
            conf = probs.max(axis=1)
            leave = conf >= self.thresholds[k]
            done = remaining[leave]
            predictions[done] = probs[leave].argmax(axis=1)
            exits[done] = k
            confidences[done] = conf[leave]
            if all_probs is not None:
                all_probs[done] = probs[leave]
            if all_logits is not None:
                all_logits[done] = logits[leave]
            if leave.all():
                break
            if len(io.outputs) > 1:
                given[k] = (remaining, {name: calls[0][j] if len(calls) == 1 else ops.concat([c[j] for c in calls])
                                        for j, name in enumerate(io.output_names) if j > 0})
            remaining = remaining[~leave]
        if (exits < 0).any():  # unreachable: the last threshold is validated to accept everyone
            raise RuntimeError("some samples left at no exit")
        return ExitResult(predictions, exits, confidences, all_probs, all_logits)


def exit_probabilities(model: DynamicVisionTransformer, images: Any, batch_size: int = 64) -> np.ndarray:
    """Softmax outputs ``[n_exits, N, C]`` of the full cascade (every exit, every sample)."""
    model = _check_cascade(model)
    if isinstance(images, Tensor):
        images = images.asnumpy()
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 4 or images.shape[0] < 1:
        raise ValueError(f"images must have shape [N, 3, H, W] with N >= 1, got {images.shape}")
    model.set_train(False)
    chunks = []
    for start in range(0, images.shape[0], batch_size):
        outputs = model(Tensor(images[start:start + batch_size]))
        chunks.append(np.stack([softmax(o.asnumpy()) for o in outputs]))
    return np.concatenate(chunks, axis=1)
