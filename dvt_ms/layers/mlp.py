"""Two-layer perceptron used by transformer blocks and reuse modules."""
from typing import Optional

from mindspore import Tensor, nn

from .activation import GELU


class Mlp(nn.Cell):
    """fc1 -> GELU -> fc2."""

    def __init__(self, in_features: int, hidden_features: int, out_features: Optional[int] = None):
        super().__init__()
        self.fc1 = nn.Dense(in_features, hidden_features)
        self.act = GELU()
        self.fc2 = nn.Dense(hidden_features, out_features or in_features)

    def construct(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))
