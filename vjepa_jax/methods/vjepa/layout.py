"""The official V-JEPA checkpoint layout (VJEPA_SPEC §6): names, order, frozen tables, geometry.

What a `.pth.tar` of the official code holds: `encoder`, `predictor` and `target_encoder` state
dicts under `module.backbone.` names in named_parameters() order, each with its frozen sin-cos
table, plus the AdamW state and scalars (TOP_LEVEL_KEYS). `infer_model` reads the model back from
a file's shapes and tables; interop/ holds the naming convention and the file formats.
"""
import math
import re

import numpy as np

from vjepa_jax import mismatch
from vjepa_jax.interop import geometry as geometry_lib, state_dicts
from vjepa_jax.interop.torch_names import strip_prefixes, to_numpy
from vjepa_jax.methods.vjepa import defaults
from vjepa_jax.models import pos_embed

PREFIX = "module.backbone."


# ---------------------------------------------------------------------------------------------
# Names and order

ENCODER = state_dicts.ModuleNames(pos_key="pos_embed", blocks="blocks", heads=("patch_embed.proj",),
                                  tails=("norm",))
PREDICTOR = state_dicts.ModuleNames(pos_key="predictor_pos_embed", blocks="predictor_blocks",
                                    heads=("predictor_embed", "mask_tokens"),
                                    tails=("predictor_norm", "predictor_proj"))
SPECS = {"encoder": ENCODER, "predictor": PREDICTOR}


def matches(state_dict):
    """True for an encoder state dict of this layout: a 3-D tubelet conv and a pos_embed table
    (V-JEPA 2's files have the same conv but no table: methods/vjepa2/layout.py)."""
    sd = strip_prefixes(state_dict)
    w = sd.get("patch_embed.proj.weight")
    return w is not None and len(w.shape) == 5 and "pos_embed" in sd


def check_config(geometry, config):
    """Raise ValueError when a file's predictor does not fit the config's mask generators."""
    if len(config.masks) != geometry["num_mask_tokens"]:
        raise ValueError(f"the predictor has {geometry['num_mask_tokens']} mask tokens but the "
                         f"config has {len(config.masks)} mask generators (config.masks)")


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
            if np.max(np.abs(pos_embed.sincos_3d(width, grid, uniform) - table)) <= state_dicts.TABLE_ATOL:
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
    """`config.model` for an inferred geometry: the reference model updated, or `base` checked."""
    return geometry_lib.model_config(geometry, base, defaults.model_defaults(),
                                     ("patch_size", "tubelet_size", "num_frames", "crop_size", "uniform_power"))
