"""Class names for inference output, read from a text or JSON file."""
import json
import os
from pathlib import Path
from typing import List, Union

__all__ = ["read_class_names"]


def read_class_names(path: Union[str, os.PathLike], num_classes: int) -> List[str]:
    """Class names: a text file with one name per line, or JSON (a list, or ``{"0": name}`` /
    ``{"0": [wnid, name]}`` as in ImageNet's class index)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: cannot read class names ({exc})") from None
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ValueError(f"{path}: not valid JSON ({exc})") from None
        if isinstance(data, dict):
            try:
                items = sorted((int(k), v) for k, v in data.items())
            except ValueError:
                raise ValueError(f"{path}: JSON keys must be class indices") from None
            if [k for k, _ in items] != list(range(len(items))):
                raise ValueError(f"{path}: JSON keys must be the class indices 0..{len(items) - 1}")
            data = [v[-1] if isinstance(v, list) and v else v for _, v in items]
        if not isinstance(data, list):
            raise ValueError(f"{path}: expected a JSON list or object of class names")
        names = [str(v) for v in data]
    else:
        names = [line.strip() for line in text.splitlines()]
        while names and not names[-1]:
            names.pop()
    if len(names) != num_classes:
        raise ValueError(f"{path}: {len(names)} class names, but the model has {num_classes} classes")
    return names
