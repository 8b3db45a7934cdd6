"""V-JEPA 2 ViT-H/16 pretraining at 16x256x256 (VJEPA_SPEC §9.3): the ViT-L recipe with the
huge encoder (vjepa2_vitl_256px_16f.py says what the recipe is).

    python -m vjepa_jax.train --config configs/pretrain/vjepa2_vith_256px_16f.py --workdir DIR \
        --config.data.index=/data/k710.csv,/data/ssv2.csv,/data/howto100m.csv
"""
from vjepa_jax.config import base_config
from vjepa_jax.methods.vjepa2 import defaults


def get_config(arg=None):
    del arg
    c = base_config("vjepa2")
    defaults.pretrain(c, "huge")
    return c
