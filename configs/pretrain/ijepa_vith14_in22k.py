"""I-JEPA ViT-H/14 at 224 on ImageNet-22K, 66 epochs: the reference in22k_vith14_ep66.

    python -m vjepa_jax.train --config configs/pretrain/ijepa_vith14_in22k.py --workdir DIR \
        --config.data.source=tfds --config.data.tfds_name=imagenet21k --config.optim.ipe=STEPS

Global batch 2048 (32 per GPU x 64 GPUs), 66 epochs, warmup 3 epochs; mask counts from the
reference at 32 per GPU (77 context tokens). An epoch is a pass over the data: set optim.ipe to
len(dataset) // 2048 (6932 for the 14,197,122 images of the full ImageNet-22K; the reference's
configs ship no IN-22K loader and say so, so its exact ipe is not known).
"""
from vjepa_jax.config import base_config


def get_config(arg=None):
    del arg
    c = base_config("ijepa")
    c.optim.update(epochs=66, warmup=3, ipe=6932)
    c.mask_reference_batch = 32
    return c
