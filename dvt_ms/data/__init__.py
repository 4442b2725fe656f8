"""Data: each model's data config and evaluation transform, checked ImageFolder splits read with MindData,
training augmentation and the quickstart set."""
from .data_config import (
    DataConfig,
    default_data_config,
    load_image,
    preprocess,
    preprocessing_manifest,
    resolve_data_config,
)
from .decode import read_rgb
from .dataset import (
    IMAGE_EXTENSIONS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    DatasetError,
    EvalDataset,
    ImageFolderInfo,
    check_image_folder,
    create_eval_dataset,
    denormalize,
    eval_transforms,
    resize_size,
)
from .synthetic import SHAPES, ShapesDataset, load_manifest, make_shapes_dataset
from .train_dataset import SkippedImages, TrainDataset
from .train_transforms import (
    DEFAULT_AUTO_AUGMENT,
    BatchRandomErasing,
    RandAugmentConfig,
    batch_mix_op,
    create_train_dataset,
    parse_rand_augment,
    train_transforms,
)

__all__ = [
    "DataConfig", "default_data_config", "load_image", "preprocess", "preprocessing_manifest",
    "resolve_data_config", "read_rgb",
    "IMAGE_EXTENSIONS", "IMAGENET_MEAN", "IMAGENET_STD", "DatasetError", "EvalDataset", "ImageFolderInfo",
    "check_image_folder", "create_eval_dataset", "denormalize", "eval_transforms", "resize_size",
    "SHAPES", "ShapesDataset", "load_manifest", "make_shapes_dataset",
    "DEFAULT_AUTO_AUGMENT", "BatchRandomErasing", "RandAugmentConfig", "SkippedImages", "TrainDataset",
    "batch_mix_op", "create_train_dataset", "parse_rand_augment", "train_transforms",
]
