"""The sections every script shares (``COMMON``, ``EVAL``, ``TRAIN``), their validators and cross-key checks."""
import logging
import math
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

from ..checkpoint.key_mapping import WEIGHT_CHOICES
from ..data.train_transforms import parse_rand_augment
from ..models import list_models, model_overrides, model_spec
from ..precision import PRECISIONS, resolve_training_precision
from .schema import ConfigError, Option, Schema
from .sources import DEFAULT, rank, suggest, where

logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------------
# validators
# --------------------------------------------------------------------------------------------------
def positive(value: Any) -> None:
    """Validator: strictly positive."""
    if value <= 0:
        raise ValueError(f"must be > 0, got {value!r}")


def non_negative(value: Any) -> None:
    """Validator: zero or more."""
    if value < 0:
        raise ValueError(f"must be >= 0, got {value!r}")


def non_empty(value: Any) -> None:
    """Validator: a non-empty string."""
    if value is not None and not str(value).strip():
        raise ValueError("must not be empty")


def _crop_pct(value: float) -> None:
    if not 0 < value <= 1:
        raise ValueError(f"must be in (0, 1], got {value!r}")


def _registered_model(name: str) -> None:
    if name not in list_models():
        raise ValueError(f"unknown model {name!r}{suggest(name, list_models())}; "
                         f"available: {', '.join(list_models())}")


def plot_suffix(path: Optional[str]) -> None:
    """Validator: a plot file name ending in .png, .pdf or .svg."""
    if path is not None and Path(path).suffix.lower() not in (".png", ".pdf", ".svg"):
        raise ValueError(f"{path!r}: the plot must end in .png, .pdf or .svg")


def _npz_suffix(path: Optional[str]) -> None:
    if path is not None and Path(path).suffix.lower() != ".npz":
        raise ValueError(f"{path!r}: the predictions file must end in .npz")


def _check_model_overrides(values: Dict[str, Any], sources: Dict[str, str]) -> None:
    """``model_overrides`` keys must be accepted by ``model`` (checked against a checkpoint's model later
    when no model is named)."""
    if values["model"] is None:
        return
    accepted = model_overrides(values["model"])
    unknown = sorted(set(values["model_overrides"]) - accepted)
    if unknown:
        hints = ", ".join(f"{k!r}{suggest(k, sorted(accepted))}" for k in unknown)
        raise ConfigError(f"{where('model_overrides', sources)}: unknown key(s) {hints} for model "
                          f"{values['model']!r}; accepted: {', '.join(sorted(accepted))}")
    try:  # the whole architecture (a user-defined cascade included) is checked before any work starts
        model_spec(values["model"], **values["model_overrides"])
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where('model_overrides', sources)}: {exc}") from None


def _reconcile_num_classes(values: Dict[str, Any], sources: Dict[str, str]) -> None:
    """``num_classes`` and ``model_overrides.num_classes`` are one value: the higher-precedence source
    wins and both keys get the result (``values`` is updated in place)."""
    top, overrides = values["num_classes"], values["model_overrides"]
    nested = overrides.get("num_classes")
    if top is None and nested is None:
        return
    if nested is not None and (isinstance(nested, bool) or not isinstance(nested, int) or nested < 1):
        raise ConfigError(f"{where('model_overrides.num_classes', sources)}: must be a positive integer, "
                          f"got {nested!r}")
    if top is not None and nested is not None and top != nested:
        top_rank = rank(sources.get("num_classes", DEFAULT))
        nested_rank = rank(sources.get("model_overrides.num_classes", sources.get("model_overrides", DEFAULT)))
        if top_rank == nested_rank:
            raise ConfigError(f"{where('num_classes', sources)} is {top} but "
                              f"{where('model_overrides.num_classes', sources)} is {nested}; give the number of "
                              "classes once")
        loser, winner = ("model_overrides.num_classes", "num_classes") if top_rank > nested_rank else \
            ("num_classes", "model_overrides.num_classes")
        logger.info("%s replaces %s", where(winner, sources), where(loser, sources))
        if top_rank < nested_rank:
            top = nested
    value = nested if top is None else top
    if value != nested:
        sources["model_overrides.num_classes"] = sources.get("num_classes", DEFAULT)
    elif value != values["num_classes"]:
        sources["num_classes"] = sources.get("model_overrides.num_classes", sources.get("model_overrides", DEFAULT))
    values["num_classes"] = value
    values["model_overrides"] = {**overrides, "num_classes": value}


def _rgb(value: Optional[list]) -> None:
    if value is None:
        return
    numbers = _numbers(value, "mean/std values")
    if len(numbers) != 3:
        raise ValueError(f"must be three numbers (R, G, B) in [0, 1] units, got {value!r}")


def require_model(values: Dict[str, Any], sources: Dict[str, str]) -> None:
    """Cross-key check of the scripts that build a model from scratch: ``model`` must be given."""
    if values["model"] is None:
        raise ConfigError("missing required key 'model': set it in the config file or pass --model NAME "
                          "(dvt_ms.list_models())")


#: The checkpoint a script reads (eval, infer, export, visualize); one option shared by their sections.
CHECKPOINT = Option("checkpoint", str, nullable=True, validator=non_empty,
                    help="official .pth/.pth.tar, .safetensors or .ckpt, or a .ckpt written by this project (which "
                         "names its model, architecture and data config): final_weights.ckpt, or a training "
                         "checkpoint such as best.ckpt or epoch_XXXX.ckpt (see weights)")
#: Which weights of that checkpoint (or of ``pretrained``, or the converter's ``src``) are loaded; one option
#: shared by every section that reads weights.
WEIGHTS = Option("weights", str, default="model", choices=WEIGHT_CHOICES,
                 help="which weights of the checkpoint to load: model (the trained weights) or model_ema (their "
                      "exponential moving average: an official training file's model_ema, the ema.* entries of a "
                      "dvt_ms training checkpoint such as best.ckpt or epoch_*.ckpt); optimizer state is skipped")
#: The results file of eval (.json), infer (.csv/.json) and visualize (.png).
OUTPUT = Option("output", str, nullable=True, validator=non_empty,
                help="results file: eval.py .json, infer.py .csv or .json, visualize.py .png")


# --------------------------------------------------------------------------------------------------
# the sections
# --------------------------------------------------------------------------------------------------
#: Model, data and runtime keys, shared by every script.
COMMON = Schema("model, data and runtime", [
    Option("model", str, nullable=True, validator=_registered_model,
           help="registered model name (dvt_ms.list_models()); default: the one a .ckpt names"),
    Option("model_overrides", dict, default={},
           help="architecture overrides passed to create_model, e.g. {num_classes: 100, image_size: 224}"),
    Option("num_classes", int, nullable=True, validator=positive,
           help="number of classes: the same value as model_overrides.num_classes (the higher-precedence one "
                "wins); default: the checkpoint's, else the model's 1000; must match the class folders"),
    Option("data_dir", str, nullable=True, validator=non_empty,
           help="ImageFolder root holding the split folders (DATA_DIR/val/<class>/<image>)"),
    Option("train_split", str, default="train", validator=non_empty, help="training split folder name"),
    Option("val_split", str, default="val", validator=non_empty, help="validation split folder name"),
    Option("batch_size", int, default=64, validator=positive, help="images per batch"),
    Option("num_parallel_workers", int, default=2, validator=positive, help="data pipeline workers"),
    Option("crop_pct", float, nullable=True, validator=_crop_pct,
           help="evaluation: resize the shorter side to int(image_size / crop_pct), then center-crop image_size; "
                "null: the checkpoint's data config, else the model's (0.875)"),
    Option("interpolation", str, nullable=True, choices=("bicubic", "bilinear"),
           help="resize interpolation; null: the checkpoint's data config, else the model's (bicubic)"),
    Option("mean", list, nullable=True, validator=_rgb,
           help="normalization mean (R, G, B, in [0, 1] units); null: the checkpoint's, else the model's (ImageNet)"),
    Option("std", list, nullable=True, validator=_rgb,
           help="normalization std (R, G, B); null: the checkpoint's, else the model's (ImageNet)"),
    Option("device_target", str, default="CPU", choices=("auto", "CPU", "GPU", "Ascend"),
           help="device; an absent GPU/Ascend is an error before any work; auto takes Ascend, then GPU, then CPU"),
    Option("ms_mode", str, default="graph", choices=("graph", "pynative"), help="MindSpore execution mode"),
    Option("cpu_kernels", str, default="auto", choices=("auto", "on", "off"),
           help="fused C++ kernels on CPU (dvt_ms.kernels): auto uses them if a C++ compiler is found"),
    Option("precision", str, default="fp32", choices=PRECISIONS,
           help="precision of eval/infer/export/benchmark: bf16 on CPU runs the matrix products in bfloat16 with "
                "float32 accumulation (AVX512-BF16 or AMX; cpu_kernels auto falls back to fp32 without them); "
                "with MindSpore's ops (GPU/Ascend, CPU with cpu_kernels off) fp16/bf16 run the dense and matrix "
                "products in that dtype, the rest float32 (amp O1's meaning); fp16 on CPU needs cpu_kernels off "
                "(MindSpore's float16 ops: checks the GPU/Ascend graph, slow); bf16 is refused on GPU; in "
                "training, the precision of the amp levels (see amp_level)"),
    Option("seed", int, default=0, validator=non_negative, help="random seed (e.g. the fit subset)"),
    Option("verbose", bool, default=False, help="debug logging"),
], checks=[_check_model_overrides, _reconcile_num_classes])

#: Evaluation keys (scripts/eval.py).
EVAL = Schema("evaluation", [
    CHECKPOINT, WEIGHTS,
    Option("mode", str, default="anytime", choices=("anytime", "saved", "saved-thresholds", "fit"),
           help="anytime: per-exit accuracy; saved: print the results stored in the checkpoint; "
                "saved-thresholds: the stored dynamic_threshold on val; fit: thresholds fitted on a "
                "train subset"),
    Option("fit_samples", int, default=50000, validator=positive,
           help="train images used to fit the thresholds (mode fit), drawn with --seed"),
    Option("budget_steps", int, default=59, validator=positive,
           help="budget steps p = 1..N of mode fit: 59 as the official PyTorch DVT, 39 as the official MindSpore DVT"),
    OUTPUT,
    Option("plot", str, nullable=True, validator=plot_suffix,
           help="draw accuracy vs GMACs to this .png/.pdf/.svg (needs matplotlib)"),
    Option("predictions", str, nullable=True, validator=_npz_suffix,
           help="write the val images' softmax outputs of every exit (probs [exits, images, classes]) and "
                "their targets to this .npz, in ImageFolder order without skipped files"),
])

# --------------------------------------------------------------------------------------------------
# training: validators and cross-key checks
# --------------------------------------------------------------------------------------------------
def _unit_interval(value: float) -> None:
    if not 0 <= value <= 1:
        raise ValueError(f"must be in [0, 1], got {value!r}")


def _below_one(value: float) -> None:
    if not 0 <= value < 1:
        raise ValueError(f"must be in [0, 1), got {value!r}")


def _numbers(value: Any, what: str) -> List[float]:
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value):
        raise ValueError(f"{what} must be finite numbers, got {value!r}")
    return [float(v) for v in value]


def _crop_scale(value: list) -> None:
    bounds = _numbers(value, "the crop scale bounds")
    if len(bounds) != 2 or not 0 < bounds[0] <= bounds[1] <= 1:
        raise ValueError(f"must be [min, max] with 0 < min <= max <= 1 (fractions of the image area), "
                         f"got {value!r}")


def _betas(value: list) -> None:
    if len(value) != 2 or not all(0 <= b < 1 for b in _numbers(value, "betas")):
        raise ValueError(f"must be [beta1, beta2], each in [0, 1), got {value!r}")


def _exit_weights(value: Optional[list]) -> None:
    if value is None:
        return
    weights = _numbers(value, "exit weights")
    if not weights or any(w < 0 for w in weights) or not any(weights):
        raise ValueError(f"must be a non-empty list of non-negative numbers, not all 0, got {value!r}")


def _auto_augment(value: Optional[str]) -> None:
    if value is None or value == "":
        return
    parse_rand_augment(value)


def _resume(value: Optional[str]) -> None:
    if value is None or value == "auto":
        return
    non_empty(value)
    if not Path(value).is_file():
        raise ValueError(f"{value}: no such checkpoint file (pass a file written by the training script, or "
                         "'auto' for the newest complete one in output_dir)")


def _existing_file(value: Optional[str]) -> None:
    if value is None:
        return
    non_empty(value)
    if not Path(value).is_file():
        raise ValueError(f"{value}: no such file")


def model_num_exits(model: str, overrides: Optional[Mapping[str, Any]] = None) -> int:
    """Exits of a registered model with ``overrides``, read off its cascade spec without building it."""
    return model_spec(model, **dict(overrides or {})).num_exits


def _check_training(values: Dict[str, Any], sources: Dict[str, str]) -> None:
    """Cross-key checks of the training section."""
    overrides = values["model_overrides"]

    try:  # again at setup, on the device the run really gets (auto: only there)
        if values["device_target"] != "auto":
            resolve_training_precision(values["precision"], values["amp_level"], values["device_target"],
                                       values["cpu_kernels"])
    except ValueError as exc:
        raise ConfigError(f"{where('amp_level', sources)}, {where('precision', sources)}: {exc}") from None
    if "drop_path_rate" in overrides:
        raise ConfigError(f"{where('model_overrides', sources)}: set the training drop path rate with the "
                          "drop_path key, not model_overrides.drop_path_rate")
    if values["warmup_epochs"] > values["epochs"]:
        raise ConfigError(f"{where('warmup_epochs', sources)} ({values['warmup_epochs']}) must not exceed "
                          f"{where('epochs', sources)} ({values['epochs']})")
    if values["min_lr"] > values["lr"]:
        raise ConfigError(f"{where('min_lr', sources)} ({values['min_lr']}) must not exceed "
                          f"{where('lr', sources)} ({values['lr']})")
    weights = values["exit_weights"]
    if weights is not None:
        exits = model_num_exits(values["model"], overrides)
        if len(weights) != exits:
            raise ConfigError(f"{where('exit_weights', sources)}: {len(weights)} weight(s) given but "
                              f"{values['model']} has {exits} exit(s)")
    if values["loss_scale"] == "static" and values["loss_scale_value"] < 1:
        raise ConfigError(f"{where('loss_scale_value', sources)} must be >= 1 for a static loss scale, got "
                          f"{values['loss_scale_value']}")


#: Training keys. Declared here (not in the training script) so that every script accepts a config
#: file holding them; the training script resolves ``COMMON + TRAIN`` (plus ``EVAL`` if it evaluates).
#: Defaults are the official DeiT/DVT recipe (300 epochs, AdamW 5e-4 at a global batch of 512).
TRAIN = Schema("training", [
    # run
    Option("output_dir", str, default="outputs/train", validator=non_empty,
           help="checkpoints, metrics.jsonl and the resolved config go here"),
    Option("resume", str, nullable=True, validator=_resume,
           help="'auto' (newest complete checkpoint in output_dir, or a fresh start) or a checkpoint file"),
    Option("pretrained", str, nullable=True, validator=_existing_file,
           help="initial weights: official .pth/.pth.tar, .safetensors or a .ckpt (a training checkpoint too: "
                "see weights); classifier heads whose number of classes differs are re-initialized (with a "
                "warning)"),
    WEIGHTS,
    Option("epochs", int, default=300, validator=positive, help="epochs of the cosine schedule"),
    Option("cooldown_epochs", int, default=10, validator=non_negative,
           help="extra epochs at min_lr after the cosine (total run: epochs + cooldown_epochs)"),
    Option("steps_per_epoch", int, nullable=True, validator=positive,
           help="cap on the optimizer steps per epoch (quick runs, benchmarks); default: the whole shard"),
    Option("keep_checkpoints", int, default=3, validator=positive,
           help="epoch checkpoints kept (the newest ones); best.ckpt is kept as well"),
    Option("save_interval_steps", int, default=0, validator=non_negative,
           help="also write a step checkpoint every N steps inside an epoch (0: only at epoch ends and "
                "when stopped by SIGTERM/SIGINT); resume continues from the newest"),
    Option("log_interval", int, default=50, validator=positive, help="progress line every N steps"),
    Option("distributed", bool, nullable=True,
           help="data parallel over msrun / rank-table workers; null: on when launched by msrun or with "
                "RANK_TABLE_FILE"),
    # optimizer and schedule
    Option("opt", str, default="adamw", choices=("adamw", "adamweightdecay", "sgd"),
           help="adamw: PyTorch AdamW semantics (bias-corrected); adamweightdecay: MindSpore's; sgd: momentum"),
    Option("lr", float, default=5e-4, validator=positive, help="peak learning rate at lr_batch_size"),
    Option("lr_batch_size", int, default=512, validator=positive,
           help="global batch size that lr is given for"),
    Option("lr_scaling", str, default="linear", choices=("linear", "none"),
           help="linear: lr * global_batch / lr_batch_size (global_batch = batch_size x workers); none: lr"),
    Option("weight_decay", float, default=0.05, validator=non_negative, help="decoupled weight decay"),
    Option("no_decay_norm_bias", bool, default=True,
           help="no weight decay for norms, biases, pos_embed and cls_token"),
    Option("opt_betas", list, default=[0.9, 0.999], validator=_betas, help="Adam betas"),
    Option("opt_eps", float, default=1e-8, validator=positive, help="Adam epsilon"),
    Option("momentum", float, default=0.9, validator=_unit_interval, help="sgd momentum"),
    Option("warmup_epochs", int, default=20, validator=non_negative, help="linear warmup epochs"),
    Option("warmup_lr", float, default=1e-6, validator=non_negative, help="learning rate at step 0"),
    Option("min_lr", float, default=1e-5, validator=non_negative, help="end of the cosine and cooldown rate"),
    Option("lr_per_step", bool, default=True,
           help="update the rate every iteration (false: once per epoch, like the official scripts)"),
    Option("clip_grad", float, nullable=True, validator=positive, help="max global gradient norm (null: off)"),
    # model, loss, EMA
    Option("weight_init", str, default="official", choices=("official", "fan_in"),
           help="official: the model's own init (dense weights truncated normal, std 0.02, as DeiT); fan_in: "
                "std 1/sqrt(fan_in), much faster to train for narrow models such as the quickstart's"),
    Option("drop_path", float, default=0.1, validator=_below_one, help="stochastic depth rate"),
    Option("exit_weights", list, nullable=True, validator=_exit_weights,
           help="DVT loss weight of each exit (null: 1 each, the official sum)"),
    Option("model_ema", bool, default=True, help="keep an exponential moving average of the weights"),
    Option("model_ema_decay", float, default=0.99996, validator=_below_one, help="EMA decay per step"),
    Option("model_ema_eval", bool, default=True, help="also validate the EMA weights each epoch"),
    Option("keep_rate_schedule", bool, default=True,
           help="EViT: keep rate 1 until shrink_start_epoch, then cosine down to the model's keep_rate"),
    Option("shrink_start_epoch", int, default=10, validator=non_negative, help="EViT: epochs at keep rate 1"),
    Option("shrink_epochs", int, default=100, validator=non_negative,
           help="EViT: epochs of the cosine from 1 down to the target keep rate"),
    Option("keep_rate_token_step", int, default=1, validator=positive,
           help="EViT: kept-token counts are rounded up to steps of this size (fewer graphs to compile)"),
    # data augmentation
    Option("crop_scale", list, default=[0.08, 1.0], validator=_crop_scale,
           help="RandomResizedCrop area range ([1, 1]: the whole image)"),
    Option("hflip", float, default=0.5, validator=_unit_interval, help="horizontal flip probability"),
    Option("auto_augment", str, nullable=True, default="rand-m9-mstd0.5-inc1", validator=_auto_augment,
           help="timm-style RandAugment policy (null: off)"),
    Option("reprob", float, default=0.25, validator=_unit_interval, help="random erasing probability"),
    Option("mixup", float, default=0.8, validator=non_negative, help="mixup alpha (0: off)"),
    Option("cutmix", float, default=1.0, validator=non_negative, help="cutmix alpha (0: off)"),
    Option("mixup_prob", float, default=1.0, validator=_unit_interval,
           help="probability of mixing a batch at all"),
    Option("mixup_switch_prob", float, default=0.5, validator=_unit_interval,
           help="probability of cutmix instead of mixup when both are on"),
    Option("label_smoothing", float, default=0.1, validator=_below_one, help="label smoothing"),
    # precision
    Option("amp_level", str, default="auto", choices=("auto", "O0", "O1", "O2", "O3"),
           help="mixed-precision training (dvt_ms.precision): on CPU with the fused kernels, O1/O2 (or auto) "
                "with precision bf16 run the products in bfloat16 and auto with fp32 is O0; with MindSpore's ops "
                "(GPU/Ascend; CPU with cpu_kernels off and precision fp16) the mindcv levels in float16 (bf16: "
                "bfloat16, Ascend only): O1 products, O2 all but LayerNorm, O3 everything; auto is O2; master "
                "weights stay float32"),
    Option("loss_scale", str, default="auto", choices=("auto", "dynamic", "static", "none"),
           help="auto: dynamic for float16, none for float32 and bfloat16; static uses loss_scale_value"),
    Option("loss_scale_value", float, default=65536.0, validator=positive, help="static loss scale"),
], checks=[require_model, _check_training])

#: Sections whose keys a config file may hold.
FILE_SECTIONS: Tuple[Schema, ...] = (COMMON, EVAL, TRAIN)
