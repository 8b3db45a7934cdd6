"""ViT-H/16 at 384: attentive probe on Kinetics-400 16x8x3 (VJEPA_SPEC §7).

Kinetics-400, 16 frames x 8 segments x 3 views.

    python -m vjepa_jax.eval --config configs/evals/vith16_384_k400.py --workdir DIR \
        --config.pretrained=/ckpt/vith16-384.pth.tar \
        --config.data.train_index=/data/k400_train.csv --config.data.val_index=/data/k400_val.csv

Expected: top-1 81.9 % with the released checkpoint (facebookresearch/jepa README), after
20 epochs at global batch 256. Printed per epoch and written to DIR/eval_metrics.jsonl.
"""
from vjepa_jax.eval_configs import eval_config


def get_config(arg=None):
    del arg
    return eval_config("vith16_384", "k400")
