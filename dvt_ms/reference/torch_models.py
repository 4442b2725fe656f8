"""Plain-PyTorch reference models for the parity tests and the benchmark's torch rows.

This module re-implements, with nothing but ``torch.nn``, the official PyTorch models that dvt-ms ports:

* the three-exit DVT cascade (NeurIPS 2021) on DeiT stages and on T2T-ViT stages, with feature reuse
  and relation reuse;
* EViT (ICLR 2022) and plain DeiT, with timm's parameter names.

The ``state_dict()`` of every model here has exactly the keys, order and shapes of the official code, so
official checkpoints load into it and the state dicts it writes (``save_official_checkpoint``) look
like official checkpoints. Its forward passes follow the official arithmetic, including the hard-coded
resampling of reused features and relations. It is only used to produce reference outputs for
configurations that have no golden files and as the benchmark's PyTorch baselines (DeiT-S, the DVT
cascade); it uses nothing else of dvt_ms (an independent reference), and ``import dvt_ms`` never imports it.
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor, nn

from .torch_layers import (DEIT_STAGE_PATCHES, REUSE_CHANNELS, REUSE_HIDDEN, T2T_STAGE_SPLITS, Attention,
                           DeiTPatchEmbed, Mlp, ReuseBlock, TokenPerformer, TokensToToken, resample_last_axis,
                           sinusoid_table)

__all__ = [
    "REUSE_CHANNELS",
    "REUSE_HIDDEN",
    "build_dvt",
    "build_evit",
    "build_deit",
    "randomize_",
    "save_official_checkpoint",
    "dvt_checkpoint_extras",
]

STAGE_NAMES = ("less_less_token", "less_token", "normal_token")


# ----------------------------------------------------------------------------------------------------
# DVT


class DVTStage(nn.Module):
    """One exit of the DVT cascade (a DeiT or T2T-ViT backbone with optional reuse).

    ``forward(x, prev_features, prev_relations)`` returns ``(logits, last_features, relations)``:
    ``last_features`` are the last block's output before the final norm (what the next stage reuses)
    and ``relations`` the per-block attention logits, each [B, heads, N, N].
    """

    def __init__(self, *, family: str, stage: int, embed_dim: int, depth: int, num_heads: int,
                 mlp_ratio: float, num_classes: int, feature_reuse: bool, relation_reuse: bool,
                 token_dim: int, image_size: int) -> None:
        super().__init__()
        if family == "deit":
            patch, padding = DEIT_STAGE_PATCHES[stage]
            eps, qkv_bias = 1e-6, True
            embed = DeiTPatchEmbed(image_size, patch, padding, embed_dim)
        elif family == "t2t":
            eps, qkv_bias = 1e-5, False
            embed = TokensToToken(image_size, T2T_STAGE_SPLITS[stage], embed_dim, token_dim)
        else:
            raise ValueError(f"unknown DVT family {family!r}")
        num_patches = embed.num_patches
        self.family = family
        self.depth = depth
        self.num_heads = num_heads
        self.num_patches = num_patches
        if family == "deit":
            self.patch_embed = embed
        else:
            self.tokens_to_token = embed
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        if family == "deit":
            self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, embed_dim))
        else:
            self.pos_embed = nn.Parameter(sinusoid_table(num_patches + 1, embed_dim), requires_grad=False)
        self.blocks = nn.ModuleList(
            ReuseBlock(embed_dim, num_heads, mlp_ratio, qkv_bias, eps, feature_reuse) for _ in range(depth))
        self.norm = nn.LayerNorm(embed_dim, eps=eps)
        if relation_reuse:
            maps = num_heads * depth
            self.relation_reuse_conv = nn.Sequential(
                nn.Conv2d(maps, 3 * maps, kernel_size=1), nn.GELU(), nn.Conv2d(3 * maps, maps, kernel_size=1))
        else:
            self.relation_reuse_conv = None
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()

    def _embed(self, x: Tensor) -> Tensor:
        if self.family == "deit":
            return self.patch_embed(x)
        return self.tokens_to_token(x)

    def _relation_biases(self, prev_relations: Sequence[Tensor], n_tokens: int) -> Tuple[Tensor, ...]:
        """Turn the previous stage's attention logits into per-block logit biases for this stage."""
        stacked = self.relation_reuse_conv(torch.cat(list(prev_relations), dim=1))  # [B, H*D, n, n]
        # keys first (class column kept), then queries (class row kept)
        resampled = resample_last_axis(stacked, n_tokens)
        resampled = resample_last_axis(resampled.transpose(-2, -1), n_tokens).transpose(-2, -1)
        # contiguous, as the official code's final reshape leaves them: every block adds its bias to its logits,
        # and a transposed view made each of those additions a strided pass
        return resampled.contiguous().chunk(self.depth, dim=1)

    def forward(self, x: Tensor, prev_features: Optional[Tensor] = None,
                prev_relations: Optional[Sequence[Tensor]] = None) -> Tuple[Tensor, Tensor, List[Tensor]]:
        x = self._embed(x)
        x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1) + self.pos_embed
        biases: Sequence[Optional[Tensor]] = [None] * self.depth
        if prev_relations is not None:
            biases = self._relation_biases(prev_relations, x.shape[1] - 1)
        relations = []
        for block, bias in zip(self.blocks, biases):
            x, logits = block(x, prev_features, bias)
            relations.append(logits)
        return self.head(self.norm(x)[:, 0]), x, relations


class DVTCascade(nn.Module):
    """Three DVT exits with 7x7, 10x10 and 14x14 tokens; forward returns the three exits' logits."""

    def __init__(self, *, family: str, feature_reuse: bool, relation_reuse: bool, **stage_kwargs: Any) -> None:
        super().__init__()
        self.feature_reuse = feature_reuse
        self.relation_reuse = relation_reuse
        for i, name in enumerate(STAGE_NAMES):
            first = i == 0
            setattr(self, name, DVTStage(family=family, stage=i, feature_reuse=feature_reuse and not first,
                                         relation_reuse=relation_reuse and not first, **stage_kwargs))

    def forward(self, x: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        outputs = []
        features: Optional[Tensor] = None
        relations: Optional[List[Tensor]] = None
        for name in STAGE_NAMES:
            logits, new_features, new_relations = getattr(self, name)(
                x, features if self.feature_reuse else None, relations if self.relation_reuse else None)
            outputs.append(logits)
            features, relations = new_features, new_relations
        return outputs[0], outputs[1], outputs[2]


def build_dvt(family: str, *, embed_dim: int, depth: int, num_heads: int, mlp_ratio: float,
              num_classes: int, feature_reuse: bool, relation_reuse: bool, token_dim: int = 64,
              image_size: int = 224) -> nn.Module:
    """Official DVT cascade for ``family`` in {"deit", "t2t"} (eval mode)."""
    model = DVTCascade(family=family, feature_reuse=feature_reuse, relation_reuse=relation_reuse,
                       embed_dim=embed_dim, depth=depth, num_heads=num_heads, mlp_ratio=mlp_ratio,
                       num_classes=num_classes, token_dim=token_dim, image_size=image_size)
    return model.eval()


# ----------------------------------------------------------------------------------------------------
# EViT / DeiT


class EViTBlock(nn.Module):
    """DeiT block that, after attention, may keep only the tokens the class token attends to most."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, keep_rate: float, fuse_token: bool) -> None:
        super().__init__()
        if not 0 < keep_rate <= 1:
            raise ValueError(f"keep_rate must be in (0, 1], got {keep_rate}")
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads, qkv_bias=True)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), dim)
        self.keep_rate = keep_rate
        self.fuse_token = fuse_token

    def forward(self, x: Tensor, keep_rate: Optional[float] = None) -> Tuple[Tensor, Optional[Tensor]]:
        if keep_rate is None:
            keep_rate = self.keep_rate
        attn_out, _, weights = self.attn(self.norm1(x))
        x = x + attn_out
        kept: Optional[Tensor] = None
        n_patches = x.shape[1] - 1
        # pruning only happens in layers configured with a rate < 1, and only if the runtime rate is < 1
        if self.keep_rate < 1 and keep_rate < 1:
            n_keep = math.ceil(keep_rate * n_patches)
            if n_keep < n_patches:
                x, kept = self._prune(x, weights, n_keep)
        return x + self.mlp(self.norm2(x)), kept

    def _prune(self, x: Tensor, weights: Tensor, n_keep: int) -> Tuple[Tensor, Tensor]:
        b, n, c = x.shape
        cls_attn = weights[:, :, 0, 1:].mean(dim=1)  # [B, N-1]
        _, kept = cls_attn.topk(n_keep, dim=1, largest=True, sorted=True)
        patches = x[:, 1:]
        parts = [x[:, :1], patches.gather(1, kept.unsqueeze(-1).expand(-1, -1, c))]
        if self.fuse_token:
            dropped_mask = torch.ones_like(cls_attn, dtype=torch.bool).scatter_(1, kept, False)
            order = torch.arange(n - 1, device=x.device).expand(b, -1)
            dropped = order[dropped_mask].view(b, -1)  # ascending token order
            dropped_tokens = patches.gather(1, dropped.unsqueeze(-1).expand(-1, -1, c))
            dropped_attn = cls_attn.gather(1, dropped)
            parts.append((dropped_tokens * dropped_attn.unsqueeze(-1)).sum(dim=1, keepdim=True))
        return torch.cat(parts, dim=1), kept


class EViT(nn.Module):
    """EViT / DeiT with timm key names; ``forward(x, keep_rate=None, get_idx=False)``."""

    def __init__(self, *, embed_dim: int, depth: int, num_heads: int, mlp_ratio: float, num_classes: int,
                 keep_rates: Sequence[float], fuse_token: bool, image_size: int, patch_size: int) -> None:
        super().__init__()
        self.depth = depth
        self.patch_embed = DeiTPatchEmbed(image_size, patch_size, 0, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.patch_embed.num_patches + 1, embed_dim))
        self.blocks = nn.ModuleList(
            EViTBlock(embed_dim, num_heads, mlp_ratio, float(rate), fuse_token) for rate in keep_rates)
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()

    def forward(self, x: Tensor, keep_rate: Union[None, float, Sequence[Optional[float]]] = None,
                get_idx: bool = False) -> Union[Tensor, Tuple[Tensor, List[Tensor]]]:
        if isinstance(keep_rate, (tuple, list)):
            rates = list(keep_rate)
            if len(rates) != self.depth:
                raise ValueError(f"need {self.depth} keep rates, got {len(rates)}")
        else:
            rates = [keep_rate] * self.depth
        x = self.patch_embed(x)
        x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1) + self.pos_embed
        idxs = []
        for block, rate in zip(self.blocks, rates):
            x, kept = block(x, rate)
            if kept is not None:
                idxs.append(kept)
        logits = self.head(self.norm(x)[:, 0])
        if get_idx:
            return logits, idxs
        return logits


def build_evit(*, embed_dim: int, depth: int, num_heads: int, mlp_ratio: float, num_classes: int,
               keep_rate: Union[float, Sequence[float]], fuse_token: bool,
               drop_loc: Sequence[int] = (3, 6, 9), image_size: int = 224, patch_size: int = 16) -> nn.Module:
    """Official EViT; a float ``keep_rate`` applies at ``drop_loc``, a sequence gives one rate per layer."""
    if isinstance(keep_rate, (int, float)):
        rates = [1.0] * depth
        for loc in drop_loc:
            rates[loc] = float(keep_rate)
    else:
        rates = [float(r) for r in keep_rate]
        if len(rates) == 1:
            rates = rates * depth
        if len(rates) != depth:
            raise ValueError(f"need {depth} keep rates, got {len(rates)}")
    model = EViT(embed_dim=embed_dim, depth=depth, num_heads=num_heads, mlp_ratio=mlp_ratio,
                 num_classes=num_classes, keep_rates=rates, fuse_token=fuse_token, image_size=image_size,
                 patch_size=patch_size)
    return model.eval()


def build_deit(*, embed_dim: int, depth: int, num_heads: int, mlp_ratio: float, num_classes: int,
               image_size: int = 224, patch_size: int = 16) -> nn.Module:
    """Plain DeiT with timm key names (EViT with every keep rate 1)."""
    return build_evit(embed_dim=embed_dim, depth=depth, num_heads=num_heads, mlp_ratio=mlp_ratio,
                      num_classes=num_classes, keep_rate=[1.0] * depth, fuse_token=False,
                      image_size=image_size, patch_size=patch_size)


# ----------------------------------------------------------------------------------------------------
# weights and checkpoints

# Extra gain on some weight matrices (matched on the parameter's module path).
_QKV_GAIN = 1.6  # peaky attention
_PERFORMER_KQV_GAIN = 1.5  # keeps |k|, |q| ~ 1.5 so the positive random features stay well scaled
_RELATION_CONV_GAIN = 0.7


@torch.no_grad()
def randomize_(model: nn.Module, seed: int) -> None:
    """Re-draw every floating tensor of ``model.state_dict()`` from a seeded normal distribution.

    Weights get std ``gain / sqrt(fan_in)`` (so activations and logits stay O(1)), with a larger gain on
    ``qkv`` for peaky attention; biases std 0.1; LayerNorm weights 1 + 0.1 * noise; class token and
    learned position embeddings std 0.5. The frozen sinusoidal ``pos_embed`` is left alone and the
    performer ``w`` is re-drawn as a seeded scaled orthogonal matrix. Deterministic for a given seed.
    """
    gen = torch.Generator().manual_seed(int(seed))
    modules = dict(model.named_modules())
    for name, tensor in model.state_dict(keep_vars=True).items():
        if not torch.is_floating_point(tensor):
            continue
        owner_name, _, leaf = name.rpartition(".")
        owner = modules[owner_name]
        if isinstance(owner, TokenPerformer) and leaf == "w":
            new = TokenPerformer.draw_projection(owner.m, owner.emb, generator=gen)
        elif leaf == "pos_embed" and not tensor.requires_grad:
            continue
        else:
            noise = torch.randn(tensor.shape, generator=gen, dtype=torch.float32)
            if isinstance(owner, nn.LayerNorm):
                new = 1.0 + 0.1 * noise if leaf == "weight" else 0.1 * noise
            elif isinstance(owner, (nn.Linear, nn.Conv2d)) and leaf == "weight":
                fan_in = int(np.prod(tensor.shape[1:]))
                gain = 1.0
                if owner_name.endswith("attn.qkv"):
                    gain = _QKV_GAIN
                elif owner_name.endswith(".kqv"):
                    gain = _PERFORMER_KQV_GAIN / math.sqrt(owner.out_features // 3)
                elif ".relation_reuse_conv." in f".{owner_name}.":
                    gain = _RELATION_CONV_GAIN
                new = noise * (gain / math.sqrt(fan_in))
            elif leaf == "bias":
                new = 0.1 * noise
            else:  # class token, learned position embedding
                new = 0.5 * noise
        tensor.copy_(new.to(dtype=tensor.dtype, device=tensor.device))


def dvt_checkpoint_extras() -> Dict[str, Any]:
    """Placeholder values for the non-weight entries of an official DVT checkpoint."""
    return {
        "flops": [0.1, 0.3, 0.7],
        "anytime_classification": [10.0, 20.0, 30.0],
        "dynamic_threshold": torch.zeros(59, 3),
        "budgeted_batch_classification": [[0.1] * 59, [1.0] * 59],
    }


def save_official_checkpoint(model: nn.Module, path: Any, *, wrapper: Optional[str] = "model_state_dict",
                             legacy: bool = False, extra: Optional[Mapping[str, Any]] = None) -> None:
    """``torch.save`` the state dict in an official layout.

    ``wrapper="model_state_dict"`` (DVT) or ``"model"`` (EViT/DeiT) nests the state dict under that key,
    followed by the entries of ``extra`` (e.g. ``dvt_checkpoint_extras()``); ``wrapper=None`` saves the
    bare state dict. ``legacy=True`` writes the pre-1.6 (non-zip) serialization.
    """
    state = model.state_dict()  # an OrderedDict, like the official checkpoints
    state = type(state)((k, v.detach().cpu().clone()) for k, v in state.items())
    if wrapper is None:
        if extra:
            raise ValueError("extra entries need a wrapper key")
        obj: Any = state
    else:
        obj = {wrapper: state}
        if extra:
            obj.update(extra)
    torch.save(obj, path, _use_new_zipfile_serialization=not legacy)
