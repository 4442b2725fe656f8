"""Opt-in (``-m slow``): full-size DVT cascades against the PyTorch reference, through the converter."""
import mindspore as ms
import numpy as np
import pytest

from dvt_ms import create_model, load_checkpoint

pytestmark = pytest.mark.slow

FULL = {
    "dvt_deit_small": dict(family="deit", embed_dim=384, depth=12, num_heads=6, mlp_ratio=4.0),
    "dvt_t2t_vit_12": dict(family="t2t", embed_dim=256, depth=12, num_heads=4, mlp_ratio=2.0),
}


@pytest.mark.parametrize("name", sorted(FULL))
def test_full_size_cascade(torch, tmp_path, name):
    from dvt_ms.reference import torch_models as torch_reference

    reference = torch_reference.build_dvt(**FULL[name], num_classes=1000, feature_reuse=True,
                                          relation_reuse=True)
    torch_reference.randomize_(reference, seed=21)
    path = tmp_path / f"{name}.pth.tar"
    torch_reference.save_official_checkpoint(reference, path, extra=torch_reference.dvt_checkpoint_extras())
    images = np.random.default_rng(3).standard_normal((1, 3, 224, 224)).astype(np.float32)
    with torch.no_grad():
        expected = reference(torch.from_numpy(images))
    del reference

    net = create_model(name)
    load_checkpoint(net, path)
    net.set_train(False)
    for i, (ours, theirs) in enumerate(zip(net(ms.Tensor(images)), expected)):
        np.testing.assert_allclose(ours.asnumpy(), theirs.numpy(), atol=1e-4, rtol=0, err_msg=f"exit {i}")
