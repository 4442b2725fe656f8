"""Optimizers with the DeiT/DVT weight-decay grouping, and the linear learning-rate scaling rule.

``create_optimizer(net, "adamw", lr, weight_decay)`` splits the trainable parameters into two groups:

- **decay**: every weight matrix / kernel (``ndim >= 2``) except the ones below;
- **no decay**: LayerNorm ``gamma``/``beta``, every ``bias``, ``pos_embed``, ``cls_token`` and any other
  parameter with ``ndim <= 1`` (the rule of the official DeiT/DVT/EViT code, via timm).

Frozen parameters (``requires_grad=False``: T2T-ViT's sinusoidal ``pos_embed``, the performer's random
features) are not given to the optimizer at all.

Optimizers (``name``):

- ``"adamw"`` (default): :class:`AdamW`, PyTorch's ``torch.optim.AdamW`` update with bias correction
  and decoupled weight decay ``p -= lr * wd * p`` -- what the official recipe trains with. MindSpore 2.10
  has no ``nn.AdamW``; its ``nn.AdamWeightDecay`` has no bias correction, which makes the first ~1000
  updates up to ~3x larger than PyTorch's at the same learning rate. :class:`AdamW` runs that same
  op with bias-corrected hyper-parameters and matches PyTorch to 1e-7; for a model on the fused CPU
  kernels it runs the update as one in-place pass of its own over all parameters instead.
- ``"adamweightdecay"``: MindSpore's stock ``nn.AdamWeightDecay`` (no bias correction).
- ``"sgd"``: ``nn.Momentum`` (momentum 0.9, coupled L2 weight decay).

``lr`` is a float or a per-step schedule (numpy array, list or 1-D Tensor, e.g. from
:func:`dvt_ms.train.schedule.cosine_lr`): the optimizer reads ``lr[global_step]`` and increments
``global_step`` on every update, so the optimizer's ``global_step`` *is* the schedule position.
"""
import logging
import math
from typing import Dict, Iterable, List, Sequence, Tuple, Union

import mindspore as ms
import numpy as np
from mindspore import Parameter, Tensor, nn, ops
from mindspore.common import dtype as mstype
from mindspore.ops import operations as P

from ..kernels import STOCK
from ..kernels.ops import adamw_update_op

logger = logging.getLogger(__name__)

__all__ = ["AdamW", "OPTIMIZERS", "NO_DECAY_NAMES", "create_optimizer", "optimizer_state_params",
           "param_groups", "scaled_lr", "split_decay_params"]

LearningRate = Union[float, np.ndarray, Sequence[float], Tensor]
OPTIMIZERS = ("adamw", "adamweightdecay", "sgd")
#: Parameter names (last dotted component) that never get weight decay, whatever their shape.
NO_DECAY_NAMES = frozenset({"pos_embed", "cls_token", "bias", "gamma", "beta"})

_adamw_update = ops.MultitypeFuncGraph("dvt_ms_adamw_update")


@_adamw_update.register("Function", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor",
                        "Tensor", "Tensor", "Tensor", "Bool")
def _adamw_update_one(fused_op, beta1, beta2, eps, lr, decay_ratio, weight_decay, param, exp_avg, exp_avg_sq,
                      grad, decay):
    """One parameter's bias-corrected AdamW step through MindSpore's fused AdamWeightDecay kernel."""
    decay_rate = weight_decay * decay_ratio if decay else ops.zeros_like(decay_ratio)
    fused_op(param, exp_avg, exp_avg_sq, lr, beta1, beta2, eps, decay_rate, ops.cast(grad, param.dtype))
    return True


class AdamW(nn.Optimizer):
    """``torch.optim.AdamW`` semantics (bias-corrected moments, decoupled weight decay) for MindSpore.

    ``params`` must be parameter groups (dicts with ``params`` and ``weight_decay``), as built by
    :func:`param_groups`. State: ``adam_m.*``/``adam_v.*`` moments, ``global_step`` (schedule position,
    advanced by the training step even when it skips an update) and ``adam_updates`` (the number of
    updates actually applied, which drives the bias correction like PyTorch's per-parameter ``step``).

    ``cpu_kernel=True`` updates all parameters in one pass, in place, on the fused CPU kernel
    (:func:`~dvt_ms.kernels.ops.adamw_update_op`; CPU only, float32 parameters); otherwise MindSpore's
    ``AdamWeightDecay`` op runs the same update in several passes.
    """

    def __init__(self, params: List[dict], learning_rate: LearningRate = 1e-3, beta1: float = 0.9,
                 beta2: float = 0.999, eps: float = 1e-8, weight_decay: float = 0.0, cpu_kernel: bool = False):
        if not params or not all(isinstance(group, dict) for group in params):
            raise TypeError("AdamW takes parameter groups (a list of dicts); build them with param_groups()")
        for key, value, low, high in (("beta1", beta1, 0.0, 1.0), ("beta2", beta2, 0.0, 1.0)):
            if not low <= value < high:
                raise ValueError(f"{key} must be in [0, 1), got {value}")
        if not eps > 0:
            raise ValueError(f"eps must be positive, got {eps}")
        super().__init__(learning_rate, params, weight_decay)
        if self.is_group_lr:
            raise ValueError("AdamW does not support per-group learning rates; give one lr or one schedule")
        self.beta1 = Tensor(beta1, mstype.float32)
        self.beta2 = Tensor(beta2, mstype.float32)
        self.eps = Tensor(eps, mstype.float32)
        # 1 - beta and log(beta) in float64: float32 loses digits of 1 - 0.999 (a 1.3e-5 relative error)
        self.one_minus_beta1 = Tensor(1.0 - beta1, mstype.float32)
        self.one_minus_beta2 = Tensor(1.0 - beta2, mstype.float32)
        self.log_beta1 = Tensor(math.log(beta1) if beta1 > 0 else -math.inf, mstype.float32)
        self.log_beta2 = Tensor(math.log(beta2) if beta2 > 0 else -math.inf, mstype.float32)
        self.moments1 = self._parameters.clone(prefix="adam_m", init="zeros")
        self.moments2 = self._parameters.clone(prefix="adam_v", init="zeros")
        self.adam_updates = Parameter(Tensor(0.0, mstype.float32), name="adam_updates", requires_grad=False)
        self.cpu_kernel = bool(cpu_kernel)
        if self.cpu_kernel:
            if self.dynamic_weight_decay:
                raise ValueError("AdamW on the fused CPU kernel takes a constant weight decay per group")
            self.decay_rates = Tensor([float(decay) * bool(flag) for decay, flag in
                                       zip(self.get_weight_decay(), self.decay_flags)], mstype.float32)
            self.fused_op = adamw_update_op(len(self._parameters))
        else:
            self.fused_op = P.AdamWeightDecay()
        self.hyper_map = ops.HyperMap()

    @ms.jit
    def construct(self, gradients):
        lr = self.get_lr()
        self.assignadd(self.global_step, self.global_step_increase_tensor)
        updates = self.adam_updates + 1.0
        ops.assign(self.adam_updates, updates)
        correction1 = -ops.expm1(updates * self.log_beta1)            # 1 - beta1^t
        correction2 = ops.sqrt(-ops.expm1(updates * self.log_beta2))  # sqrt(1 - beta2^t)
        if self.cpu_kernel:
            hyper = ops.stack((lr, self.beta1, self.beta2, self.one_minus_beta1, self.one_minus_beta2,
                               lr / correction1, correction2, self.eps))
            return self.fused_op(self.decay_rates, hyper, *self._parameters, *self.moments1, *self.moments2,
                                 *gradients)
        # MindSpore's kernel computes p -= lr' * (m / (sqrt(v) + eps') + wd' * p) without bias correction.
        # With c1 = 1 - beta1^t and c2 = sqrt(1 - beta2^t), PyTorch's AdamW step
        #   p -= lr * wd * p + (lr / c1) * m / (sqrt(v) / c2 + eps)
        # is that kernel with lr' = lr * c2 / c1, eps' = eps * c2 and wd' = wd * c1 / c2.
        return self.hyper_map(
            ops.partial(_adamw_update, self.fused_op, self.beta1, self.beta2, self.eps * correction2,
                        lr * correction2 / correction1, correction1 / correction2),
            self.get_weight_decay(), self._parameters, self.moments1, self.moments2, gradients, self.decay_flags)


def _no_decay(param: Parameter) -> bool:
    return len(param.shape) <= 1 or param.name.rsplit(".", 1)[-1] in NO_DECAY_NAMES


def split_decay_params(net: nn.Cell) -> Tuple[List[Parameter], List[Parameter]]:
    """``(decay, no_decay)`` lists of ``net``'s trainable parameters (frozen ones are left out)."""
    decay: List[Parameter] = []
    no_decay: List[Parameter] = []
    for param in net.trainable_params():
        (no_decay if _no_decay(param) else decay).append(param)
    return decay, no_decay


def param_groups(net: nn.Cell, weight_decay: float) -> List[Dict[str, object]]:
    """MindSpore parameter groups: ``weight_decay`` for the decay group, 0 for the others (empty ones dropped)."""
    decay, no_decay = split_decay_params(net)
    groups = [{"params": decay, "weight_decay": float(weight_decay)},
              {"params": no_decay, "weight_decay": 0.0}]
    groups = [group for group in groups if group["params"]]
    if not groups:
        raise ValueError(f"{type(net).__name__} has no trainable parameters")
    return groups


def _check_lr(lr: LearningRate) -> Union[float, Tensor]:
    if isinstance(lr, (int, float)) and not isinstance(lr, bool):
        if not (math.isfinite(lr) and lr >= 0):
            raise ValueError(f"lr must be a finite non-negative number, got {lr}")
        return float(lr)
    values = lr.asnumpy() if isinstance(lr, Tensor) else np.asarray(lr)
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"lr must be a number or a non-empty 1-D per-step schedule, got shape {values.shape}")
    bad = np.flatnonzero(~np.isfinite(values) | (values < 0))
    if bad.size:
        raise ValueError(f"lr schedule has {bad.size} non-finite or negative value(s), first at step "
                         f"{bad[0]}: {values[bad[0]]}")
    return Tensor(values.astype(np.float32))


def create_optimizer(net: nn.Cell, name: str = "adamw", lr: LearningRate = 5e-4, weight_decay: float = 0.05,
                     betas: Tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                     momentum: float = 0.9, no_decay_norm_bias: bool = True) -> nn.Optimizer:
    """Build optimizer ``name`` over ``net``'s trainable parameters with the weight-decay grouping above.

    ``lr`` is a float or a per-step schedule (one value per iteration). ``betas``/``eps`` are for the
    Adam variants, ``momentum`` for ``sgd``. ``no_decay_norm_bias=False`` puts every trainable
    parameter in one group with ``weight_decay``. Gradients must be taken with respect to
    ``optimizer.parameters`` (the grouped order), not ``net.trainable_params()``. ``adamw`` for a model built on
    the fused CPU kernels (``net.kernels.available``) updates on the fused kernel too (:class:`AdamW`).
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")
    if not (math.isfinite(weight_decay) and weight_decay >= 0):
        raise ValueError(f"weight_decay must be a finite non-negative number, got {weight_decay}")
    if len(betas) != 2:
        raise ValueError(f"betas must be two numbers, got {betas!r}")
    learning_rate = _check_lr(lr)
    if no_decay_norm_bias:
        groups = param_groups(net, weight_decay)
    else:
        groups = [{"params": net.trainable_params(), "weight_decay": float(weight_decay)}]
    if name == "adamw":
        optimizer = AdamW(groups, learning_rate, beta1=float(betas[0]), beta2=float(betas[1]), eps=float(eps),
                          cpu_kernel=getattr(net, "kernels", STOCK).available)
    elif name == "adamweightdecay":
        optimizer = nn.AdamWeightDecay(groups, learning_rate, beta1=float(betas[0]), beta2=float(betas[1]),
                                       eps=float(eps))
    else:
        optimizer = nn.Momentum(groups, learning_rate, momentum=float(momentum))
    sizes = ", ".join(f"{len(g['params'])} with weight_decay={g['weight_decay']}" for g in groups)
    update = " (one-pass update on the fused CPU kernel)" if getattr(optimizer, "cpu_kernel", False) else ""
    logger.info("%s%s over %d parameter tensors (%s)", name, update, sum(len(g["params"]) for g in groups), sizes)
    return optimizer


def optimizer_state_params(optimizer: nn.Optimizer) -> List[Parameter]:
    """The optimizer's own state (moments, ``global_step``, ...), without the learned parameters and lr.

    The learning rate (a value or the whole schedule) is left out on purpose: it comes from the config,
    and its position is ``global_step``.
    """
    learned = {id(p) for p in optimizer.parameters}
    lr_params = {id(p) for p in _lr_params(optimizer)}
    state = [p for p in optimizer.get_parameters() if id(p) not in learned and id(p) not in lr_params]
    names = [p.name for p in state]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"optimizer state has duplicate parameter names: {', '.join(duplicates)}")
    return state


def _lr_params(optimizer: nn.Optimizer) -> Iterable[Parameter]:
    lr = optimizer.learning_rate
    if isinstance(lr, Parameter):
        return [lr]
    if isinstance(lr, nn.Cell):
        return list(lr.get_parameters())
    if isinstance(lr, (tuple, list)):
        return [p for p in lr if isinstance(p, Parameter)]
    return []


def scaled_lr(base_lr: float, global_batch: int, reference_batch: int = 512) -> float:
    """Linear scaling rule: ``base_lr * global_batch / reference_batch`` (Goyal et al. 2017; DeiT/DVT/EViT).

    ``global_batch`` is the batch over all devices (per-device batch x world size x gradient accumulation);
    DeiT's ``lr 5e-4`` is quoted for a reference batch of 512, so a global batch of 1024 trains at 1e-3.
    """
    for key, value in (("global_batch", global_batch), ("reference_batch", reference_batch)):
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"{key} must be a positive integer, got {value!r}")
    if not (math.isfinite(base_lr) and base_lr >= 0):
        raise ValueError(f"base_lr must be a finite non-negative number, got {base_lr}")
    return float(base_lr) * global_batch / reference_batch
