"""ViT-H/16 at 384: attentive probe on ImageNet-1K (VJEPA_SPEC §7).

ImageNet-1K (TFDS imagenet2012), images repeated to 16 frames.

    python -m vjepa_jax.eval --config configs/evals/vith16_384_in1k.py --workdir DIR \
        --config.pretrained=/ckpt/vith16-384.pth.tar \
        --config.data.tfds_data_dir=/data/tensorflow_datasets

Expected: top-1 77.4 % with the released checkpoint (facebookresearch/jepa README), after
20 epochs at global batch 1024. Printed per epoch and written to DIR/eval_metrics.jsonl.
"""
from vjepa_jax.eval_configs import eval_config


def get_config(arg=None):
    del arg
    return eval_config("vith16_384", "in1k")
