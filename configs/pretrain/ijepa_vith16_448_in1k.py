"""I-JEPA ViT-H/16 at 448 on ImageNet-1K, 300 epochs: the reference in1k_vith16-448_ep300.

    python -m vjepa_jax.train --config configs/pretrain/ijepa_vith16_448_in1k.py --workdir DIR \
        --config.data.root=/data/imagenet

Global batch 2048 (16 per GPU x 128 GPUs), 625 steps per epoch, 187,500 steps; 28x28 grid, mask
counts from the reference at 16 per GPU (136 tokens per target block, 271 context). Released
checkpoint: 81.1 % IN-1K linear, 77.3 % with 1 % of the labels (paper, IJEPA_SPEC §8.2).
"""
from vjepa_jax.config import base_config


def get_config(arg=None):
    del arg
    c = base_config("ijepa")
    c.model.update(patch_size=16, crop_size=448)
    c.mask_reference_batch = 16
    return c
