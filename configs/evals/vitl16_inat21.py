"""ViT-L/16 at 224: attentive probe on iNaturalist 2021 (VJEPA_SPEC §7).

INaturalist 2021 (TFDS i_naturalist2021), images repeated to 16 frames.

    python -m vjepa_jax.eval --config configs/evals/vitl16_inat21.py --workdir DIR \
        --config.pretrained=/ckpt/vitl16.pth.tar \
        --config.data.tfds_data_dir=/data/tensorflow_datasets

Expected: top-1 67.8 % with the released checkpoint (facebookresearch/jepa README), after
20 epochs at global batch 1024. Printed per epoch and written to DIR/eval_metrics.jsonl.
"""
from vjepa_jax.eval_configs import eval_config


def get_config(arg=None):
    del arg
    return eval_config("vitl16", "inat21")
