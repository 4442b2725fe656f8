"""Evaluation data: checked ImageFolder splits read with MindData."""
from .dataset import (
    IMAGE_EXTENSIONS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    DatasetError,
    EvalDataset,
    ImageFolderInfo,
    check_image_folder,
    create_eval_dataset,
    decode_image,
    denormalize,
    eval_transforms,
    load_image,
    resize_size,
)

__all__ = [
    "IMAGE_EXTENSIONS", "IMAGENET_MEAN", "IMAGENET_STD", "DatasetError", "EvalDataset", "ImageFolderInfo",
    "check_image_folder", "create_eval_dataset", "decode_image", "denormalize", "eval_transforms",
    "load_image", "resize_size",
]
