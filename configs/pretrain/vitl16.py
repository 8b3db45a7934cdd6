"""V-JEPA ViT-L/16 pretraining at 16x224x224, the reference recipe (VJEPA_SPEC §4.1).

    python -m vjepa_jax.train --config configs/pretrain/vitl16.py --workdir DIR \
        --config.data.index=/data/k710.csv,/data/ssv2.csv,/data/howto100m.csv

Global batch 3072 (the reference: 24 per GPU x 128 GPUs), 90,000 steps, schedules laid out over
112,500 steps. The published ViT-L/16 reaches 80.8 (K400 16x8x3) and 69.5 (SSv2 16x2x3) with the
attentive probe (configs/evals/probe.py:vitl16,k400 and :vitl16,ssv2).
"""
from vjepa_jax.config import base_config


def get_config(arg=None):
    del arg
    return base_config()
