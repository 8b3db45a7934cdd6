"""V-JEPA 2 ViT-g/16 pretraining at 16x256x256 (VJEPA_SPEC §9.2-9.3): `vit_giant_xformers`
(1408 wide, 40 deep, 22 heads of 64, MLP 6144, about 1B parameters), 800 x 300 = 240,000 steps
of the ViT-L recipe (vjepa2_vitl_256px_16f.py).

    python -m vjepa_jax.train --config configs/pretrain/vjepa2_vitg_256px_16f.py --workdir DIR \
        --config.data.index=/data/k710.csv,/data/ssv2.csv,/data/howto100m.csv

The cooldowns: vjepa2_vitg_cooldown_256px_64f.py and vjepa2_vitg_cooldown_384px_64f.py.
"""
from vjepa_jax.config import base_config
from vjepa_jax.methods.vjepa2 import defaults


def get_config(arg=None):
    del arg
    c = base_config("vjepa2")
    defaults.pretrain(c, "giant_xformers")
    return c
