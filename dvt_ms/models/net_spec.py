"""What a built network's cascade spec (``net.spec``) says: its exits, classes and input size."""
from typing import List

__all__ = ["num_exits", "model_num_classes", "model_image_size", "exit_names"]


def num_exits(net) -> int:
    """Exits of a network (its cascade spec): one per DVT stage, one for a plain ViT/EViT."""
    return net.spec.num_exits


def model_num_classes(net) -> int:
    """Classes the network predicts."""
    return int(net.spec.num_classes)


def model_image_size(net) -> int:
    """Input resolution the network was built for."""
    return int(net.spec.image_size)


def exit_names(net) -> List[str]:
    """Token grid of each exit, e.g. ``['7x7', '10x10', '14x14']``."""
    return [net.spec.exit_name(k) for k in range(net.spec.num_exits)]
