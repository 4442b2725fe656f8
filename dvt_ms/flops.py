"""Analytic multiply-accumulate (MAC) counts, read off a model's structure without running it.

Only matrix products are counted: patch embedding, the T2T soft splits' Performer layers and
projection, qkv, ``q @ k^T``, ``attn @ v``, the attention projection, the MLPs, the DVT reuse modules
(their MLP/channel mixes and resampling matrices) and the head. Token counts, EViT's pruned ones included, come from the cascade spec. Element-wise ops, softmax, GELU,
LayerNorm, biases and EViT's token selection and fusion are ignored, as in the published DeiT/T2T-ViT/DVT/EViT
figures. Counts are MACs (one multiply plus one add); FLOPs are about twice that.
"""
from typing import Dict, List

from mindspore import nn

from .layers import Block, FeatureReuse, PatchEmbed, RelationReuse, TokenPerformer, TokensToToken
from .models.dvt import DynamicVisionTransformer
from .models.vision_transformer import VisionTransformer

__all__ = ["count", "count_breakdown"]

PARTS = ("tokenizer", "attention", "mlp", "feature_reuse", "relation_reuse", "head")


def _dense(cell: nn.Dense, tokens: int) -> int:
    return tokens * cell.in_channels * cell.out_channels


def _performer(layer: TokenPerformer, tokens: int) -> int:
    emb, features = layer.emb, layer.num_features
    macs = _dense(layer.kqv, tokens)
    macs += 2 * tokens * emb * features   # random-feature maps of k and q
    macs += tokens * features             # normalizer: qp @ sum(kp)
    macs += 2 * tokens * emb * features   # kv = v^T @ kp, then qp @ kv^T
    macs += _dense(layer.proj, tokens)
    macs += _dense(layer.mlp.fc1, tokens) + _dense(layer.mlp.fc2, tokens)
    return macs


def _tokenizer(tokenizer: nn.Cell) -> int:
    if isinstance(tokenizer, PatchEmbed):
        return _dense(tokenizer.proj, tokenizer.num_patches)
    if isinstance(tokenizer, TokensToToken):
        macs = sum(_performer(layer, side * side)
                   for layer, side in zip(tokenizer.attentions, tokenizer.split_sizes))
        return macs + _dense(tokenizer.project, tokenizer.num_patches)
    raise TypeError(f"cannot count MACs of tokenizer {type(tokenizer).__name__}")


def _feature_reuse(module: FeatureReuse) -> int:
    dst_tokens, src_tokens = module.resample.shape
    mlp = _dense(module.mlp.fc1, src_tokens) + _dense(module.mlp.fc2, src_tokens)
    return mlp + dst_tokens * src_tokens * module.mlp.fc2.out_channels


def _relation_reuse(module: RelationReuse) -> int:
    src, dst = module.resample_t.shape
    positions = src * src
    hidden, channels_in = module.fc1.weight.shape
    out, _ = module.fc2.weight.shape
    mixes = positions * (channels_in * hidden + hidden * out)
    return mixes + out * (dst * src * src + dst * src * dst)


def _block(block: Block, tokens_in: int, tokens_out: int, parts: Dict[str, float]) -> None:
    """Add one block's MACs to ``parts``: attention on ``tokens_in`` tokens, the MLP on ``tokens_out``
    (after EViT's reorganization). Reused inputs follow the kept tokens by gathers, which cost no MACs."""
    attn = block.attn
    dim = attn.num_heads * attn.head_dim
    parts["attention"] += (_dense(attn.qkv, tokens_in) + 2 * tokens_in * tokens_in * dim
                           + _dense(attn.proj, tokens_in))
    parts["mlp"] += _dense(block.mlp.fc1, tokens_out) + _dense(block.mlp.fc2, tokens_out)
    if block.feature_reuse is not None:
        parts["feature_reuse"] += _feature_reuse(block.feature_reuse)


def _stage(model: VisionTransformer, image_size: int) -> Dict[str, float]:
    if image_size != model.image_size:
        raise ValueError(f"the model was built for image_size {model.image_size}, not {image_size}; "
                         "rebuild it with image_size=... to count another resolution")
    spec, k = model.spec, model.index
    parts = dict.fromkeys(PARTS, 0.0)
    parts["tokenizer"] = float(_tokenizer(model.tokenizer))
    tokens = spec.num_tokens(k)
    for block, after in zip(model.blocks, spec.block_tokens(k)):
        _block(block, tokens, after, parts)
        tokens = after
    if model.relation_reuse is not None:
        parts["relation_reuse"] += float(_relation_reuse(model.relation_reuse))
    if isinstance(model.head, nn.Dense):
        parts["head"] = float(_dense(model.head, 1))
    parts["total"] = sum(parts[key] for key in PARTS)
    return parts


def count_breakdown(model: nn.Cell, image_size: int = 224) -> List[Dict[str, float]]:
    """Per-stage MACs (not cumulative), one dict per stage with the keys of ``PARTS`` plus ``total``."""
    if isinstance(model, DynamicVisionTransformer):
        return [_stage(stage, image_size) for stage in model.stages]
    if isinstance(model, VisionTransformer):
        return [_stage(model, image_size)]
    raise TypeError(f"cannot count MACs of {type(model).__name__}")


def count(model: nn.Cell, image_size: int = 224) -> List[float]:
    """MACs per image at each exit, cumulative over a DVT cascade; one entry for a plain ViT."""
    totals: List[float] = []
    running = 0.0
    for stage in count_breakdown(model, image_size):
        running += stage["total"]
        totals.append(running)
    return totals
