"""I-JEPA ViT-g/16 at 224 on ImageNet-22K, 44 epochs: the reference in22k_vitg16_ep44.

    python -m vjepa_jax.train --config configs/pretrain/ijepa_vitg16_in22k.py --workdir DIR \
        --config.data.source=tfds --config.data.tfds_name=imagenet21k --config.optim.ipe=STEPS

ViT-giant (1408 wide, 40 blocks, 16 heads), patch 16, predictor depth 16. Global batch 2048
(16 per GPU x 128 GPUs), 44 epochs, warmup 3; mask counts from the reference at 16 per GPU.
optim.ipe as in ijepa_vith14_in22k.py.
"""
from vjepa_jax.config import base_config


def get_config(arg=None):
    del arg
    c = base_config("ijepa")
    c.model.update(variant="giant", patch_size=16, pred_depth=16)
    c.optim.update(epochs=44, warmup=3, ipe=6932)
    c.mask_reference_batch = 16
    return c
