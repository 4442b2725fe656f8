"""Read one image file as 8-bit RGB: the single decoder of training, evaluation and inference.

:func:`read_rgb` opens the file itself (so a dangling symbolic link or a file the user may not read
fails here, as an ``OSError`` naming the path, like a corrupt or truncated file) and decodes it with
PIL, which refuses truncated files. Modes are brought to RGB by :func:`to_rgb`:

- 16-bit greyscale (``I;16``, ``I;16B``, ``I;16L``, ``I;16N``; and ``I``, as which some PIL versions
  open 16-bit PNGs) is scaled from 0..65535 to 0..255 (``round(v / 257)``). PIL's own
  ``convert("RGB")`` clips such values at 255: a mid-grey 16-bit image would come out white;
- floating-point (``F``) images have no agreed range and are refused;
- every other mode (``L``, ``P``, ``LA``, ``RGBA``, ``CMYK``, ``1``, ...) goes through PIL's ``convert``.
  16-bit-per-channel colour PNGs are already opened as 8-bit ``RGB`` by PIL.
"""
import io
import os
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, UnidentifiedImageError

__all__ = ["decode_rgb", "read_rgb", "to_rgb"]

PathLike = Union[str, os.PathLike]
_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N", "I")
_MAX_16 = 65535


def to_rgb(image: Image.Image, name: str = "image") -> Image.Image:
    """``image`` in mode RGB, 16-bit greyscale scaled to 8 bits (not clipped); ``OSError`` if it cannot be."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in _SIXTEEN_BIT:
        values = np.asarray(image).astype(np.int64)
        if values.size and (values.min() < 0 or values.max() > _MAX_16):
            raise OSError(f"{name}: {mode} image with values outside 0..{_MAX_16} ({values.min()}..{values.max()})")
        grey = np.rint(values / (_MAX_16 / 255.0)).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    if mode == "F":
        raise OSError(f"{name}: 32-bit floating-point image (mode F) has no defined 8-bit range; convert it first")
    return image.convert("RGB")


def decode_rgb(data: bytes, name: str = "image") -> Image.Image:
    """Decode encoded image bytes to an RGB image; ``OSError`` naming ``name`` if they are not a whole image."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()  # the pixels stay with the image once the buffer is closed
    except UnidentifiedImageError:
        raise OSError(f"{name}: cannot read the image (not an image format PIL knows, or {len(data)} bytes of "
                      "garbage)") from None
    except OSError as exc:
        raise OSError(f"{name}: cannot read the image ({exc})") from None
    except Exception as exc:  # noqa: BLE001 - PIL raises many kinds (SyntaxError, ValueError, DecompressionBomb)
        raise OSError(f"{name}: cannot read the image ({type(exc).__name__}: {exc})") from None
    rgb = to_rgb(image, name)
    if rgb.width == 0 or rgb.height == 0:
        raise OSError(f"{name}: empty image ({rgb.width}x{rgb.height})")
    return rgb


def read_rgb(path: PathLike) -> Image.Image:
    """Read and decode the image file ``path`` as RGB (8 bits per channel).

    Raises ``OSError`` naming the path for anything that makes it unusable: missing file, dangling
    link, permission denied, zero bytes, truncated or corrupt data, unsupported mode.
    """
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        if os.path.islink(path) and not os.path.exists(path):
            reason = f"dangling symbolic link to {os.readlink(path)}"
        raise OSError(f"{path}: cannot read the file ({reason})") from None
    return decode_rgb(data, str(path))
