"""Frozen evaluation of a released I-JEPA encoder on ImageNet-1K (IJEPA_SPEC §7): `:MODEL,TASK`.

    python -m vjepa_jax.eval --config configs/evals/ijepa.py:MODEL,TASK --workdir DIR \
        --config.pretrained=/ckpt/IN1K-vit.h.14-300e.pth.tar DATA_FLAGS

MODEL: vith14 (ViT-H/14 at 224) or vith16_448 (ViT-H/16 at 448). TASK and its DATA_FLAGS:

    in1k_linear     mean target-encoder token, linear layer; TFDS imagenet2012
                    --config.data.tfds_data_dir=/data/tensorflow_datasets
    in1k_1pct       the same on 1 % of the labels: ImageFolder root/{train,val}/<class>/ and the
                    list of the 1 % train images, one file name a line
                    --config.data.root=/data/imagenet --config.data.train_subset=/data/1percent.txt
    in1k_attentive  V-JEPA's attentive probe on the I-JEPA tokens (no published number)

The paper's IN-1K top-1 for the released checkpoints (IJEPA_SPEC §8.2, recalled there, not
verified): vith14 79.3 linear / 73.3 with 1 %; vith16_448 81.1 / 77.3. The paper's probe recipe
(optimizer, epochs, augmentation, a batch norm before the head) is not in the official code and
not known here: this probe is the plain mean-token linear layer with the attentive probe's
optimizer (20 epochs, AdamW, lr 1e-3 cosine), so the numbers it reaches may differ.
"""
from vjepa_jax.evaluation.configs import ijepa_eval_config


def get_config(arg=None):
    model, _, task = (arg or "").partition(",")
    if not model or not task:
        raise ValueError(f"configs/evals/ijepa.py needs ':MODEL,TASK' (e.g. ':vith14,in1k_linear'), "
                         f"got {arg!r}")
    return ijepa_eval_config(model, task)
