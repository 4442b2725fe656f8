"""The building blocks of :mod:`dvt_ms.reference.torch_models` (plain ``torch.nn``, official key names).

Attention (fused ``qkv``, explicit ``q @ k^T``, softmax, ``@ v``), the MLP, DVT's reuse block and its fixed
resampling, DeiT's patch embedding, T2T-ViT's tokens-to-token with its performer, and the sinusoid table.
Like the models, it uses nothing else of dvt_ms.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

# Sizes of the feature-reuse path, fixed in the official DVT code for every model size.
REUSE_CHANNELS = 48
REUSE_HIDDEN = 128

# Patch embeddings of the three DeiT stages: (kernel = stride, padding).
DEIT_STAGE_PATCHES: Tuple[Tuple[int, int], ...] = ((32, 0), (23, 3), (16, 0))
# Tokens-to-token soft splits of the three T2T stages: (kernel, stride, padding) of the first unfold;
# the second and third unfolds are always (3, 2, 1).
T2T_STAGE_SPLITS: Tuple[Tuple[int, int, int], ...] = ((14, 8, 3), (11, 6, 5), (7, 4, 2))
T2T_LATER_SPLIT = (3, 2, 1)
PERFORMER_KERNEL_RATIO = 0.5
PERFORMER_EPS = 1e-8


# ----------------------------------------------------------------------------------------------------
# shared pieces


class Mlp(nn.Module):
    """Two linear layers with an exact (erf) GELU in between: keys ``fc1``, ``fc2``."""

    def __init__(self, in_features: int, hidden_features: int, out_features: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_features, out_features)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Attention(nn.Module):
    """Multi-head self-attention with fused ``qkv``; returns output, pre-softmax logits and weights."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, logit_bias: Optional[Tensor] = None) -> Tuple[Tensor, Tensor, Tensor]:
        b, n, c = x.shape
        heads = self.num_heads
        q, k, v = self.qkv(x).view(b, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4).unbind(0)
        logits = (q @ k.transpose(-2, -1)) * self.scale
        if logit_bias is not None:
            logits = logits + logit_bias
        weights = logits.softmax(dim=-1)
        out = (weights @ v).transpose(1, 2).reshape(b, n, c)
        return self.proj(out), logits, weights


def _grid_resample(grid: Tensor, target_tokens: int) -> Tensor:
    """DVT's fixed resampling of a [M, C, g, g] map: nearest upsample, then adaptive average pooling.

    The official code only distinguishes "100 target tokens" (-> 14x14 -> 10x10) from anything else
    (-> 20x20 -> 14x14); this reproduces that choice exactly.
    """
    if target_tokens == 100:
        up, out = 14, 10
    else:
        up, out = 20, 14
    grid = F.interpolate(grid, size=(up, up), mode="nearest")
    return F.adaptive_avg_pool2d(grid, (out, out))


def resample_last_axis(t: Tensor, target_tokens: int) -> Tensor:
    """Resample the last axis of ``t`` (class entry first, then a square grid) to 1 + target tokens."""
    lead = t.shape[:-1]
    n = t.shape[-1] - 1
    side = int(math.isqrt(n))
    grid = t[..., 1:].reshape(-1, lead[-1], side, side)
    grid = _grid_resample(grid, target_tokens).reshape(*lead, -1)
    return torch.cat((t[..., :1], grid), dim=-1)


class ReuseBlock(nn.Module):
    """Pre-norm transformer block of a DVT stage, optionally with feature reuse.

    With feature reuse the MLP sees the token features concatenated with ``REUSE_CHANNELS`` channels
    computed from the previous stage's last-layer features (zeros for the class token).
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, qkv_bias: bool, eps: float,
                 feature_reuse: bool) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, num_heads, qkv_bias)
        mlp_in = dim + REUSE_CHANNELS if feature_reuse else dim
        self.norm2 = nn.LayerNorm(mlp_in, eps=eps)
        self.mlp = Mlp(mlp_in, int(dim * mlp_ratio), dim)
        self.feature_reuse = feature_reuse
        if feature_reuse:
            # (sic) the official attribute name is misspelt; keep it for the state-dict keys
            self.feature_resuse_mlp = nn.Sequential(
                nn.LayerNorm(dim, eps=eps), Mlp(dim, REUSE_HIDDEN, REUSE_CHANNELS))

    def forward(self, x: Tensor, prev_features: Optional[Tensor] = None,
                relation_bias: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        attn_out, logits, _ = self.attn(self.norm1(x), relation_bias)
        x = x + attn_out
        mlp_in = x
        if prev_features is not None:
            reused = self.feature_resuse_mlp(prev_features)[:, 1:]  # [B, n_prev, 48]
            b, n_prev, c = reused.shape
            side = int(math.isqrt(n_prev))
            grid = reused.transpose(1, 2).reshape(b, c, side, side)
            n_tokens = x.shape[1] - 1
            reused = _grid_resample(grid, n_tokens).reshape(b, c, n_tokens).transpose(1, 2)
            reused = torch.cat((reused.new_zeros(b, 1, c), reused), dim=1)
            mlp_in = torch.cat((x, reused), dim=2)
        return x + self.mlp(self.norm2(mlp_in)), logits


class DeiTPatchEmbed(nn.Module):
    """Non-overlapping (optionally padded) convolutional patch embedding: key ``proj``."""

    def __init__(self, image_size: int, patch: int, padding: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, embed_dim, kernel_size=patch, stride=patch, padding=padding)
        side = (image_size + 2 * padding - patch) // patch + 1
        self.num_patches = side * side

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class TokenPerformer(nn.Module):
    """Single-head linear-attention (positive random features) T2T layer of T2T-ViT.

    Keys: ``w`` (frozen random projection), ``kqv``, ``proj``, ``norm1``, ``norm2``, ``mlp.0``, ``mlp.2``.
    The residual of the attention part is the value projection itself, as in the official layer.
    """

    def __init__(self, dim: int, emb: int) -> None:
        super().__init__()
        self.emb = emb
        self.m = int(emb * PERFORMER_KERNEL_RATIO)
        self.kqv = nn.Linear(dim, 3 * emb)
        self.proj = nn.Linear(emb, emb)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(emb)
        self.mlp = nn.Sequential(nn.Linear(emb, emb), nn.GELU(), nn.Linear(emb, emb), nn.Dropout(0.0))
        self.w = nn.Parameter(self.draw_projection(self.m, emb), requires_grad=False)

    @staticmethod
    def draw_projection(m: int, emb: int, generator: Optional[torch.Generator] = None) -> Tensor:
        """Random [m, emb] matrix with orthonormal rows, scaled by sqrt(m)."""
        w = torch.empty(m, emb)
        nn.init.orthogonal_(w, generator=generator)
        return w * math.sqrt(m)

    def _features(self, t: Tensor) -> Tensor:
        half_sq_norm = (t * t).sum(dim=-1, keepdim=True) / 2
        return torch.exp(t @ self.w.t() - half_sq_norm) / math.sqrt(self.m)

    def forward(self, x: Tensor) -> Tensor:
        k, q, v = self.kqv(self.norm1(x)).split(self.emb, dim=-1)
        kf, qf = self._features(k), self._features(q)  # [B, T, m]
        denom = (qf @ kf.sum(dim=1).unsqueeze(-1))  # [B, T, 1]
        kv = v.transpose(1, 2) @ kf  # [B, emb, m]
        y = (qf @ kv.transpose(1, 2)) / (denom + PERFORMER_EPS)
        y = v + self.proj(y)
        return y + self.mlp(self.norm2(y))


class TokensToToken(nn.Module):
    """Performer tokens-to-token embedding: soft split, T2T layer, soft split, T2T layer, soft split."""

    def __init__(self, image_size: int, split0: Tuple[int, int, int], embed_dim: int,
                 token_dim: int) -> None:
        super().__init__()
        k0, s0, p0 = split0
        k, s, p = T2T_LATER_SPLIT
        self.soft_split0 = nn.Unfold(kernel_size=k0, stride=s0, padding=p0)
        self.soft_split1 = nn.Unfold(kernel_size=k, stride=s, padding=p)
        self.soft_split2 = nn.Unfold(kernel_size=k, stride=s, padding=p)
        self.attention1 = TokenPerformer(3 * k0 * k0, token_dim)
        self.attention2 = TokenPerformer(token_dim * k * k, token_dim)
        self.project = nn.Linear(token_dim * k * k, embed_dim)
        side = (image_size + 2 * p0 - k0) // s0 + 1
        for _ in range(2):
            side = (side + 2 * p - k) // s + 1
        self.num_patches = side * side

    @staticmethod
    def _to_grid(t: Tensor) -> Tensor:
        b, n, c = t.shape
        side = int(math.isqrt(n))
        return t.transpose(1, 2).reshape(b, c, side, side)

    def forward(self, x: Tensor) -> Tensor:
        x = self.attention1(self.soft_split0(x).transpose(1, 2))
        x = self.attention2(self.soft_split1(self._to_grid(x)).transpose(1, 2))
        return self.project(self.soft_split2(self._to_grid(x)).transpose(1, 2))


def sinusoid_table(n_position: int, d_hid: int) -> Tensor:
    """Fixed sine/cosine position table [1, n_position, d_hid] (float64 maths, float32 result)."""
    pos = np.arange(n_position, dtype=np.float64)[:, None]
    exponent = 2 * (np.arange(d_hid) // 2) / d_hid
    angles = pos / np.power(10000, exponent)[None, :]
    angles[:, 0::2] = np.sin(angles[:, 0::2])
    angles[:, 1::2] = np.cos(angles[:, 1::2])
    return torch.tensor(angles, dtype=torch.float32).unsqueeze(0)


