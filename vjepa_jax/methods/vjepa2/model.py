"""The V-JEPA 2 model bundle: V-JEPA's (methods/vjepa/model.py) with RoPE modules and its
predictor conditioning.

The reference predictor holds len(masks) x len(dataset_fpcs) mask tokens (6 in the released
configs) but indexes them by frame-count group, not by mask generator, so with one clip length
every generator's queries start from mask token 0 (VJEPA_SPEC §9.2). `model.pred_num_mask_tokens`
keeps the released count; `model.pred_mask_token='generator'` gives each generator its own token
as V-JEPA 1 does.
"""
from vjepa_jax.methods import check_key
from vjepa_jax.methods.vjepa import masks as masks_lib, model as vjepa_model
from vjepa_jax.models import predictor as predictor_lib, rope, vit

MASK_TOKEN_CHOICES = ("group", "generator")


def validate(config):
    """V-JEPA's checks plus the RoPE layout, the head sizes RoPE needs and the mask tokens."""
    vjepa_model.validate(config)
    m = config.model
    check_key(m.rope in rope.LAYOUTS[1:], "model.rope", m.rope, f"one of {rope.LAYOUTS[1:]}")
    check_key(m.pred_mask_token in MASK_TOKEN_CHOICES, "model.pred_mask_token", m.pred_mask_token,
              f"one of {MASK_TOKEN_CHOICES}")
    shape = vit.shape_from_config(m)
    pred_heads = m.pred_num_heads or shape.num_heads
    for key, width, heads in (("num_heads", shape.width, shape.num_heads),
                              ("pred_num_heads", m.pred_width, pred_heads)):
        check_key(rope.axis_dims(width // heads) > 0, f"model.{key}", heads,
                  f"a head count giving head_dim >= 6 for 3-D RoPE (width {width})")
    needed = len(config.masks) if m.pred_mask_token == "generator" else 1
    check_key(isinstance(m.pred_num_mask_tokens, int) and m.pred_num_mask_tokens >= needed,
              "model.pred_num_mask_tokens", m.pred_num_mask_tokens,
              f"an integer >= {needed} (model.pred_mask_token={m.pred_mask_token!r})")


def build(config):
    """VJEPA bundle with the RoPE encoder / predictor of `config.model` (validated)."""
    m = config.model
    encoder = vit.encoder_from_config(m)
    generators = tuple(masks_lib.generators_from_config(config))
    predictor = predictor_lib.predictor_from_config(m, encoder.shape, m.pred_num_mask_tokens)
    tokens = (tuple(range(len(generators))) if m.pred_mask_token == "generator"
              else (0,) * len(generators))
    return vjepa_model.VJEPA(encoder, predictor, generators, tokens)
