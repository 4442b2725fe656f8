"""Dynamic Vision Transformer: a cascade of ViTs over more and more tokens, each with its own exit.

The cascade is a :class:`~dvt_ms.models.cascade_spec.CascadeSpec`. Each stage is a :class:`CascadeStage`
cell whose inputs and outputs are the spec's :meth:`~dvt_ms.models.cascade_spec.CascadeSpec.stage_io`;
the model's ``construct``, the early-exit engine (:mod:`dvt_ms.infer`) and MindIR export
(:mod:`dvt_ms.export`) all call these same cells.
"""
from typing import Tuple

from mindspore import Tensor, nn

from ..kernels import STOCK, KernelChoice
from .cascade_spec import CascadeSpec, StageIO
from .vision_transformer import VisionTransformer


class CascadeStage(VisionTransformer):
    """Stage ``index`` of a cascade as a cell: ``(images[, tokens][, relations]) -> (logits[, tokens][, relations])``.

    The inputs and outputs, and their order, are those of ``spec.stage_io(index)``. The output is always
    a tuple. The parameters are those of a :class:`VisionTransformer`, with the same names.
    """

    def __init__(self, spec: CascadeSpec, index: int, kernels: KernelChoice = STOCK):
        super().__init__(spec, index, kernels)
        self.io: StageIO = spec.stage_io(index)
        names = self.io.input_names
        self._tokens_at = names.index("tokens") if "tokens" in names else 0
        self._relations_at = names.index("relations") if "relations" in names else 0
        self.gives_tokens = spec.gives_tokens(index)

    def construct(self, *inputs):
        return self.forward(*inputs)

    def forward(self, *inputs) -> Tuple[Tensor, ...]:
        """The stage on ``inputs`` (as named by ``self.io``); what ``construct`` and the engine's cells run."""
        tokens = inputs[self._tokens_at] if self._tokens_at else None
        relations = inputs[self._relations_at] if self._relations_at else None
        final_tokens, stacked, _ = self.forward_features(inputs[0], tokens, relations)
        outputs = (self.head_logits(final_tokens),)
        if self.gives_tokens:
            outputs = outputs + (final_tokens,)
        if self.gives_relations:
            outputs = outputs + (stacked,)
        return outputs


class DynamicVisionTransformer(nn.Cell):
    """A cascade of :class:`CascadeStage` cells built from ``spec``; ``construct`` returns every exit's logits."""

    def __init__(self, spec: CascadeSpec, kernels: KernelChoice = STOCK):
        super().__init__()
        self.spec = spec
        self.kernels = kernels
        self.stages = nn.CellList([CascadeStage(spec, k, kernels) for k in range(spec.num_exits)])
        # per stage, per reused input: (source stage, index of that output in the source's outputs)
        self._wiring = tuple(
            tuple((t.source[0], spec.stage_io(t.source[0]).output_names.index(t.source[1]))
                  for t in spec.stage_io(k).inputs[1:])
            for k in range(spec.num_exits))

    @property
    def num_exits(self) -> int:
        return self.spec.num_exits

    def construct(self, x: Tensor) -> Tuple[Tensor, ...]:
        outputs = []
        for k, stage in enumerate(self.stages):
            args = [x]
            for source, position in self._wiring[k]:
                args.append(outputs[source][position])
            outputs.append(stage(*args))
        return tuple(out[0] for out in outputs)
