"""Tiny sizes of any registered model, for tests that sweep the registry."""
from dvt_ms.models import model_overrides


def tiny_overrides(name: str) -> dict:
    """``create_model`` overrides that make ``name`` tiny (64-pixel images, one block of width 32, five
    classes), with the sizes of its family's extra parts (T2T tokens, DVT reuse) shrunk too."""
    sizes = dict(embed_dim=32, depth=1, num_heads=2, mlp_ratio=2.0, num_classes=5, image_size=64)
    accepted = model_overrides(name)
    if "token_dim" in accepted:
        sizes["token_dim"] = 16
    if "reuse_hidden_dim" in accepted:
        sizes.update(reuse_hidden_dim=16, reuse_feature_dim=8)
    if "drop_loc" in accepted:  # prune in the first of two blocks, so that the second sees the pruned tokens
        sizes.update(depth=2, drop_loc=[0])
    return sizes
