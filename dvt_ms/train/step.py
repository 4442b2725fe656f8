"""One compiled training step: forward, multi-exit loss, gradients, gradient sync, clipping, update.

:class:`TrainStep` builds one ``ms.jit`` graph from ``ms.value_and_grad`` (not ``nn.TrainOneStepCell``):
the graph also computes the finite check, the gradient norm and the per-exit losses, and it applies
the optimizer only when everything is finite -- the TrainOneStepCell family has no place for a loss
with auxiliary outputs plus a skip, and their loss-scale variant is tied to ``nn.Cell`` loss wrappers.

Order inside the graph: forward (``net(x)``, or ``net(x, keep_rate)`` for EViT) -> loss (scaled when
a loss scaler is set) -> gradients w.r.t. ``optimizer.parameters`` -> **all-reduce (mean) across
ranks in DATA_PARALLEL mode** -> unscale -> finite check of the loss and of every gradient (in DATA_PARALLEL
the flags are summed across ranks too, so all ranks take the same decision) -> optional global-norm
clipping (PyTorch's ``clip_grad_norm_``) -> optimizer update only if finite; on a skipped step only
the optimizer's ``global_step`` (the lr schedule position) advances, so the weights, moments and the
EMA are untouched.

A non-finite *loss* is fatal: by default :class:`NonFiniteError` is raised naming the global step
(``raise_on_nonfinite=False`` just reports it in :class:`StepOutput`). Non-finite *gradients* with a
finite loss under a dynamic loss scaler are an fp16 overflow: the step is skipped, the scale is
lowered, and training goes on; without a dynamic scaler they are fatal as well.

Mixed precision: ``amp_level`` O0 (float32, default), O1, O2 or O3 through
``ms.amp.auto_mixed_precision`` (which changes ``net`` in place) in ``amp_dtype`` (float16 or bfloat16),
with a dynamic loss scaler by default for float16 only. A model that carries its precision (the fused
CPU kernels' bf16, or level O1 with MindSpore's ops: ``create_model(..., precision=...)``) is stepped at O0.
On CPU MindSpore's amp is refused for a model on the fused kernels; a model built with ``cpu_kernels="off"``
takes it in float16 (the GPU/Ascend graph, for checking; :mod:`dvt_ms.precision`).
"""
import logging
from dataclasses import dataclass
from typing import Optional, Tuple, Union

import mindspore as ms
import numpy as np
from mindspore import Tensor, nn, ops
from mindspore.amp import DynamicLossScaler, LossScaler, StaticLossScaler, all_finite
from mindspore.common import dtype as mstype
from mindspore.nn import DistributedGradReducer
from mindspore.ops import AllReduce, ReduceOp

from ..kernels.ops import non_finite_count_op
from ..kernels.precision import AMP_DTYPES
from .ema import ModelEMA
from .loss import check_targets
from ..precision import AMP_LEVELS

logger = logging.getLogger(__name__)

__all__ = ["TrainStep", "StepOutput", "NonFiniteError", "AMP_LEVELS", "build_grad_sync",
           "create_loss_scaler", "prepare_amp"]

#: Warn when a step has compiled this many graphs for distinct EViT keep rates.
KEEP_RATE_GRAPH_WARNING = 16

_square_sum = ops.MultitypeFuncGraph("dvt_ms_square_sum")
_scale_grad = ops.MultitypeFuncGraph("dvt_ms_scale_grad")


@_square_sum.register("Tensor")
def _square_sum_one(grad):
    return ops.square(ops.cast(grad, mstype.float32)).sum()


@_scale_grad.register("Tensor", "Tensor")
def _scale_grad_one(scale, grad):
    return grad * ops.cast(scale, grad.dtype)


@dataclass(frozen=True)
class StepOutput:
    """What one training step did. ``step`` is the 0-based global step (index into the lr schedule)."""

    step: int
    loss: float
    exit_losses: Tuple[float, ...]
    loss_finite: bool
    grads_finite: bool
    applied: bool
    loss_scale: float = 1.0
    grad_norm: Optional[float] = None

    @property
    def finite(self) -> bool:
        """Whether the loss and every gradient were finite."""
        return self.loss_finite and self.grads_finite

    @property
    def overflow(self) -> bool:
        """Finite loss but non-finite gradients (an fp16 overflow when loss scaling is dynamic)."""
        return self.loss_finite and not self.grads_finite


class NonFiniteError(FloatingPointError):
    """A training step produced a NaN/Inf loss or gradients; the weights were not updated."""

    def __init__(self, output: StepOutput):
        what = "loss" if not output.loss_finite else "gradients"
        super().__init__(f"non-finite {what} at global step {output.step} (loss {output.loss}, exit losses "
                         f"{list(output.exit_losses)}); the update was skipped and the weights are unchanged")
        self.output = output


class _DataParallelSync(nn.Cell):
    """Mean all-reduce of the gradients, sum all-reduce of the "loss not finite" flag."""

    def __init__(self, parameters, degree: Optional[int] = None):
        super().__init__(auto_prefix=False)
        self.grad_reducer = DistributedGradReducer(parameters, mean=True, degree=degree)
        self.flag_reducer = AllReduce(ReduceOp.SUM)

    def construct(self, grads, loss_bad):
        return self.grad_reducer(grads), self.flag_reducer(loss_bad)


def build_grad_sync(parameters, parallel_mode: Optional[str] = None) -> Optional[nn.Cell]:
    """The cross-rank gradient sync for ``parallel_mode`` (default: the auto-parallel context's).

    ``stand_alone``: none. ``data_parallel``: always a ``DistributedGradReducer`` averaging over the
    ranks -- whatever ``gradients_mean`` says, since the loss is a per-rank mean and the lr is scaled to
    the global batch; without it every rank would step on its own gradients and the replicas would
    silently drift apart. Other modes (semi/auto/hybrid parallel) are not supported by this step.
    """
    mode = parallel_mode or ms.get_auto_parallel_context("parallel_mode")
    if mode == ms.ParallelMode.STAND_ALONE:
        return None
    if mode == ms.ParallelMode.DATA_PARALLEL:
        if not ms.get_auto_parallel_context("gradients_mean"):
            logger.info("data parallel: averaging gradients over ranks (gradients_mean=False is ignored)")
        return _DataParallelSync(parameters)
    raise ValueError(f"parallel_mode {mode!r} is not supported by TrainStep; use "
                     f"{ms.ParallelMode.STAND_ALONE!r} or {ms.ParallelMode.DATA_PARALLEL!r}")


def prepare_amp(net: nn.Cell, amp_level: str = "O0", device_target: Optional[str] = None,
                amp_dtype: str = "fp16") -> nn.Cell:
    """Apply ``amp_level`` in ``amp_dtype`` to ``net`` in place (O0: nothing); on CPU only float16, to a
    model on MindSpore's own ops (``cpu_kernels="off"``)."""
    if amp_level not in AMP_LEVELS:
        raise ValueError(f"amp_level must be one of {', '.join(AMP_LEVELS)}, got {amp_level!r}")
    if amp_level == "O0":
        return net
    device = device_target or ms.get_context("device_target")
    kernels = getattr(net, "kernels", None)
    if device == "CPU" and (kernels is None or kernels.available or amp_dtype != "fp16"):
        raise ValueError(f"amp_level {amp_level!r} is not supported on CPU for a model on the fused kernels or in "
                         "bfloat16: use amp_level 'O0' (for bf16 on CPU, build the model with precision='bf16'); "
                         "float16 amp on CPU needs a model built with cpu_kernels='off' (it checks the GPU/Ascend "
                         "graph, slowly)")
    if amp_dtype not in AMP_DTYPES:
        raise ValueError(f"amp_dtype must be one of {', '.join(AMP_DTYPES)}, got {amp_dtype!r}")
    return ms.amp.auto_mixed_precision(net, amp_level, dtype=AMP_DTYPES[amp_dtype])


def create_loss_scaler(loss_scale: Union[None, float, str, LossScaler],
                       amp_level: str = "O0", amp_dtype: str = "fp16") -> Optional[LossScaler]:
    """``None`` (default: dynamic for the float16 levels, none for O0 and bfloat16), a number (static)
    or ``"dynamic"``.

    Dynamic scaling starts at 2**16, halves on overflow and doubles after 2000 finite steps.
    """
    if isinstance(loss_scale, LossScaler):
        return loss_scale
    if loss_scale is None:
        loss_scale = "dynamic" if amp_level != "O0" and amp_dtype == "fp16" else None
    if loss_scale is None:
        return None
    if loss_scale == "dynamic":
        return DynamicLossScaler(scale_value=2 ** 16, scale_factor=2, scale_window=2000)
    if isinstance(loss_scale, (int, float)) and not isinstance(loss_scale, bool) and np.isfinite(loss_scale) \
            and loss_scale >= 1:
        return StaticLossScaler(float(loss_scale))
    raise ValueError(f"loss_scale must be None, 'dynamic' or a finite number >= 1, got {loss_scale!r}")


def _infer_num_classes(net: nn.Cell) -> Optional[int]:
    if getattr(net, "num_classes", None):
        return int(net.num_classes)
    stages = getattr(net, "stages", None)
    if stages is not None and len(stages) and getattr(stages[0], "num_classes", None):
        return int(stages[0].num_classes)
    return None


class TrainStep:
    """``step(images, targets, keep_rate=None) -> StepOutput``: one optimizer step on one batch.

    ``loss_fn(outputs, targets)`` returns the total loss or ``(total, per_exit)`` (as
    :class:`~dvt_ms.train.loss.MultiExitLoss` does). ``ema`` is updated after every applied step.
    ``clip_grad_norm``: max global gradient norm (``None``: no clipping, no norm computed).
    ``raise_on_nonfinite``: raise :class:`NonFiniteError` (default) or only report a fatal non-finite
    step. ``parallel_mode`` overrides the auto-parallel context's (see :func:`build_grad_sync`).
    ``num_classes`` (default: read from ``net``) enables the host-side check of the targets.
    ``amp_dtype`` (``fp16`` or ``bf16``) is the low precision of ``amp_level`` O1-O3.
    """

    def __init__(self, net: nn.Cell, loss_fn: nn.Cell, optimizer: nn.Optimizer, *,
                 ema: Optional[ModelEMA] = None, clip_grad_norm: Optional[float] = None,
                 amp_level: str = "O0", loss_scale: Union[None, float, str, LossScaler] = None,
                 raise_on_nonfinite: bool = True, num_classes: Optional[int] = None,
                 parallel_mode: Optional[str] = None, amp_dtype: str = "fp16"):
        if clip_grad_norm is not None and not (np.isfinite(clip_grad_norm) and clip_grad_norm > 0):
            raise ValueError(f"clip_grad_norm must be a positive number or None, got {clip_grad_norm!r}")
        self.net = prepare_amp(net, amp_level, amp_dtype=amp_dtype)
        self.loss_fn = loss_fn
        self.optimizer = optimizer
        self.ema = ema
        self.amp_level = amp_level
        self.clip_grad_norm = None if clip_grad_norm is None else float(clip_grad_norm)
        self.loss_scaler = create_loss_scaler(loss_scale, amp_level, amp_dtype)
        self.dynamic_scaling = isinstance(self.loss_scaler, DynamicLossScaler)
        self.raise_on_nonfinite = raise_on_nonfinite
        self.num_classes = num_classes or _infer_num_classes(net)
        self.grad_sync = build_grad_sync(optimizer.parameters, parallel_mode)
        self._keep_rates = set()
        self._step = self._build()
        kernels = getattr(net, "kernels", None)
        logger.info("train step: amp %s%s, model precision %s, loss scaler %s, clip %s, gradient sync %s",
                    amp_level, "" if amp_level == "O0" else f" {amp_dtype}",
                    kernels.precision if kernels is not None else "fp32",
                    type(self.loss_scaler).__name__ if self.loss_scaler else "none", self.clip_grad_norm,
                    type(self.grad_sync).__name__ if self.grad_sync else "none")

    def _build(self):
        net, loss_fn, optimizer = self.net, self.loss_fn, self.optimizer
        scaler, sync, clip = self.loss_scaler, self.grad_sync, self.clip_grad_norm
        hyper_map = ops.HyperMap()
        one_step = Tensor([1], mstype.int32)
        no_norm = Tensor(-1.0, mstype.float32)
        # MindSpore's all_finite runs IsFinite + ReduceAll per gradient; on CPU one kernel counts them all
        count_non_finite = None
        if getattr(net, "kernels", None) is not None and net.kernels.fused and self.amp_level == "O0":
            count_non_finite = non_finite_count_op()

        def forward(images, targets, keep_rate):
            outputs = net(images) if keep_rate is None else net(images, keep_rate)
            result = loss_fn(outputs, targets)
            if isinstance(result, tuple):
                loss, parts = result
            else:
                loss, parts = result, result.reshape((1,))
            scaled = loss if scaler is None else scaler.scale(loss)
            return scaled, loss, parts

        grad_fn = ms.value_and_grad(forward, None, optimizer.parameters, has_aux=True)

        @ms.jit
        def train_step(images, targets, keep_rate):
            (_, loss, parts), grads = grad_fn(images, targets, keep_rate)
            loss_ok = ops.logical_and(ops.isfinite(loss), ops.isfinite(parts).all())
            if sync is not None:
                # after the all-reduce every rank holds the same gradients (a NaN anywhere is a NaN
                # everywhere); the loss flag is summed so that all ranks skip together
                grads, loss_bad = sync(grads, ops.cast(ops.logical_not(loss_ok), mstype.float32).reshape((1,)))
                loss_ok = loss_bad[0] < 0.5
            if scaler is not None:
                grads = scaler.unscale(grads)
            if count_non_finite is None:
                grads_ok = all_finite(grads)
            else:
                grads_ok = count_non_finite(*grads)[0] < 0.5
            norm = no_norm
            if clip is not None:
                norm = ops.sqrt(ops.addn(hyper_map(_square_sum, grads)))
                factor = ops.minimum(clip / (norm + 1e-6), 1.0)
                grads = hyper_map(ops.partial(_scale_grad, factor), grads)
            ok = ops.logical_and(loss_ok, grads_ok)
            if ok:
                optimizer(grads)
            else:
                ops.assign_add(optimizer.global_step, one_step)
            if scaler is not None:
                scaler.adjust(grads_ok)
            return loss, parts, loss_ok, grads_ok, norm

        return train_step

    @property
    def graphs_compiled(self) -> int:
        """Training graphs compiled so far: one per distinct keep rate the step was called with."""
        return len(self._keep_rates)

    @property
    def global_step(self) -> int:
        """The optimizer's step counter: steps taken so far, and the lr schedule position."""
        return int(self.optimizer.global_step.asnumpy().reshape(-1)[0])

    def _check_schedule(self, step: int) -> None:
        if getattr(self.optimizer, "dynamic_lr", False):
            schedule = getattr(self.optimizer.learning_rate, "learning_rate", None)
            length = None if schedule is None else int(schedule.shape[0])
            if length is not None and step >= length:
                raise ValueError(f"global step {step} is past the end of the lr schedule ({length} steps)")

    def __call__(self, images: Tensor, targets: Tensor, keep_rate: Optional[float] = None) -> StepOutput:
        if not isinstance(images, Tensor) or images.ndim != 4:
            raise ValueError(f"images must be a [B, C, H, W] Tensor, got {getattr(images, 'shape', type(images))}")
        if self.num_classes:
            check_targets(targets, self.num_classes, images.shape[0])
        if keep_rate is not None:
            keep_rate = float(keep_rate)
            if not 0 < keep_rate <= 1:
                raise ValueError(f"keep_rate must be in (0, 1], got {keep_rate}")
        if keep_rate not in self._keep_rates:
            self._keep_rates.add(keep_rate)
            if len(self._keep_rates) == KEEP_RATE_GRAPH_WARNING:
                logger.warning("%d distinct keep rates so far, one compiled graph each; quantize them "
                               "with dvt_ms.train.schedule.quantize_keep_rate", len(self._keep_rates))
        step = self.global_step
        self._check_schedule(step)
        self.net.set_train(True)
        loss, parts, loss_ok, grads_ok, norm = self._step(images, targets, keep_rate)
        loss_ok, grads_ok = bool(loss_ok.asnumpy()), bool(grads_ok.asnumpy())
        norm = float(norm.asnumpy())
        output = StepOutput(
            step=step, loss=float(loss.asnumpy()), exit_losses=tuple(float(v) for v in parts.asnumpy()),
            loss_finite=loss_ok, grads_finite=grads_ok, applied=loss_ok and grads_ok,
            loss_scale=float(self.loss_scaler.scale_value.asnumpy()) if self.loss_scaler else 1.0,
            grad_norm=norm if self.clip_grad_norm is not None else None)
        if output.applied:
            if self.ema is not None:
                self.ema.update()
        elif not output.loss_finite or not self.dynamic_scaling:
            if self.raise_on_nonfinite:
                raise NonFiniteError(output)
            logger.error("%s", NonFiniteError(output))
        else:
            logger.warning("gradient overflow at global step %d: update skipped, loss scale now %g",
                           step, output.loss_scale)
        return output
