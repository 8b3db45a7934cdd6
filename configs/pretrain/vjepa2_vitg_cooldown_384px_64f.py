"""V-JEPA 2 ViT-g/16 cooldown at 64x384x384 (VJEPA_SPEC §9.3, cooldown-384px-64f).

    python -m vjepa_jax.train --config configs/pretrain/vjepa2_vitg_cooldown_384px_64f.py --workdir DIR \
        --config.train.init_from=PRETRAIN_WORKDIR \
        --config.data.index=/data/k710.csv,/data/ssv2.csv,/data/howto100m.csv

Starts from the latest checkpoint of the pretrain run (vjepa2_vitg_256px_16f.py): weights,
EMA target and AdamW moments; the step count and schedules start over. Global batch 3072
(6 per GPU x 512 GPUs); the LR falls linearly from 5.25e-4 toward 1e-6 over 1.25 x the run, so it
ends at 80 % of the way. The run length is assumed (40 x 300 = 12,000 steps: the spec does not
record it; set optim.epochs). docs/VJEPA2.md, "Progressive resolution".

Published (ViT-g/16-384 after this cooldown): SSv2 77.3 % (64x2x3), Diving48 90.2 %,
EK100 anticipation 39.7 R@5 (VJEPA_SPEC §9.5).
"""
from vjepa_jax.config import base_config
from vjepa_jax.methods.vjepa2 import defaults


def get_config(arg=None):
    del arg
    c = base_config("vjepa2")
    defaults.cooldown(c, "giant_xformers", num_frames=64, crop_size=384, per_device_batch=6)
    return c
