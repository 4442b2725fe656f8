"""Stochastic depth: drop the residual branch of whole samples while training."""
from mindspore import Tensor, nn, ops


class DropPath(nn.Cell):
    """Zero a sample's branch with probability ``drop_prob`` and rescale the survivors."""

    def __init__(self, drop_prob: float = 0.0):
        super().__init__()
        if not 0.0 <= drop_prob < 1.0:
            raise ValueError(f"drop_path probability must be in [0, 1), got {drop_prob}")
        self.keep_prob = 1.0 - drop_prob

    @property
    def active(self) -> bool:
        """Whether ``construct`` changes its input (training with a drop probability above 0)."""
        return self.training and self.keep_prob < 1.0

    def construct(self, x: Tensor) -> Tensor:
        if not self.active:
            return x
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        mask = ops.floor(self.keep_prob + ops.rand(shape, dtype=x.dtype))
        return x / self.keep_prob * mask
