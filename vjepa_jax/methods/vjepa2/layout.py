"""The official V-JEPA 2 checkpoint layout (VJEPA_SPEC §9.3): V-JEPA 1's names without tables.

A V-JEPA 2 `.pt` holds the same top-level dict and `module.backbone.` names as V-JEPA 1's
(methods/vjepa/layout.py), but with RoPE neither `pos_embed` nor `predictor_pos_embed` exists.
Nothing in such a file tells the clip shape it was trained on, nor the head counts: `infer_model`
takes num_frames / crop_size (default 16 x 256, the pretraining clip) and the heads come from
the size table (22 for the 1408-wide ViT-g) and the predictor's 12.
"""
import re

from vjepa_jax import mismatch
from vjepa_jax.interop import geometry as geometry_lib, state_dicts
from vjepa_jax.interop.torch_names import strip_prefixes
from vjepa_jax.methods.vjepa import layout as vjepa_layout
from vjepa_jax.methods.vjepa2 import defaults

PREFIX = vjepa_layout.PREFIX
ENCODER = state_dicts.ModuleNames(pos_key=None, blocks="blocks", heads=("patch_embed.proj",),
                                  tails=("norm",))
PREDICTOR = state_dicts.ModuleNames(pos_key=None, blocks="predictor_blocks",
                                    heads=("predictor_embed", "mask_tokens"),
                                    tails=("predictor_norm", "predictor_proj"))
SPECS = {"encoder": ENCODER, "predictor": PREDICTOR}
VARIANTS = ("large", "huge", "giant_xformers")  # the released sizes: preferred for their width


def matches(state_dict):
    """True for an encoder state dict of this layout: a 3-D tubelet conv and no pos_embed."""
    sd = strip_prefixes(state_dict)
    w = sd.get("patch_embed.proj.weight")
    return w is not None and len(w.shape) == 5 and "pos_embed" not in sd


def check_config(geometry, config):
    """Raise ValueError when a file's predictor holds another number of mask tokens."""
    if config.model.pred_num_mask_tokens != geometry["num_mask_tokens"]:
        raise ValueError(f"the predictor has {geometry['num_mask_tokens']} mask tokens but "
                         f"config.model.pred_num_mask_tokens={config.model.pred_num_mask_tokens}")


def tables(encoder, predictor=None):
    """No frozen tables: (None, None)."""
    del encoder, predictor
    return None, None


def infer_model(encoder_sd, predictor_sd=None, num_frames=None, crop_size=None):
    """Model geometry from an encoder (and predictor) state dict's shapes.

    Returns {'width', 'depth', 'mlp_hidden', 'patch_size', 'tubelet_size', 'num_frames',
    'crop_size'} plus 'pred_width', 'pred_depth', 'num_mask_tokens' with a predictor. The clip
    shape is not in the file: num_frames / crop_size default to the pretraining 16 x 256.
    """
    sd = strip_prefixes(encoder_sd)
    for key in ("patch_embed.proj.weight", "blocks.0.mlp.fc1.weight"):
        if key not in sd:
            raise mismatch.StrictLoadError("encoder state dict", missing=[key])
    if "pos_embed" in sd:
        raise ValueError("the encoder state dict has a pos_embed table: a V-JEPA 1 file, not "
                         "V-JEPA 2 (RoPE)")
    conv = tuple(sd["patch_embed.proj.weight"].shape)
    if len(conv) != 5 or conv[1] != 3 or conv[3] != conv[4]:
        raise ValueError(f"patch_embed.proj.weight has shape {conv}; expected a Conv3d "
                         "[width, 3, tubelet, patch, patch]")
    width, _, tubelet, patch, _ = conv
    depth = 1 + max(int(m[1]) for k in sd if (m := re.match(r"blocks\.(\d+)\.", k)))
    model = dict(width=width, depth=depth, mlp_hidden=int(sd["blocks.0.mlp.fc1.weight"].shape[0]),
                 patch_size=patch, tubelet_size=tubelet, num_frames=num_frames or 16,
                 crop_size=crop_size or 256)
    if predictor_sd is None:
        return model
    sd = strip_prefixes(predictor_sd)
    if "predictor_embed.weight" not in sd:
        raise mismatch.StrictLoadError("predictor state dict", missing=["predictor_embed.weight"])
    blocks = [int(m[1]) for k in sd if (m := re.match(r"predictor_blocks\.(\d+)\.", k))]
    tokens = [int(m[1]) for k in sd if (m := re.fullmatch(r"mask_tokens\.(\d+)", k))]
    if not blocks or not tokens:
        raise ValueError("predictor state dict has no predictor_blocks.* or no mask_tokens.*")
    model.update(pred_width=int(sd["predictor_embed.weight"].shape[0]),
                 pred_depth=1 + max(blocks), num_mask_tokens=1 + max(tokens))
    return model


def model_config(geometry, base=None):
    """`config.model` for an inferred geometry: the reference model updated, or `base` checked."""
    m = geometry_lib.model_config(geometry, base, defaults.model_defaults(),
                                  ("patch_size", "tubelet_size", "num_frames", "crop_size"), VARIANTS)
    if base is None and "num_mask_tokens" in geometry:
        m.pred_num_mask_tokens = geometry["num_mask_tokens"]
    return m
