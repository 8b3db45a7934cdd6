"""The official I-JEPA checkpoint layout (IJEPA_SPEC §6): names, order, frozen tables, geometry.

The same top-level dict as V-JEPA's (`encoder`, `predictor`, `target_encoder`, `opt`, ...) but
the prefix is `module.` alone, the patch conv is 2-D ([D, 3, p, p]), the predictor has one
`mask_token` (registered, like `predictor_pos_embed`, on the module itself, so both come first
in named_parameters()), and both tables are the 2-D [column, row] sin-cos tables.
"""
import re


from vjepa_jax import mismatch
from vjepa_jax.interop import geometry as geometry_lib, state_dicts
from vjepa_jax.interop.torch_names import strip_prefixes, to_numpy
from vjepa_jax.methods.ijepa import defaults
from vjepa_jax.models import pos_embed

PREFIX = "module."
ENCODER = state_dicts.ModuleNames(pos_key="pos_embed", blocks="blocks", heads=("patch_embed.proj",),
                                  tails=("norm",))
PREDICTOR = state_dicts.ModuleNames(pos_key="predictor_pos_embed", blocks="predictor_blocks",
                                    heads=("predictor_embed",),
                                    tails=("predictor_norm", "predictor_proj"),
                                    first=("mask_token",))
SPECS = {"encoder": ENCODER, "predictor": PREDICTOR}


def matches(state_dict):
    """True for an encoder state dict of this layout: a 2-D patch conv."""
    w = strip_prefixes(state_dict).get("patch_embed.proj.weight")
    return w is not None and len(w.shape) == 4


def tables(encoder, predictor=None):
    """Frozen 2-D sin-cos tables (encoder [N, D], predictor [N, Dp]) the official files carry."""
    s = encoder.shape
    enc = pos_embed.sincos_2d_ijepa(s.width, s.grid[1])
    if predictor is None:
        return enc, None
    return enc, pos_embed.sincos_2d_ijepa(predictor.width, predictor.side)


def check_config(geometry, config):
    """A file's predictor fits every I-JEPA config (one mask token): nothing to check."""
    del geometry, config


def infer_model(encoder_sd, predictor_sd=None, num_frames=None, crop_size=None):
    """Model geometry from an encoder (and predictor) state dict's shapes and frozen table.

    Returns {'width', 'depth', 'mlp_hidden', 'patch_size', 'crop_size'} plus 'pred_width',
    'pred_depth' when a predictor is given. crop_size, when given, is checked against the table.
    """
    sd = strip_prefixes(encoder_sd)
    for key in ("patch_embed.proj.weight", "pos_embed", "blocks.0.mlp.fc1.weight"):
        if key not in sd:
            raise mismatch.StrictLoadError("encoder state dict", missing=[key])
    conv = tuple(sd["patch_embed.proj.weight"].shape)
    if len(conv) != 4 or conv[1] != 3 or conv[2] != conv[3]:
        raise ValueError(f"patch_embed.proj.weight has shape {conv}; expected a Conv2d "
                         "[width, 3, patch, patch]")
    if num_frames not in (None, 1):
        raise ValueError(f"num_frames={num_frames}: an I-JEPA encoder takes single images")
    width, _, patch, _ = conv
    table = to_numpy(sd["pos_embed"])
    side = int(round(table.shape[1] ** 0.5)) if table.ndim == 3 else 0
    if table.ndim != 3 or table.shape[0] != 1 or table.shape[2] != width or side * side != table.shape[1]:
        raise ValueError(f"pos_embed has shape {tuple(table.shape)}; expected [1, G*G, {width}]")
    if crop_size not in (None, side * patch):
        raise ValueError(f"pos_embed has {side}x{side} tokens, which crop_size={crop_size} does "
                         f"not give with patch {patch}")
    state_dicts.check_table(table, pos_embed.sincos_2d_ijepa(width, side), "pos_embed")
    depth = 1 + max(int(m[1]) for k in sd if (m := re.match(r"blocks\.(\d+)\.", k)))
    model = dict(width=width, depth=depth, mlp_hidden=int(sd["blocks.0.mlp.fc1.weight"].shape[0]),
                 patch_size=patch, crop_size=side * patch)
    if predictor_sd is None:
        return model
    sd = strip_prefixes(predictor_sd)
    for key in ("predictor_embed.weight", "predictor_pos_embed", "mask_token"):
        if key not in sd:
            raise mismatch.StrictLoadError("predictor state dict", missing=[key])
    blocks = [int(m[1]) for k in sd if (m := re.match(r"predictor_blocks\.(\d+)\.", k))]
    model.update(pred_width=int(sd["predictor_embed.weight"].shape[0]), pred_depth=1 + max(blocks))
    return model


def model_config(geometry, base=None):
    """`config.model` for an inferred geometry: the reference model updated, or `base` checked."""
    return geometry_lib.model_config(geometry, base, defaults.model_defaults(),
                                     ("patch_size", "crop_size"))
