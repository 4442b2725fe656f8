"""Data: checked ImageFolder splits read with MindData, training augmentation and the quickstart set."""
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
from .synthetic import SHAPES, ShapesDataset, load_manifest, make_shapes_dataset
from .train_transforms import (
    DEFAULT_AUTO_AUGMENT,
    BatchRandomErasing,
    RandAugmentConfig,
    SkippedImages,
    TrainDataset,
    batch_mix_op,
    create_train_dataset,
    parse_rand_augment,
    train_transforms,
)

__all__ = [
    "IMAGE_EXTENSIONS", "IMAGENET_MEAN", "IMAGENET_STD", "DatasetError", "EvalDataset", "ImageFolderInfo",
    "check_image_folder", "create_eval_dataset", "decode_image", "denormalize", "eval_transforms",
    "load_image", "resize_size",
    "SHAPES", "ShapesDataset", "load_manifest", "make_shapes_dataset",
    "DEFAULT_AUTO_AUGMENT", "BatchRandomErasing", "RandAugmentConfig", "SkippedImages", "TrainDataset",
    "batch_mix_op", "create_train_dataset", "parse_rand_augment", "train_transforms",
]
