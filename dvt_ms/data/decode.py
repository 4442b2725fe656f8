"""Image decoding shared by every reader of image files: one way from a file to an RGB picture."""
import os
from typing import BinaryIO, Union

from PIL import Image

__all__ = ["read_rgb"]


def read_rgb(path: Union[str, os.PathLike, BinaryIO]) -> Image.Image:
    """Open an image file (a path or a binary file object) fully decoded as an RGB ``PIL.Image.Image``.

    Raises ``OSError`` naming ``path`` when the file cannot be read or decoded (truncated files included).
    """
    try:
        with Image.open(path) as image:
            image.load()
            return image.convert("RGB")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise OSError(f"{path}: cannot read the image ({exc})") from None
