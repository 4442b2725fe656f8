"""A DVT cascade as plain data: the one place its structure, shapes and wiring are defined.

A :class:`CascadeSpec` is a sequence of :class:`StageSpec` plus what all stages share (image size,
classes, drop path). Everything else is derived here, once:

- each stage's token grid (from its tokenizer), token count and relation channels (``depth * heads``);
- what a stage takes (``features_from`` / ``relations_from``: an earlier stage) and what it gives (its
  final tokens or attention logits, only if a later stage takes them);
- the named, shaped inputs and outputs of every stage (:meth:`CascadeSpec.stage_io`), which the model's
  ``construct``, the early-exit engine, MindIR export, FLOP counting and evaluation all read.

Specs are validated on construction; an error names the stage and the field at fault.
"""
from dataclasses import dataclass, field, fields, replace
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from ..layers.token_reorganization import resolve_keep_count
from .tokenizers import PatchTokenizer, T2TTokenizer, Tokenizer
from .validation import check_positive_int, check_rate

__all__ = ["StageSpec", "CascadeSpec", "TensorSpec", "StageIO", "stage_from_mapping", "STAGE_KEYS"]


@dataclass(frozen=True)
class TensorSpec:
    """A named stage input or output; ``None`` in ``shape`` is the batch dimension.

    ``source`` is ``(stage, output name)`` for an input that another stage gives, ``None`` for the images
    and for outputs.
    """

    name: str
    shape: Tuple[Optional[int], ...]
    source: Optional[Tuple[int, str]] = None
    dtype: str = "float32"


@dataclass(frozen=True)
class StageIO:
    """The inputs and outputs of one stage, in call order."""

    inputs: Tuple[TensorSpec, ...]
    outputs: Tuple[TensorSpec, ...]

    @property
    def input_names(self) -> Tuple[str, ...]:
        return tuple(t.name for t in self.inputs)

    @property
    def output_names(self) -> Tuple[str, ...]:
        return tuple(t.name for t in self.outputs)


@dataclass(frozen=True)
class StageSpec:
    """One stage: its tokenizer, backbone sizes, EViT keep rates and the earlier stages it reuses."""

    tokenizer: Tokenizer
    embed_dim: int = 384
    depth: int = 12
    num_heads: int = 6
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    qk_scale: Optional[float] = None
    norm_eps: float = 1e-6
    sinusoid_pos_embed: bool = False
    token_dim: int = 64
    keep_rate: Tuple[float, ...] = ()  # one per block; () keeps every token
    fuse_token: bool = False
    features_from: Optional[int] = None  # earlier stage whose final tokens this stage reuses
    relations_from: Optional[int] = None  # earlier stage whose attention logits this stage reuses
    reuse_feature_dim: int = 48
    reuse_hidden_dim: int = 128
    # numerics: the official PyTorch code's by default; the official MindSpore DVT's differ
    gelu: str = "erf"  # "erf" (exact) or "tanh" (MindSpore's nn.GELU default)
    feature_reuse_norm: bool = True  # False: the reuse MLP reads the tokens unnormalized
    detach_reused_tokens: bool = False  # True: no gradient flows into the reused tokens

    @property
    def keep_rates(self) -> Tuple[float, ...]:
        """Per-block keep rates, 1.0 where a block keeps every token."""
        return tuple(self.keep_rate) or (1.0,) * self.depth

    @property
    def prunes(self) -> bool:
        return any(rate < 1 for rate in self.keep_rates)

    @property
    def relation_channels(self) -> int:
        """Channels of the stacked attention logits: ``depth * num_heads`` (layer-major)."""
        return self.depth * self.num_heads


@dataclass(frozen=True)
class CascadeSpec:
    """A cascade of stages with one exit each, validated on construction."""

    stages: Tuple[StageSpec, ...]
    image_size: int = 224
    num_classes: int = 1000
    drop_path_rate: float = 0.0
    _gives: Tuple[Tuple[bool, bool], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "stages", tuple(self.stages))
        if not self.stages:
            raise ValueError("a cascade needs at least one stage")
        check_positive_int("image_size", self.image_size)
        if isinstance(self.num_classes, bool) or not isinstance(self.num_classes, int) or self.num_classes < 0:
            raise ValueError(f"num_classes must be a non-negative integer, got {self.num_classes!r}")
        for k, stage in enumerate(self.stages):
            self._check_stage(k, stage)
        gives = tuple((any(s.features_from == k for s in self.stages[k + 1:]),
                       any(s.relations_from == k for s in self.stages[k + 1:])) for k in range(len(self.stages)))
        object.__setattr__(self, "_gives", gives)
        for k, stage in enumerate(self.stages):
            if stage.prunes and any(gives[k]):
                users = [j for j, s in enumerate(self.stages) if k in (s.features_from, s.relations_from)]
                raise ValueError(f"stages[{k}].keep_rate: stage {k} prunes tokens, but stage(s) "
                                 f"{', '.join(map(str, users))} reuse its tokens or relations, which need its full "
                                 "token grid; prune only in stages that no later stage reuses")

    def _check_stage(self, k: int, stage: StageSpec) -> None:
        where = f"stages[{k}]"
        if not isinstance(stage.tokenizer, (PatchTokenizer, T2TTokenizer)):
            raise ValueError(f"{where}.tokenizer must be a PatchTokenizer or T2TTokenizer, got {stage.tokenizer!r}")
        try:
            stage.tokenizer.check(self.image_size)
        except ValueError as exc:
            name = "patch_size" if isinstance(stage.tokenizer, PatchTokenizer) else "unfolds"
            raise ValueError(f"{where}.{name}: {exc}") from None
        for key in ("embed_dim", "depth", "num_heads", "token_dim", "reuse_feature_dim", "reuse_hidden_dim"):
            check_positive_int(f"{where}.{key}", getattr(stage, key))
        if stage.gelu not in ("erf", "tanh"):
            raise ValueError(f"{where}.gelu must be 'erf' or 'tanh', got {stage.gelu!r}")
        if stage.embed_dim % stage.num_heads:
            raise ValueError(f"{where}.embed_dim ({stage.embed_dim}) must be divisible by num_heads "
                             f"({stage.num_heads})")
        check_rate(f"{where}.mlp_ratio", stage.mlp_ratio, 0.0, float("inf"), include_low=False)
        if stage.qk_scale is not None:
            check_rate(f"{where}.qk_scale", stage.qk_scale, 0.0, float("inf"), include_low=False)
        if stage.keep_rate and len(stage.keep_rate) != stage.depth:
            raise ValueError(f"{where}.keep_rate has {len(stage.keep_rate)} entries but depth is {stage.depth}")
        for i, rate in enumerate(stage.keep_rates):
            check_rate(f"{where}.keep_rate[{i}]", rate, 0.0, 1.0, include_low=False)
        for key in ("features_from", "relations_from"):
            source = getattr(stage, key)
            if source is None:
                continue
            if isinstance(source, bool) or not isinstance(source, int) or not 0 <= source < k:
                allowed = f"0..{k - 1}" if k else "none: stage 0 has no earlier stage"
                raise ValueError(f"{where}.{key}: {source!r} is not an earlier stage (allowed: {allowed})")

    # ---------------------------------------------------------------------------------------------- derived
    @property
    def num_exits(self) -> int:
        return len(self.stages)

    def grid_size(self, k: int) -> int:
        """Side of stage ``k``'s token grid."""
        return self.stages[k].tokenizer.grid_size(self.image_size)

    def num_tokens(self, k: int) -> int:
        """Tokens entering stage ``k``'s first block: the class token plus the grid."""
        return self.grid_size(k) ** 2 + 1

    def block_tokens(self, k: int, keep_rate: Optional[float] = None) -> List[int]:
        """Tokens after each block's reorganization (EViT), for FLOPs; ``keep_rate`` as given at call time."""
        stage = self.stages[k]
        tokens = self.num_tokens(k)
        counts = []
        for rate in stage.keep_rates:
            keep = resolve_keep_count(rate, keep_rate, tokens - 1)  # the rule each Block applies
            if keep > 0:
                tokens = 1 + keep + int(stage.fuse_token)
            counts.append(tokens)
        return counts

    def gives_tokens(self, k: int) -> bool:
        return self._gives[k][0]

    def gives_relations(self, k: int) -> bool:
        return self._gives[k][1]

    def stage_io(self, k: int, batch: Optional[int] = None) -> StageIO:
        """Named inputs and outputs of stage ``k`` with their shapes (``batch=None``: a dynamic batch)."""
        stage = self.stages[k]
        size = self.image_size
        inputs = [TensorSpec("images", (batch, 3, size, size))]
        if stage.features_from is not None:
            src = stage.features_from
            inputs.append(TensorSpec("tokens", (batch, self.num_tokens(src), self.stages[src].embed_dim),
                                     source=(src, "tokens")))
        if stage.relations_from is not None:
            src = stage.relations_from
            n = self.num_tokens(src)
            inputs.append(TensorSpec("relations", (batch, self.stages[src].relation_channels, n, n),
                                     source=(src, "relations")))
        outputs = [TensorSpec("logits", (batch, self.num_classes))]
        n = self.num_tokens(k)
        if self.gives_tokens(k):
            outputs.append(TensorSpec("tokens", (batch, n, stage.embed_dim)))
        if self.gives_relations(k):
            outputs.append(TensorSpec("relations", (batch, stage.relation_channels, n, n)))
        return StageIO(tuple(inputs), tuple(outputs))

    def exit_name(self, k: int) -> str:
        """``"7x7"``: the token grid of exit ``k``."""
        return f"{self.grid_size(k)}x{self.grid_size(k)}"

    def describe(self) -> List[str]:
        """One line per stage for logs."""
        lines = []
        for k, stage in enumerate(self.stages):
            takes = [f"{kind} of stage {src}" for kind, src in
                     (("tokens", stage.features_from), ("relations", stage.relations_from)) if src is not None]
            prune = f", keep {list(stage.keep_rates)}" if stage.prunes else ""
            lines.append(f"stage {k}: {self.exit_name(k)} ({stage.tokenizer.describe()}), {stage.embed_dim} wide, "
                         f"depth {stage.depth}, {stage.num_heads} heads{prune}"
                         + (f", reuses {' and '.join(takes)}" if takes else ""))
        return lines


# ---------------------------------------------------------------------------------------------------------
# stages from plain mappings (YAML, model_overrides)
# ---------------------------------------------------------------------------------------------------------
_TOKENIZER_KEYS = ("patch_size", "padding", "crop", "unfolds")
_STAGE_FIELDS = tuple(f.name for f in fields(StageSpec) if f.name != "tokenizer")
#: Keys a stage mapping may hold: tokenizer fields, every StageSpec field, and EViT's ``drop_loc``.
STAGE_KEYS = frozenset(_TOKENIZER_KEYS + _STAGE_FIELDS + ("drop_loc",))


def _tokenizer(entry: Mapping[str, Any], base: Optional[Tokenizer], where: str) -> Tokenizer:
    if "unfolds" in entry:
        if "patch_size" in entry or "padding" in entry or "crop" in entry:
            raise ValueError(f"{where}: give either unfolds (T2T) or patch_size/padding/crop, not both")
        try:
            return T2TTokenizer(tuple(tuple(u) for u in entry["unfolds"]))
        except TypeError:
            raise ValueError(f"{where}.unfolds must be a list of [kernel, stride, padding], "
                             f"got {entry['unfolds']!r}") from None
    if "patch_size" in entry or "padding" in entry or "crop" in entry:
        if "patch_size" not in entry and not isinstance(base, PatchTokenizer):
            raise ValueError(f"{where}: padding and crop need a patch_size")
        patch = entry.get("patch_size", getattr(base, "patch_size", None))
        return PatchTokenizer(patch, entry.get("padding", 0), bool(entry.get("crop", False)))
    if base is None:
        raise ValueError(f"{where}: give its tokenizer: patch_size (and padding) or unfolds")
    return base


def stage_from_mapping(entry: Mapping[str, Any], base: StageSpec, index: int,
                       expand_keep_rate) -> StageSpec:
    """A :class:`StageSpec` from a user mapping: unset fields come from ``base`` (the model's defaults).

    ``expand_keep_rate(rate, depth, drop_loc)`` turns EViT's float-at-``drop_loc`` form into per-block rates.
    """
    where = f"stages[{index}]"
    if not isinstance(entry, Mapping):
        raise ValueError(f"{where} must be a mapping of stage fields, got {entry!r}")
    unknown = sorted(set(entry) - STAGE_KEYS)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(map(repr, unknown))}; "
                         f"accepted: {', '.join(sorted(STAGE_KEYS))}")
    tokenizer = _tokenizer(entry, base.tokenizer, where)
    values: Dict[str, Any] = {k: entry[k] for k in _STAGE_FIELDS if k in entry}
    depth = values.get("depth", base.depth)
    if "keep_rate" in entry:
        try:
            values["keep_rate"] = expand_keep_rate(entry["keep_rate"], depth, entry.get("drop_loc", (3, 6, 9)))
        except ValueError as exc:
            raise ValueError(f"{where}.{exc}") from None
    elif "drop_loc" in entry:
        raise ValueError(f"{where}.drop_loc needs a keep_rate")
    elif "depth" in entry:
        values["keep_rate"] = ()
    if "fuse_token" not in entry and values.get("keep_rate"):
        values["fuse_token"] = True  # EViT's default
    return replace(base, tokenizer=tokenizer, **values)


def previous_stage_edges(n: int, feature_reuse: bool, relation_reuse: bool) -> Sequence[Tuple[Optional[int], Optional[int]]]:
    """``(features_from, relations_from)`` of the official wiring: every stage reuses the one before it."""
    return [((k - 1) if k and feature_reuse else None, (k - 1) if k and relation_reuse else None) for k in range(n)]
