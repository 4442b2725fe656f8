"""Tiny sizes of any registered model, for tests that sweep the registry."""
from typing import Callable, List, Sequence, Tuple

from dvt_ms.models import model_family, model_overrides, model_spec


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


def one_per_tiny_spec(cases: Sequence[str], model_of: Callable[[str], str] = str,
                      overrides_of: Callable[[str], dict] = tiny_overrides) -> Tuple[List[str], List[str]]:
    """One case per distinct tiny model, and its test id: cases whose model (``model_of(case)``) has the same
    spec with ``overrides_of(case)`` and the same family build the same graph, and run as one case named by all
    of them (``deit_tiny+deit_small+deit_base``)."""
    groups = {}
    for case in cases:
        model = model_of(case)
        groups.setdefault((model_spec(model, **overrides_of(case)), model_family(model)), []).append(case)
    return [names[0] for names in groups.values()], ["+".join(names) for names in groups.values()]
