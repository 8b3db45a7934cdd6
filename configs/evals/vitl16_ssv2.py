"""ViT-L/16 at 224: attentive probe on SSv2 16x2x3 (VJEPA_SPEC §7).

Something-Something v2, 16 frames x 2 segments x 3 views.

    python -m vjepa_jax.eval --config configs/evals/vitl16_ssv2.py --workdir DIR \
        --config.pretrained=/ckpt/vitl16.pth.tar \
        --config.data.train_index=/data/ssv2_train.csv --config.data.val_index=/data/ssv2_val.csv

Expected: top-1 69.5 % with the released checkpoint (facebookresearch/jepa README), after
20 epochs at global batch 256. Printed per epoch and written to DIR/eval_metrics.jsonl.
"""
from vjepa_jax.eval_configs import eval_config


def get_config(arg=None):
    del arg
    return eval_config("vitl16", "ssv2")
