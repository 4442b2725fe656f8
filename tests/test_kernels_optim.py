"""The fused AdamW update (dvt_ms.kernels.ops.adamw_update_op): in place, in graph order, per-parameter weight
decay, bfloat16 gradients, and dtype errors. Its agreement with torch.optim.AdamW is in test_train_optim.py."""
import mindspore as ms
import numpy as np
import pytest
from mindspore import Parameter, Tensor, nn

from dvt_ms.kernels import KernelChoice
from dvt_ms.kernels.ops import adamw_update_op

pytestmark = [pytest.mark.usefixtures("module_in_tmp_cwd"),
              pytest.mark.skipif(not KernelChoice.resolve("auto", "CPU").available,
                                 reason="the fused CPU kernels cannot be built here")]

BETA1, BETA2, EPS = 0.9, 0.999, 1e-8


class _Update(nn.Cell):
    """Reads the parameters before and after one update in the same graph."""

    def __init__(self, params, grad_dtype=ms.float32):
        super().__init__()
        self.p = ms.ParameterTuple([Parameter(Tensor(v), name=f"p{i}") for i, v in enumerate(params)])
        self.m = ms.ParameterTuple([Parameter(Tensor(np.zeros_like(v)), name=f"m{i}") for i, v in enumerate(params)])
        self.v = ms.ParameterTuple([Parameter(Tensor(np.zeros_like(v)), name=f"v{i}") for i, v in enumerate(params)])
        self.op = adamw_update_op(len(params))
        self.grad_dtype = grad_dtype

    def construct(self, decay, hyper, grads):
        before = self.p[0] * 1.0
        grads = tuple(g.astype(self.grad_dtype) for g in grads)
        self.op(decay, hyper, *self.p, *self.m, *self.v, *grads)
        return before, self.p[0] * 1.0


def _reference(p, g, lr, wd):
    """One torch.optim.AdamW step from zero moments (t = 1), in float64."""
    m = (1 - BETA1) * g
    v = (1 - BETA2) * g * g
    c1, c2 = 1 - BETA1, np.sqrt(1 - BETA2)
    return p * (1 - lr * wd) - (lr / c1) * m / (np.sqrt(v) / c2 + EPS), m, v


def _hyper(lr):
    return Tensor(np.array([lr, BETA1, BETA2, 1 - BETA1, 1 - BETA2, lr / (1 - BETA1), np.sqrt(1 - BETA2), EPS],
                           np.float32))


@pytest.mark.parametrize("grad_dtype", [ms.float32, ms.bfloat16])
def test_update_is_in_place_in_graph_order_with_per_parameter_decay(grad_dtype):
    rng = np.random.default_rng(0)
    params = [rng.standard_normal(shape).astype(np.float32) for shape in ((70_000,), (3, 5), (1,))]
    # bfloat16-representable gradients, so that both gradient dtypes give the same update
    grads = [(rng.standard_normal(p.shape).astype(np.float32).view(np.uint32) & 0xFFFF0000).view(np.float32)
             for p in params]
    decays = np.array([0.05, 0.0, 0.3], np.float32)
    lr = 1e-2
    net = _Update(params, grad_dtype)
    before, after = net(Tensor(decays), _hyper(lr), tuple(Tensor(g) for g in grads))
    np.testing.assert_array_equal(before.asnumpy(), params[0])          # the read before the update saw the old value
    for i, (p, g, wd) in enumerate(zip(params, grads, decays)):
        want_p, want_m, want_v = _reference(p.astype(np.float64), g.astype(np.float64), lr, float(wd))
        np.testing.assert_allclose(net.p[i].asnumpy(), want_p, rtol=1e-6, atol=1e-6, err_msg=f"param {i}")
        np.testing.assert_allclose(net.m[i].asnumpy(), want_m, rtol=1e-6, atol=1e-9, err_msg=f"exp_avg {i}")
        np.testing.assert_allclose(net.v[i].asnumpy(), want_v, rtol=1e-6, atol=1e-12, err_msg=f"exp_avg_sq {i}")
    np.testing.assert_array_equal(after.asnumpy(), net.p[0].asnumpy())  # the read after it saw the new one


def test_update_refuses_parameters_it_cannot_write_in_place():
    op = adamw_update_op(1)
    p = Parameter(Tensor(np.ones(4, np.float32), ms.bfloat16), name="narrow")
    m = Parameter(Tensor(np.zeros(4, np.float32)), name="m")
    v = Parameter(Tensor(np.zeros(4, np.float32)), name="v")
    with pytest.raises(TypeError, match="parameter 0 is"):
        op(Tensor(np.zeros(1, np.float32)), _hyper(1e-3), p, m, v, Tensor(np.ones(4, np.float32)))
    with pytest.raises(ValueError, match="at least one parameter"):
        adamw_update_op(0)
