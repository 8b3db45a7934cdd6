"""ViT-H/16 at 384: attentive probe on SSv2 16x2x3 (VJEPA_SPEC §7).

Something-Something v2, 16 frames x 2 segments x 3 views.

    python -m vjepa_jax.eval --config configs/evals/vith16_384_ssv2.py --workdir DIR \
        --config.pretrained=/ckpt/vith16-384.pth.tar \
        --config.data.train_index=/data/ssv2_train.csv --config.data.val_index=/data/ssv2_val.csv

Expected: top-1 72.2 % with the released checkpoint (facebookresearch/jepa README), after
20 epochs at global batch 256. Printed per epoch and written to DIR/eval_metrics.jsonl.
"""
from vjepa_jax.eval_configs import eval_config


def get_config(arg=None):
    del arg
    return eval_config("vith16_384", "ssv2")
