"""`config.model` from the geometry a layout infers from an official state dict, or checked against one."""
import ml_collections

from vjepa_jax import mismatch
from vjepa_jax.models import vit

PREDICTOR_KEYS = ("pred_width", "pred_depth")


def model_config(geometry, base, default_model, keys, variants=None):
    """`config.model` for an inferred geometry {'width', 'depth', 'mlp_hidden', *keys, [pred_*]}.

    Without `base`: `default_model` (the method's reference model) with the variant chosen by
    width from the size table (depth 0 = the table's, so the result equals the official
    configs' model) and `keys` copied. With `base` (a user's config.model): every inferred value
    must agree with it; the disagreements are listed in one CheckpointMismatch. `variants`: the
    size-table names preferred for their width (V-JEPA 2's 22-head 'giant_xformers' rather than
    the 16-head 'giant' at 1408); other widths take the first name of the table.
    """
    keys = tuple(keys) + tuple(k for k in PREDICTOR_KEYS if k in geometry)
    if base is None:
        by_width = {}
        for name in tuple(variants or ()) + tuple(vit.SIZES):
            by_width.setdefault(vit.SIZES[name][0], name)
        if geometry["width"] not in by_width:
            raise ValueError(f"encoder width {geometry['width']} is not in the size table "
                             f"{ {n: s[0] for n, s in vit.SIZES.items()} }; pass --config with "
                             "model.variant/width/num_heads set")
        variant = by_width[geometry["width"]]
        m = default_model
        m.update(variant=variant,
                 depth=0 if geometry["depth"] == vit.SIZES[variant][1] else geometry["depth"],
                 **{k: geometry[k] for k in keys})
        return m
    m = ml_collections.ConfigDict(base.to_dict())
    shape = vit.shape_from_config(m)
    have = dict(width=shape.width, depth=shape.depth, mlp_hidden=shape.mlp_hidden,
                **{k: m[k] for k in keys})
    mismatch.check_agrees(geometry, {k: v for k, v in have.items() if k in geometry},
                          "the checkpoint", what="holds a different model than --config",
                          hint="Pass a --config whose model matches the file.")
    return m
