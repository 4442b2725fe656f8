"""Independent numpy reference of the official MindSpore DVT (two exits), for tests only.

It computes both exits' logits from a state dict under the OFFICIAL MindSpore key names
(``less_token.*``, ``normal_token.*``), in float64, with the official arithmetic: GELU with the tanh
approximation, LayerNorm epsilon 1e-7, the scale applied after ``q @ k^T``, the feature-reuse MLP fed
the un-normalized tokens, and nearest 2x resizing of the reused features and relations. Nothing here
imports the package's model code. It also draws random official-layout state dicts
(:func:`random_official_params`) and writes them as official ``.ckpt`` files
(:func:`write_official_ckpt`), optionally with the optimizer state an official training checkpoint holds.
"""
from typing import Dict, List, Mapping, Sequence

import numpy as np

EXITS = ("less_token", "normal_token")
FEATURE_HIDDEN = 128  # official DvtFeatureReuseFeedForward default
FEATURE_DIM = 48  # official ViT dvt_feature_reuse_ff_output_dim default
RELATION_EXPANSION = 3


def _gelu_tanh(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x ** 3)))


def _layer_norm(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * gamma + beta


def _dense(x: np.ndarray, params: Mapping[str, np.ndarray], name: str) -> np.ndarray:
    return x @ params[name + ".weight"].T + params[name + ".bias"]


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _nearest_index(src: int, dst: int) -> np.ndarray:
    """Source index of each destination index of nearest resizing (half-pixel-free, floor)."""
    return np.arange(dst) * src // dst


def _grid_tokens_index(src: int, dst: int) -> np.ndarray:
    """For each of the ``dst*dst`` row-major grid positions, its source among ``src*src``."""
    idx = _nearest_index(src, dst)
    return (idx[:, None] * src + idx[None, :]).reshape(-1)


def _patchify(images: np.ndarray, p: int) -> np.ndarray:
    b, c, h, w = images.shape
    x = images.reshape(b, c, h // p, p, w // p, p).transpose(0, 2, 4, 1, 3, 5)
    return x.reshape(b, (h // p) * (w // p), c * p * p)  # (channel, row, column) per patch


def _exit(params: Mapping[str, np.ndarray], prefix: str, images: np.ndarray, *, depth: int, heads: int,
          dim_head: int, patch_size: int, eps: float, reused_tokens=None, reused_relations=None):
    """One official ``ViT``: returns (logits, final tokens before the norm, stacked relations)."""
    P = {k[len(prefix) + 1:]: v.astype(np.float64) for k, v in params.items() if k.startswith(prefix + ".")}
    x = _dense(_patchify(images, patch_size), P, "stem.patch_to_embedding.dense")
    b, n, c = x.shape
    cls = np.broadcast_to(P["cls_token"], (b, 1, c))
    x = np.concatenate([cls, x], axis=1) + P["pos_embedding"][:, : n + 1]
    grid = int(round(np.sqrt(n)))

    layer_bias = None
    if reused_relations is not None:
        r = reused_relations  # [B, depth*heads, 1+s*s, 1+s*s], layer-major channels
        rb, rc, rn, _ = r.shape
        w1 = P["relation_reuse_conv.0.weight"][:, :, 0, 0]
        w2 = P["relation_reuse_conv.2.weight"][:, :, 0, 0]
        h1 = np.einsum("oc,bcij->boij", w1, r) + P["relation_reuse_conv.0.bias"][None, :, None, None]
        r = np.einsum("oc,bcij->boij", w2, _gelu_tanh(h1)) + P["relation_reuse_conv.2.bias"][None, :, None, None]
        src = int(round(np.sqrt(rn - 1)))
        index = np.concatenate([[0], 1 + _grid_tokens_index(src, grid)])
        r = r[:, :, index][:, :, :, index]  # class-token row/column kept, image rows/columns nearest
        layer_bias = np.split(r, depth, axis=1)

    feature = reused_tokens  # [B, 1+s*s, C_prev], the previous exit's tokens before its final norm

    relations = []
    for i in range(depth):
        L = f"layers.{i}."
        h = _layer_norm(x, P[L + "norm1.gamma"], P[L + "norm1.beta"], eps)
        q = _dense(h, P, L + "attn.to_q").reshape(b, n + 1, heads, dim_head).transpose(0, 2, 1, 3)
        k = _dense(h, P, L + "attn.to_k").reshape(b, n + 1, heads, dim_head).transpose(0, 2, 1, 3)
        v = _dense(h, P, L + "attn.to_v").reshape(b, n + 1, heads, dim_head).transpose(0, 2, 1, 3)
        logits = (q @ k.transpose(0, 1, 3, 2)) * dim_head ** -0.5
        if layer_bias is not None:
            logits = logits + layer_bias[i]
        relations.append(logits)
        out = (_softmax(logits) @ v).transpose(0, 2, 1, 3).reshape(b, n + 1, heads * dim_head)
        x = x + _dense(out, P, L + "attn.to_out")
        mlp_in = x
        if feature is not None:
            # the official block computes norm1 of the reused tokens but feeds ff1 the raw tokens
            f = _dense(_gelu_tanh(_dense(feature, P, L + "feature_resuse_mlp.ff1.dense")),
                       P, L + "feature_resuse_mlp.ff2.dense")[:, 1:]
            src = int(round(np.sqrt(f.shape[1])))
            f = f[:, _grid_tokens_index(src, grid)]
            f = np.concatenate([np.zeros((b, 1, f.shape[2])), f], axis=1)  # zero class-token slot
            mlp_in = np.concatenate([x, f], axis=2)
        hid = _gelu_tanh(_dense(_layer_norm(mlp_in, P[L + "norm2.gamma"], P[L + "norm2.beta"], eps),
                                P, L + "mlp.ff1.dense"))
        x = x + _dense(hid, P, L + "mlp.ff2.dense")
    logits = _dense(_layer_norm(x, P["norm.gamma"], P["norm.beta"], eps)[:, 0], P, "head.0")
    return logits, x, np.concatenate(relations, axis=1)


def official_forward(params: Dict[str, np.ndarray], images: np.ndarray, *, depth: int, heads: int,
                     dim_head: int, patch_sizes: Sequence[int] = (32, 16), feature_reuse: bool,
                     relation_reuse: bool, eps: float = 1e-7) -> List[np.ndarray]:
    """Both exits' logits (float64 ``[B, classes]``) of the official ``Vit_Dvt`` in eval mode."""
    images = np.asarray(images, dtype=np.float64)
    kw = dict(depth=depth, heads=heads, dim_head=dim_head, eps=eps)
    logits0, tokens, relations = _exit(params, EXITS[0], images, patch_size=patch_sizes[0], **kw)
    logits1, _, _ = _exit(params, EXITS[1], images, patch_size=patch_sizes[1],
                          reused_tokens=tokens if feature_reuse else None,
                          reused_relations=relations if relation_reuse else None, **kw)
    return [logits0, logits1]


def official_shapes(config: Mapping) -> Dict[str, tuple]:
    """Every official key with its shape, in the official ``parameters_and_names`` order.

    ``config`` keys: ``embed_dim``, ``depth``, ``num_heads``, ``dim_head`` (default embed/heads),
    ``mlp_dim``, ``num_classes``, ``image_size`` (224), ``patch_sizes`` ((32, 16)), ``feature_reuse``,
    ``relation_reuse``.
    """
    c, depth, heads = config["embed_dim"], config["depth"], config["num_heads"]
    inner = heads * config.get("dim_head", c // heads)
    mlp, classes = config["mlp_dim"], config["num_classes"]
    size = config.get("image_size", 224)
    fr, rr = config["feature_reuse"], config["relation_reuse"]
    shapes: Dict[str, tuple] = {}
    for e, (name, p) in enumerate(zip(EXITS, config.get("patch_sizes", (32, 16)))):
        reuse_f = fr and e == 1
        s = shapes
        s[f"{name}.cls_token"] = (1, 1, c)
        s[f"{name}.pos_embedding"] = (1, (size // p) ** 2 + 1, c)
        s[f"{name}.stem.patch_to_embedding.dense.weight"] = (c, 3 * p * p)
        s[f"{name}.stem.patch_to_embedding.dense.bias"] = (c,)
        for i in range(depth):
            L = f"{name}.layers.{i}."
            s[L + "norm1.gamma"] = s[L + "norm1.beta"] = (c,)
            for proj in ("to_q", "to_k", "to_v"):
                s[L + f"attn.{proj}.weight"] = (inner, c)
                s[L + f"attn.{proj}.bias"] = (inner,)
            s[L + "attn.to_out.weight"] = (c, inner)
            s[L + "attn.to_out.bias"] = (c,)
            n2 = c + FEATURE_DIM if reuse_f else c
            s[L + "norm2.gamma"] = s[L + "norm2.beta"] = (n2,)
            s[L + "mlp.ff1.dense.weight"] = (mlp, n2)
            s[L + "mlp.ff1.dense.bias"] = (mlp,)
            s[L + "mlp.ff2.dense.weight"] = (c, mlp)
            s[L + "mlp.ff2.dense.bias"] = (c,)
            if reuse_f:
                F = L + "feature_resuse_mlp."
                s[F + "norm1.gamma"] = s[F + "norm1.beta"] = (c,)
                s[F + "ff1.dense.weight"] = (FEATURE_HIDDEN, c)
                s[F + "ff1.dense.bias"] = (FEATURE_HIDDEN,)
                s[F + "ff2.dense.weight"] = (FEATURE_DIM, FEATURE_HIDDEN)
                s[F + "ff2.dense.bias"] = (FEATURE_DIM,)
        s[f"{name}.head.0.weight"] = (classes, c)
        s[f"{name}.head.0.bias"] = (classes,)
        s[f"{name}.norm.gamma"] = s[f"{name}.norm.beta"] = (c,)
        if rr and e == 1:
            ch = depth * heads
            s[f"{name}.relation_reuse_conv.0.weight"] = (RELATION_EXPANSION * ch, ch, 1, 1)
            s[f"{name}.relation_reuse_conv.0.bias"] = (RELATION_EXPANSION * ch,)
            s[f"{name}.relation_reuse_conv.2.weight"] = (ch, RELATION_EXPANSION * ch, 1, 1)
            s[f"{name}.relation_reuse_conv.2.bias"] = (ch,)
    return shapes


def random_official_params(config: Mapping, seed: int) -> Dict[str, np.ndarray]:
    """A random float32 official-layout state dict whose logits are O(1) and attention is peaky.

    Drawn like the reference file (``init_rules`` of dvtms_official_tiny.json): weights N(0, 1/fan_in)
    with q/k weights N(0, 3/fan_in), biases and betas 0.1*N, gammas 1 + 0.1*N, class token and position
    embedding 0.5*N.
    """
    rng = np.random.default_rng(seed)
    params: Dict[str, np.ndarray] = {}
    for name, shape in official_shapes(config).items():
        z = rng.standard_normal(shape)
        leaf = name.rsplit(".", 1)[-1]
        if leaf == "weight":
            fan_in = int(np.prod(shape[1:]))
            scale = 3.0 if (".attn.to_q." in name or ".attn.to_k." in name) else 1.0
            value = z * np.sqrt(scale / fan_in)
        elif leaf in ("bias", "beta"):
            value = 0.1 * z
        elif leaf == "gamma":
            value = 1.0 + 0.1 * z
        else:  # cls_token, pos_embedding
            value = 0.5 * z
        params[name] = value.astype(np.float32)
    return params


def write_official_ckpt(path, params: Mapping[str, np.ndarray], optimizer_state: bool = False,
                        total_steps: int = 5) -> None:
    """Write ``params`` with ``mindspore.save_checkpoint`` like official code does.

    With ``optimizer_state`` the file also holds what ``ModelCheckpoint`` saves of the official AdamW
    training: ``adam_m.<name>`` and ``adam_v.<name>`` per parameter, ``beta1_power``, ``beta2_power``
    (``[1]`` float32), ``global_step`` (``[1]`` int32) and ``learning_rate`` (``[total_steps]``).
    """
    import mindspore as ms

    entries = [{"name": k, "data": ms.Tensor(np.asarray(v))} for k, v in params.items()]
    if optimizer_state:
        rng = np.random.default_rng(0)
        for prefix in ("adam_m", "adam_v"):
            entries += [{"name": f"{prefix}.{k}", "data": ms.Tensor(
                (0.01 * np.abs(rng.standard_normal(np.shape(v)))).astype(np.float32))} for k, v in params.items()]
        entries += [
            {"name": "beta1_power", "data": ms.Tensor(np.array([0.9 ** 3], np.float32))},
            {"name": "beta2_power", "data": ms.Tensor(np.array([0.999 ** 3], np.float32))},
            {"name": "global_step", "data": ms.Tensor(np.array([3], np.int32))},
            {"name": "learning_rate", "data": ms.Tensor(np.linspace(0, 1e-3, total_steps).astype(np.float32))},
        ]
    ms.save_checkpoint(entries, str(path))
