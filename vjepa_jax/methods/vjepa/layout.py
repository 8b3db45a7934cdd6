"""The official V-JEPA checkpoint layout (VJEPA_SPEC §6): names, order, frozen tables, geometry.

What a `.pth.tar` of the official code holds: `encoder`, `predictor` and `target_encoder` state
dicts under `module.backbone.` names in named_parameters() order, each with its frozen sin-cos
table, plus the AdamW state and scalars (TOP_LEVEL_KEYS). `infer_model` reads the model back from
a file's shapes and tables; interop/ holds the naming convention and the file formats.
"""
import collections
import math
import re

import jax
import ml_collections
import numpy as np

from vjepa_jax import mismatch, trees
from vjepa_jax.interop.torch_names import (from_torch_layout, strip_prefixes, to_numpy,
                                           to_torch_layout, torch_name, torch_shape)
from vjepa_jax.methods.vjepa import defaults
from vjepa_jax.models import pos_embed, vit

PREFIX = "module.backbone."
# Top-level entries of the official pretraining checkpoint (VJEPA_SPEC §6.1).
TOP_LEVEL_KEYS = ("encoder", "predictor", "target_encoder", "opt", "scaler", "epoch", "loss",
                  "batch_size", "world_size", "lr")
# What torch.cuda.amp.GradScaler() starts from; the official bf16 run loads it on resume.
FRESH_SCALER = {"scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5,
                "growth_interval": 2000, "_growth_tracker": 0}
# A file's frozen table may have drifted by float32 rounding of the EMA (pos_embed is averaged
# with itself every step in the reference); anything larger is not the sin-cos table.
TABLE_ATOL = 1e-3


# ---------------------------------------------------------------------------------------------
# Names and order

def official_order(kind, names):
    """`names` sorted as the official module's named_parameters() (pos table first, then modules)."""
    pos_key = "pos_embed" if kind == "encoder" else "predictor_pos_embed"
    blocks = "blocks" if kind == "encoder" else "predictor_blocks"
    heads = (["patch_embed.proj"] if kind == "encoder" else ["predictor_embed", "mask_tokens"])
    tails = (["norm"] if kind == "encoder" else ["predictor_norm", "predictor_proj"])
    in_block = ["norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2"]

    def rank(name):
        if name == pos_key:
            return (0,)
        if name.startswith(blocks + "."):
            _, i, rest = name.split(".", 2)
            module, leaf = rest.rsplit(".", 1)
            return (2, int(i), in_block.index(module), leaf != "weight")
        for j, head in enumerate(heads):
            if name.startswith(head + "."):
                tail = name[len(head) + 1:]
                return (1, j, int(tail) if tail.isdigit() else tail != "weight")
        module, leaf = name.rsplit(".", 1)
        return (3, tails.index(module), leaf != "weight")
    return sorted(names, key=rank)


def module_to_torch(params, kind, pos_table):
    """Flax params of the encoder or predictor -> OrderedDict {official name: float32 NumPy, torch layout}.

    `pos_table` [N, width] is written as the frozen `pos_embed` / `predictor_pos_embed` [1, N, width].
    """
    out = {"pos_embed" if kind == "encoder" else "predictor_pos_embed":
           np.asarray(pos_table, np.float32)[None]}
    for path, x in trees.flatten(params).items():
        x = np.asarray(jax.device_get(x), np.float32)
        # A writable C-ordered copy: torch.from_numpy shares memory and warns on read-only arrays.
        out[torch_name(path)] = np.array(to_torch_layout(path, x), np.float32, order="C")
    return collections.OrderedDict((k, out[k]) for k in official_order(kind, out))


def module_from_torch(state_dict, abstract, kind, pos_table, where):
    """Official state dict (prefixes optional) -> Flax params shaped like `abstract`, strictly.

    Raises StrictLoadError listing every missing, unexpected and wrongly shaped key; the frozen
    table must equal `pos_table` (the model computes it, so a different table is an error).
    """
    sd = strip_prefixes(state_dict)
    pos_key = "pos_embed" if kind == "encoder" else "predictor_pos_embed"
    expected = {torch_name(path): (path, torch_shape(path, x.shape))
                for path, x in trees.flatten(abstract).items()}
    expected[pos_key] = (None, (1,) + tuple(pos_table.shape))
    mismatch.check_shapes({k: tuple(v.shape) for k, v in sd.items()},
                          {k: expected[k][1] for k in official_order(kind, expected)}, where)
    error = float(np.max(np.abs(to_numpy(sd[pos_key])[0] - pos_table))) if pos_table.size else 0.0
    if error > TABLE_ATOL:
        raise ValueError(f"{where}: {pos_key} differs from the 3-D sin-cos table of this model by "
                         f"{error:.3g}; only the reference's fixed sin-cos positions are supported")
    return trees.unflatten({path: from_torch_layout(path, to_numpy(sd[name]))
                       for name, (path, _) in expected.items() if path is not None})


def torch_order(params, tables_):
    """{'encoder'|'predictor': [(official name, torch shape)]} in named_parameters() order."""
    out = {}
    for module, table in zip(("encoder", "predictor"), tables_):
        shapes = {torch_name(p): torch_shape(p, x.shape) for p, x in trees.flatten(params[module]).items()}
        shapes["pos_embed" if module == "encoder" else "predictor_pos_embed"] = (1,) + table.shape
        out[module] = [(n, shapes[n]) for n in official_order(module, shapes)]
    return out


# ---------------------------------------------------------------------------------------------
# Frozen tables


def tables(encoder, predictor=None):
    """Frozen sin-cos tables (encoder [N, D], predictor [N, Dp]) the official files carry."""
    s = encoder.shape
    enc = pos_embed.sincos_3d(s.width, s.grid, encoder.uniform_power)
    if predictor is None:
        return enc, None
    return enc, pos_embed.sincos_3d(predictor.width, predictor.grid, predictor.uniform_power)


# ---------------------------------------------------------------------------------------------
# Model geometry from a state dict


def _match_grid(table, width, tubelet, patch, num_frames, crop_size, key):
    """(num_frames, crop_size, uniform_power) whose sin-cos table equals `table` [N, width]."""
    n = table.shape[0]
    candidates = []
    for side in range(1, math.isqrt(n) + 1):
        if n % (side * side) == 0:
            frames, crop = (n // (side * side)) * tubelet, side * patch
            if num_frames in (None, frames) and crop_size in (None, crop):
                candidates.append((frames, crop))
    if not candidates:
        raise ValueError(f"{key} has {n} tokens, which no clip of num_frames={num_frames} and "
                         f"crop_size={crop_size} gives with tubelet {tubelet} and patch {patch}")
    for frames, crop in candidates:
        grid = (frames // tubelet, crop // patch, crop // patch)
        for uniform in (True, False):
            if np.max(np.abs(pos_embed.sincos_3d(width, grid, uniform) - table)) <= TABLE_ATOL:
                return frames, crop, uniform
    raise ValueError(f"{key} [1, {n}, {width}] is not the 3-D sin-cos table of any clip "
                     f"(frames, crop) in {candidates}; pass --num_frames and --crop_size, and "
                     "note that only the reference's fixed sin-cos positions are supported")


def infer_model(encoder_sd, predictor_sd=None, num_frames=None, crop_size=None):
    """Model geometry from an encoder (and predictor) state dict's shapes and frozen tables.

    Returns {'width', 'depth', 'mlp_hidden', 'patch_size', 'tubelet_size', 'num_frames',
    'crop_size', 'uniform_power'} plus 'pred_width', 'pred_depth', 'num_mask_tokens' when a
    predictor is given. num_frames / crop_size, when given, are checked against the table.
    """
    sd = strip_prefixes(encoder_sd)
    for key in ("patch_embed.proj.weight", "pos_embed", "blocks.0.mlp.fc1.weight"):
        if key not in sd:
            raise mismatch.StrictLoadError("encoder state dict", missing=[key])
    conv = tuple(sd["patch_embed.proj.weight"].shape)
    if len(conv) != 5 or conv[1] != 3 or conv[3] != conv[4]:
        raise ValueError(f"patch_embed.proj.weight has shape {conv}; expected a Conv3d "
                         "[width, 3, tubelet, patch, patch] (image checkpoints are not supported)")
    width, _, tubelet, patch, _ = conv
    table = to_numpy(sd["pos_embed"])
    if table.ndim != 3 or table.shape[0] != 1 or table.shape[2] != width:
        raise ValueError(f"pos_embed has shape {tuple(table.shape)}; expected [1, N, {width}]")
    frames, crop, uniform = _match_grid(table[0], width, tubelet, patch, num_frames, crop_size,
                                        "pos_embed")
    depth = 1 + max(int(m[1]) for k in sd if (m := re.match(r"blocks\.(\d+)\.", k)))
    model = dict(width=width, depth=depth, mlp_hidden=int(sd["blocks.0.mlp.fc1.weight"].shape[0]),
                 patch_size=patch, tubelet_size=tubelet, num_frames=frames, crop_size=crop,
                 uniform_power=uniform)
    if predictor_sd is None:
        return model
    sd = strip_prefixes(predictor_sd)
    for key in ("predictor_embed.weight", "predictor_pos_embed"):
        if key not in sd:
            raise mismatch.StrictLoadError("predictor state dict", missing=[key])
    pred_width = int(sd["predictor_embed.weight"].shape[0])
    blocks = [int(m[1]) for k in sd if (m := re.match(r"predictor_blocks\.(\d+)\.", k))]
    tokens = [int(m[1]) for k in sd if (m := re.fullmatch(r"mask_tokens\.(\d+)", k))]
    if not blocks or not tokens:
        raise ValueError("predictor state dict has no predictor_blocks.* or no mask_tokens.*; "
                         "only the mask-token predictor of the reference is supported")
    model.update(pred_width=pred_width, pred_depth=1 + max(blocks), num_mask_tokens=1 + max(tokens))
    return model


def model_config(geometry, base=None):
    """`config.model` for an inferred geometry: base (default: the reference model) updated or checked.

    Without `base`, variant is chosen by width from the size table (0 = table value for depth
    and heads, so the result equals the official configs' model). With `base` (a user's config),
    every inferred value must agree with it; disagreements are listed in one ValueError.
    """
    if base is None:
        by_width = {w: name for name, (w, *_) in vit.SIZES.items()}
        if geometry["width"] not in by_width:
            raise ValueError(f"encoder width {geometry['width']} is not in the size table "
                             f"{ {n: s[0] for n, s in vit.SIZES.items()} }; pass --config with "
                             "model.variant/width/num_heads set")
        m = defaults.model_defaults()
        variant = by_width[geometry["width"]]
        table_depth = vit.SIZES[variant][1]
        m.update(variant=variant, depth=0 if geometry["depth"] == table_depth else geometry["depth"],
                 **{k: geometry[k] for k in ("patch_size", "tubelet_size", "num_frames",
                                             "crop_size", "uniform_power")})
        if "pred_width" in geometry:
            m.update(pred_width=geometry["pred_width"], pred_depth=geometry["pred_depth"])
        return m
    m = ml_collections.ConfigDict(base.to_dict())
    shape = vit.shape_from_config(m)
    have = dict(width=shape.width, depth=shape.depth, mlp_hidden=shape.mlp_hidden,
                patch_size=m.patch_size, tubelet_size=m.tubelet_size, num_frames=m.num_frames,
                crop_size=m.crop_size, uniform_power=m.uniform_power, pred_width=m.pred_width,
                pred_depth=m.pred_depth)
    mismatch.check_agrees(geometry, {k: v for k, v in have.items() if k in geometry},
                          "the checkpoint", what="holds a different model than --config",
                          hint="Pass a --config whose model matches the file.")
    return m
