import sys
import mindspore
from mindspore import nn
from mindspore.nn import Cell
from mindspore.ops import functional as F
#
#
sys.path.insert(0, '/work/wt17/dvt_ms/models')
from typing import Tuple
from mindspore import Tensor, nn
from dvt_ms.models.dvt import DynamicVisionTransformer

class DynamicVisionTransformerOpt_2(DynamicVisionTransformer, nn.Cell):

    def __init__(self, obj):
        nn.Cell.__init__(self)
        for key, value in obj.__dict__.items():
            setattr(self, key, value)
        self.__class__.num_exits = obj.__class__.num_exits

    @property
    def num_exits(self) -> int:
        return self.spec.num_exits

    def construct(self, x) -> Tuple[Tensor, ...]:
        outputs = []
        enumerate_var = enumerate(self.stages)
        for k, stage in enumerate_var:
            args = [x]
            subscript_var = self._wiring[k]
            for source, position in subscript_var:
                subscript_var_1 = outputs[source][position]
                args.append(subscript_var_1)
            stage_var = stage(*args)
            outputs.append(stage_var)
        generatorexp_var = (out[0] for out in outputs)
        tuple_var = tuple(generatorexp_var)
        return tuple_var
#