"""The PyTorch rows: DeiT-S and the official DVT cascade from :mod:`dvt_ms.reference.torch_models`, and
timm's own DeiT-S where timm is installed.

The ``torch`` rows are the plain ``torch.nn`` re-implementations of the official code (timm's DeiT; the DVT
cascade on DeiT-S stages with feature and relation reuse), with the sizes of the registered MindSpore models.
The ``timm`` rows are ``timm.models.vision_transformer.VisionTransformer`` itself with the same sizes (the
benchmark extra pins ``timm==0.4.12``; see :func:`import_timm_vision_transformer`). All compute attention
explicitly (``q @ k^T``, softmax, ``@ v``) like the official code and the MindSpore models, not with a fused
attention kernel. Inference runs eagerly in eval mode under ``torch.inference_mode()``, bf16 rows under
``torch.autocast("cpu", dtype=torch.bfloat16)``; the cascade computes all three exits (the full cascade).
torch is imported by the caller (``import_torch``).
"""
import importlib.util
import logging
import sys
from pathlib import Path
from typing import Callable, Dict, List, Optional

from ..models import model_defaults
from .timing import Measurement, framework_label

logger = logging.getLogger("benchmark")

__all__ = ["TORCH_DEIT", "TORCH_DVT", "AUTOCAST", "TIMM", "torch_label", "timm_label", "build_torch_model",
           "build_timm_deit", "import_timm_vision_transformer", "torch_inference_measurements",
           "torch_train_measurement"]

#: the registered models the torch rows re-implement
TORCH_DEIT, TORCH_DVT = "deit_small", "dvt_deit_small"
#: what the framework column calls a torch row in bf16
AUTOCAST = "bf16-autocast"
_SIZES = ("embed_dim", "depth", "num_heads", "mlp_ratio", "num_classes")


#: the framework column of the rows of timm's own DeiT-S
TIMM = "timm"


def torch_label(precision: str) -> str:
    """``torch`` in fp32, ``torch bf16-autocast`` in bf16."""
    return framework_label("torch", AUTOCAST if precision == "bf16" else precision)


def timm_label(precision: str) -> str:
    """``timm`` in fp32, ``timm bf16-autocast`` in bf16."""
    return framework_label(TIMM, AUTOCAST if precision == "bf16" else precision)


def import_timm_vision_transformer():
    """timm's ``vision_transformer`` module, or ``None`` where timm is not installed.

    ``import timm`` imports ``timm.data``, whose transforms import torchvision, and the PyPI torchvision wheels
    do not load beside a CPU build of torch (their ``_C`` links the CUDA libraries). The models themselves read
    only the normalization constants from ``timm.data``, so ``timm.data`` is bound to ``timm/data/constants.py``
    before timm is imported; this happens in the benchmark process only, never in the library.
    """
    spec = importlib.util.find_spec("timm")
    if spec is None or spec.origin is None:
        return None
    if "timm" not in sys.modules:
        constants_file = Path(spec.origin).parent / "data" / "constants.py"
        constants = importlib.util.spec_from_file_location("timm.data", constants_file)
        module = importlib.util.module_from_spec(constants)
        constants.loader.exec_module(module)
        sys.modules["timm.data"] = module
    from timm.models import vision_transformer

    return vision_transformer


def build_timm_deit(image_size: int, seed: int = 0) -> Optional[object]:
    """timm's own DeiT-S (``VisionTransformer`` with the registered ``deit_small``'s sizes), random weights, eval
    mode; ``None`` where timm is not installed."""
    import torch

    vision_transformer = import_timm_vision_transformer()
    if vision_transformer is None:
        return None
    defaults = model_defaults(TORCH_DEIT)
    torch.manual_seed(seed)
    net = vision_transformer.VisionTransformer(img_size=image_size, patch_size=16, qkv_bias=True,
                                               **{k: defaults[k] for k in _SIZES})
    return net.eval()


def build_torch_model(name: str, image_size: int, seed: int = 0):
    """The torch reference of ``name`` (``deit_small`` or ``dvt_deit_small``), random weights, eval mode.

    Its sizes are the registered model's (``dvt_ms.models.model_defaults``). The official cascade resamples
    reused features and relations for its own image size only, so it refuses any other ``image_size``.
    """
    from ..reference import torch_models  # imports torch, an optional dependency

    defaults = model_defaults(name)
    sizes = {k: defaults[k] for k in _SIZES}
    if name == TORCH_DEIT:
        net = torch_models.build_deit(**sizes, image_size=image_size)
    elif name == TORCH_DVT:
        if image_size != defaults["image_size"]:
            raise ValueError(f"the official torch DVT cascade runs at image_size {defaults['image_size']} only "
                             f"(its reuse resampling is fixed), got {image_size}")
        net = torch_models.build_dvt("deit", **sizes, feature_reuse=defaults["feature_reuse"],
                                     relation_reuse=defaults["relation_reuse"], image_size=image_size)
    else:
        raise ValueError(f"no torch reference for {name!r}; there are {TORCH_DEIT!r} and {TORCH_DVT!r}")
    torch_models.randomize_(net, seed=seed)
    return net.eval()


def _inference_run(torch, net, x, precision: str) -> Callable[[], None]:
    if precision == "bf16":
        def run() -> None:
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
                net(x)
    else:
        def run() -> None:
            with torch.inference_mode():
                net(x)
    return run


def torch_inference_measurements(torch, names: List[str], image_size: int, images: Dict[int, object],
                                 macs: Dict[str, float], precision: str) -> List[Measurement]:
    """fp32 rows of each of ``names`` at each batch of ``images``, plus bf16-autocast rows in bf16; the same
    for timm's own DeiT-S where timm is installed.

    ``macs`` are the MACs per image of the MindSpore model of each name (the same architecture). The
    cascade is skipped, with a warning, at an image size it cannot run.
    """
    precisions = ["fp32"] + (["bf16"] if precision == "bf16" else [])
    nets = []
    for name in names:
        try:
            nets.append((name, torch_label, build_torch_model(name, image_size)))
        except ValueError as exc:
            logger.warning("no torch %s row: %s", name, exc)
    if TORCH_DEIT in names:
        timm_net = build_timm_deit(image_size)
        if timm_net is None:
            logger.warning("timm is not installed (pip install --no-deps timm==0.4.12); no timm DeiT-S rows")
        else:
            nets.append((TORCH_DEIT, timm_label, timm_net))
    out = []
    for name, label, net in nets:
        for batch, array in images.items():
            x = torch.from_numpy(array)
            for p in precisions:
                out.append(Measurement(name, label(p), batch, _inference_run(torch, net, x, p),
                                       macs_per_image=macs[name], precision=p))
    return out


def torch_train_measurement(torch, batch: int, image_size: int, images, targets, macs: float,
                            precision: str = "fp32") -> Measurement:
    """One eager training step of the torch DeiT-S in train mode: soft-target CE, AdamW 5e-4 (weight decay
    0.05, none for biases, norms, pos_embed and cls_token), ``zero_grad(set_to_none=True)``.

    In bf16 the forward runs under ``torch.autocast("cpu", dtype=torch.bfloat16)`` (its backward follows
    the forward's dtypes) with float32 weights and a float32 loss; bf16 needs no GradScaler.
    """
    net = build_torch_model(TORCH_DEIT, image_size).train()
    no_decay_names = ("pos_embed", "cls_token")
    decay = [p for n, p in net.named_parameters() if p.ndim > 1 and n not in no_decay_names]
    no_decay = [p for n, p in net.named_parameters() if p.ndim <= 1 or n in no_decay_names]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}],
                                  lr=5e-4)
    x, t = torch.from_numpy(images), torch.from_numpy(targets)
    autocast = precision == "bf16"

    def run() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            logits = net(x)
        loss = torch.sum(-t * torch.log_softmax(logits.float(), dim=-1), dim=-1).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return Measurement(TORCH_DEIT, torch_label(precision), batch, run, macs_per_image=macs, precision=precision)
