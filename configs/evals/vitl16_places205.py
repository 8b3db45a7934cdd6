"""ViT-L/16 at 224: attentive probe on Places205 (VJEPA_SPEC §7).

Places205 (ImageFolder root/{train,val}/<class>/), images repeated to 16 frames.

    python -m vjepa_jax.eval --config configs/evals/vitl16_places205.py --workdir DIR \
        --config.pretrained=/ckpt/vitl16.pth.tar \
        --config.data.root=/data/places205

Expected: top-1 60.3 % with the released checkpoint (facebookresearch/jepa README), after
20 epochs at global batch 1024. Printed per epoch and written to DIR/eval_metrics.jsonl.
"""
from vjepa_jax.eval_configs import eval_config


def get_config(arg=None):
    del arg
    return eval_config("vitl16", "places205")
