"""V-JEPA ViT-H/16 pretraining at 16x224x224, the reference recipe (VJEPA_SPEC §4.1).

    python -m vjepa_jax.train --config configs/pretrain/vith16.py --workdir DIR \
        --config.data.index=/data/k710.csv,/data/ssv2.csv,/data/howto100m.csv

Global batch 3072, 90,000 steps. The published ViT-H/16 reaches 82.0 (K400) and 71.4 (SSv2).
"""
from vjepa_jax.config import base_config


def get_config(arg=None):
    del arg
    c = base_config()
    c.model.variant = "huge"
    return c
