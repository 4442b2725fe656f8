"""Tokens-to-token (T2T) tokenizer with Performer attention, as in T2T-ViT."""
import math
from typing import Sequence, Tuple

import numpy as np
from mindspore import Parameter, Tensor, nn, ops

from ..kernels import STOCK, KernelChoice
from .linear import Linear
from .mlp import Mlp
from .norm import LayerNorm
from .patch_embed import conv_output_size

Unfold = Tuple[int, int, int]  # (kernel, stride, padding)


def orthogonal_random_features(num_features: int, dim: int, seed: int = 0) -> np.ndarray:
    """Rows of a random orthogonal matrix scaled by ``sqrt(num_features)`` (Performer features)."""
    rng = np.random.default_rng(seed)
    q, r = np.linalg.qr(rng.standard_normal((max(num_features, dim), min(num_features, dim))))
    q = q * np.sign(np.diag(r))
    matrix = q if num_features >= dim else q.T
    return (matrix[:num_features, :dim] * math.sqrt(num_features)).astype(np.float32)


class TokenPerformer(nn.Cell):
    """Single-head Performer layer with positive random features; ``v`` is the skip connection.

    The random-feature attention (exp features, their products, the normalizer) runs in the dtype of its
    input: float32 with a model's own low precision, which casts only the dense layers (``kqv``, ``proj``,
    ``mlp``), as for softmax; float16 under ``mindspore.amp`` O2/O3, where features of large tokens (e^-30)
    fall below float16's range.
    """

    def __init__(self, dim: int, emb: int, kernel_ratio: float = 0.5, norm_eps: float = 1e-5,
                 stabilizer: float = 1e-8, kernels: KernelChoice = STOCK):
        super().__init__()
        self.emb = emb
        self.num_features = int(emb * kernel_ratio)
        self.kqv = Linear(dim, 3 * emb, kernels=kernels)
        self.proj = Linear(emb, emb, kernels=kernels)
        self.norm1 = LayerNorm((dim,), epsilon=norm_eps, kernels=kernels)
        self.norm2 = LayerNorm((emb,), epsilon=norm_eps, kernels=kernels)
        self.mlp = Mlp(emb, emb, emb, kernels=kernels)
        self.random_features = Parameter(Tensor(orthogonal_random_features(self.num_features, emb)),
                                         name="random_features", requires_grad=False)
        self.feature_scale = 1.0 / math.sqrt(self.num_features)
        self.stabilizer = stabilizer
        self.project_features = ops.BatchMatMul(transpose_b=True)

    def _positive_features(self, x: Tensor) -> Tensor:
        half_sq_norm = (x * x).sum(axis=-1, keepdims=True) / 2
        projected = ops.matmul(x, ops.cast(self.random_features, x.dtype).T)
        return ops.exp(projected - half_sq_norm) * self.feature_scale

    def construct(self, x: Tensor) -> Tensor:
        k, q, v = ops.split(self.kqv(self.norm1(x)), self.emb, axis=-1)
        kp, qp = self._positive_features(k), self._positive_features(q)
        normalizer = ops.matmul(qp, kp.sum(axis=1).expand_dims(-1))
        kv = ops.matmul(v.transpose(0, 2, 1), kp)
        y = self.project_features(qp, kv) / (normalizer + self.stabilizer)
        y = v + self.proj(y)
        return y + self.mlp(self.norm2(y))


class TokensToToken(nn.Cell):
    """Soft splits (unfolds) with a Performer between each pair, then a linear projection."""

    def __init__(self, image_size: int, unfolds: Sequence[Unfold], embed_dim: int, token_dim: int = 64,
                 in_chans: int = 3, kernels: KernelChoice = STOCK):
        super().__init__()
        if len(unfolds) < 2:
            raise ValueError(f"T2T needs at least two unfolds, got {list(unfolds)}")
        self.unfolds = tuple(tuple(u) for u in unfolds)
        sizes = []
        size = image_size
        for kernel, stride, padding in self.unfolds:
            size = conv_output_size(size, kernel, stride, padding)
            if size < 1:
                raise ValueError(f"unfolds {list(unfolds)} leave no tokens at image_size {image_size}")
            sizes.append(size)
        self.split_sizes = tuple(sizes)
        self.grid_size = size
        self.num_patches = size * size
        channels = [in_chans] + [token_dim] * (len(self.unfolds) - 1)
        self.attentions = nn.CellList([
            TokenPerformer(channels[i] * self.unfolds[i][0] ** 2, token_dim, kernels=kernels)
            for i in range(len(self.unfolds) - 1)
        ])
        self.project = Linear(token_dim * self.unfolds[-1][0] ** 2, embed_dim, kernels=kernels)

    @staticmethod
    def _soft_split(x: Tensor, unfold: Unfold) -> Tensor:
        kernel, stride, padding = unfold
        return ops.unfold(x, kernel, padding=padding, stride=stride).transpose(0, 2, 1)

    def construct(self, x: Tensor) -> Tensor:
        x = self._soft_split(x, self.unfolds[0])
        for i, attention in enumerate(self.attentions):
            x = attention(x)
            b, _, c = x.shape
            side = self.split_sizes[i]
            x = x.transpose(0, 2, 1).reshape(b, c, side, side)
            x = self._soft_split(x, self.unfolds[i + 1])
        return self.project(x)
