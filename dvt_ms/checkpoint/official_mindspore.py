"""Recognise an official MindSpore DVT checkpoint's architecture from its weights.

The official ``.ckpt`` files name no model. Once their keys are mapped (:mod:`.key_mapping`), the sizes
follow from the shapes: width from the class token, depth from the blocks, MLP ratio from the first MLP,
classes from the head, image size from the first stage's position embedding, the reuse flags from which
modules exist, and the heads from the relation-reuse channels (``depth * heads``) when relation reuse is
on. Only values that differ from ``dvt_mindspore_deit_small``'s defaults become overrides. A file of the
official DeiT-S sizes also gets the exit GFLOPs the official inference reports, as its ``flops``.
"""
import logging
import math
import re
from typing import Any, Dict, Mapping

import numpy as np

from ..models import model_spec
from ..models.variants import MINDSPORE_DVT_OFFICIAL_GFLOPS

logger = logging.getLogger(__name__)

__all__ = ["MINDSPORE_DVT_MODEL", "official_mindspore_metadata"]

MINDSPORE_DVT_MODEL = "dvt_mindspore_deit_small"
_BLOCK = re.compile(r"^stages\.0\.blocks\.(\d+)\.norm1\.gamma$")


def official_mindspore_metadata(weights: Mapping[str, np.ndarray], source: str) -> Dict[str, Any]:
    """``model``, ``model_overrides`` (and ``flops`` at the official sizes) of mapped official MindSpore
    DVT weights; ``source`` names the file in logs and errors."""
    default = model_spec(MINDSPORE_DVT_MODEL)
    stage = default.stages[0]
    try:
        embed_dim = int(weights["stages.0.cls_token"].shape[-1])
        depth = 1 + max(int(m.group(1)) for m in map(_BLOCK.match, weights) if m)
        hidden = int(weights["stages.0.blocks.0.mlp.fc1.weight"].shape[0])
        num_classes = int(weights["stages.1.head.weight"].shape[0])
        patches = int(weights["stages.0.pos_embed"].shape[1]) - 1
    except (KeyError, ValueError) as exc:
        raise ValueError(f"{source}: not a complete official MindSpore DVT checkpoint (missing {exc})") from None
    side = math.isqrt(patches)
    image_size = side * stage.tokenizer.patch_size
    found: Dict[str, Any] = dict(embed_dim=embed_dim, depth=depth, mlp_ratio=hidden / embed_dim,
                                 num_classes=num_classes, image_size=image_size,
                                 feature_reuse=any(".feature_reuse." in k for k in weights),
                                 relation_reuse="stages.1.relation_reuse.fc1.weight" in weights)
    if found["relation_reuse"]:
        found["num_heads"] = int(weights["stages.1.relation_reuse.fc1.weight"].shape[1]) // depth
    defaults = dict(embed_dim=stage.embed_dim, depth=stage.depth, mlp_ratio=stage.mlp_ratio,
                    num_heads=stage.num_heads, num_classes=default.num_classes, image_size=default.image_size,
                    feature_reuse=True, relation_reuse=True)
    overrides = {k: v for k, v in found.items() if v != defaults[k]}
    logger.info("%s: official MindSpore DVT layout, read as %s%s", source, MINDSPORE_DVT_MODEL,
                f" with {overrides}" if overrides else "")
    if not found["relation_reuse"]:
        logger.warning("%s: without relation reuse the number of heads cannot be read from the weights; "
                       "%d assumed (set num_heads if it differs)", source, stage.num_heads)
    metadata: Dict[str, Any] = {"model": MINDSPORE_DVT_MODEL, "model_overrides": overrides}
    if set(overrides) <= {"feature_reuse", "relation_reuse"}:
        metadata["flops"] = list(MINDSPORE_DVT_OFFICIAL_GFLOPS)
    return metadata
