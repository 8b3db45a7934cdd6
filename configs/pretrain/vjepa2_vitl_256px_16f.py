"""V-JEPA 2 ViT-L/16 pretraining at 16x256x256 (VJEPA_SPEC §9.3, pretrain-256px-16f).

    python -m vjepa_jax.train --config configs/pretrain/vjepa2_vitl_256px_16f.py --workdir DIR \
        --config.data.index=/data/k710.csv,/data/ssv2.csv,/data/howto100m.csv

Global batch 3072 (24 per GPU x 128 GPUs), index files mixed with the reference's weights
K710 0.335 / SSv2 0.100 / HowTo100M 0.565 (data.weights, in the order of data.index;
vjepa_jax/methods/vjepa2/defaults.py holds the recipe). LR warms
up linearly over 12,000 steps from 1e-4 to 5.25e-4 and then stays there, weight decay 0.04 and
EMA 0.99925 are constant, no gradient clipping. Steps: 800 x 300 = 240,000, the ViT-g config's
count; the released ViT-L/H yamls say `epochs: 10`, which would end inside the 12K-step warmup,
so this config uses the 240,000 instead (docs/VJEPA2.md). The cooldown is
vjepa2_vitl_cooldown_256px_64f.py. Published (ViT-L/16, after the cooldown): SSv2 73.7 %,
Diving48 89.0 %, EK100 anticipation 32.7 R@5 (§9.5).

Frames are sampled at 4 fps as the reference does (data.fps=4: frame step ceil(video fps) // 4
per video, instead of V-JEPA 1's fixed data.frame_step).
"""
from vjepa_jax.config import base_config
from vjepa_jax.methods.vjepa2 import defaults


def get_config(arg=None):
    del arg
    c = base_config("vjepa2")
    defaults.pretrain(c, "large")
    return c
