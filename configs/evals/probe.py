"""The reference frozen evaluation (VJEPA_SPEC §7) of a released model on a dataset: `:MODEL,DATASET`.

    python -m vjepa_jax.eval --config configs/evals/probe.py:MODEL,DATASET --workdir DIR \
        --config.pretrained=/ckpt/MODEL.pth.tar DATA_FLAGS

MODEL is vitl16, vith16 or vith16_384 (ViT-L/16 and ViT-H/16 at 224, ViT-H/16 at 384; 16-frame
clips); DATASET and the DATA_FLAGS it needs:

    k400       Kinetics-400, 16 frames x 8 segments x 3 views, global batch 256
               --config.data.train_index=/data/k400_train.csv --config.data.val_index=/data/k400_val.csv
    ssv2       Something-Something v2, 16 frames x 2 segments x 3 views, global batch 256
               --config.data.train_index=/data/ssv2_train.csv --config.data.val_index=/data/ssv2_val.csv
    in1k       ImageNet-1K (TFDS imagenet2012), images repeated to 16 frames, global batch 1024
               --config.data.tfds_data_dir=/data/tensorflow_datasets
    places205  Places205 (ImageFolder root/{train,val}/<class>/), global batch 1024
               --config.data.root=/data/places205
    inat21     iNaturalist 2021 (TFDS i_naturalist2021), global batch 1024
               --config.data.tfds_data_dir=/data/tensorflow_datasets

Expected top-1 (%) with the released checkpoints after 20 epochs (facebookresearch/jepa README;
vjepa_jax/evaluation/configs.py: PUBLISHED):

    config argument          top-1
    vitl16,k400              80.8
    vitl16,ssv2              69.5
    vitl16,in1k              74.8
    vitl16,places205         60.3
    vitl16,inat21            67.8
    vith16,k400              82.0
    vith16,ssv2              71.4
    vith16,in1k              75.9
    vith16,places205         61.7
    vith16,inat21            67.9
    vith16_384,k400          81.9
    vith16_384,ssv2          72.2
    vith16_384,in1k          77.4
    vith16_384,places205     62.8
    vith16_384,inat21        72.6

Printed per epoch and written to DIR/eval_metrics.jsonl. `eval.published_top1` holds the value
of the pair. To check a released probe against it (validation split only, nothing trained;
docs/EVAL.md, "Released probes"):

    python -m vjepa_jax.eval --config configs/evals/probe.py:vitl16,k400 \
        --config.pretrained=/ckpt/vitl16.pth.tar --config.data.val_index=/data/k400_val.csv \
        --config.eval.val_only=True --config.probe.checkpoint=/ckpt/k400_probe.pth.tar
"""
from vjepa_jax.evaluation.configs import eval_config


def get_config(arg=None):
    model, _, dataset = (arg or "").partition(",")
    if not model or not dataset:
        raise ValueError(f"configs/evals/probe.py needs ':MODEL,DATASET' (e.g. ':vitl16,k400'), "
                         f"got {arg!r}")
    return eval_config(model, dataset)
