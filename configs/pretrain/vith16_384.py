"""V-JEPA ViT-H/16 pretraining at 16x384x384, the reference recipe (VJEPA_SPEC §4.1).

    python -m vjepa_jax.train --config configs/pretrain/vith16_384.py --workdir DIR \
        --config.data.index=/data/k710.csv,/data/ssv2.csv,/data/howto100m.csv

Global batch 2400 (10 per GPU x 240 GPUs), 90,000 steps. The published ViT-H/16-384 reaches
81.9 (K400), 72.2 (SSv2) and 77.4 (IN1K).
"""
from vjepa_jax.config import base_config


def get_config(arg=None):
    del arg
    c = base_config()
    c.model.variant = "huge"
    c.model.crop_size = 384
    c.data.batch_size = 2400
    return c
