"""Frozen-evaluation configs (VJEPA_SPEC §7): one builder for every (model, dataset), and checks.

configs/evals/<model>_<dataset>.py are thin files calling `eval_config`. Fields:
  pretrained   workdir of a pretraining run or an official .pth.tar; '' = random-init encoder
  which        'target' (EMA encoder, what the reference evaluates) or 'encoder' (online)
  model        the encoder, built at the eval resolution with the pretraining clip length
  data         labelled source, segments x views protocol, global batch, train augmentation
  probe        attentive probe (heads 0 = the encoder's, form vjepa | vjepa2, num_blocks), compute
               dtype, feature dtype; `checkpoint` the probe that eval.val_only evaluates
  eval         logging, checkpoints kept, val_only, the published top-1 of the pair
  optim        AdamW, cosine lr from lr to final_lr and wd to final_weight_decay, clip 1.0
"""
import ml_collections

from vjepa_jax.config import base_config
from vjepa_jax.methods.ijepa import defaults as ijepa_defaults

# name: (size-table variant, resolution); every published model uses 16x16 patches, tubelets of
# 2 frames and 16-frame clips.
MODELS = {
    "vitl16": ("large", 224),
    "vith16": ("huge", 224),
    "vith16_384": ("huge", 384),
}

# Published attentive-probe top-1 of the released checkpoints (VJEPA_SPEC §8.1).
PUBLISHED = {
    "vitl16": {"k400": 80.8, "ssv2": 69.5, "in1k": 74.8, "places205": 60.3, "inat21": 67.8},
    "vith16": {"k400": 82.0, "ssv2": 71.4, "in1k": 75.9, "places205": 61.7, "inat21": 67.9},
    "vith16_384": {"k400": 81.9, "ssv2": 72.2, "in1k": 77.4, "places205": 62.8, "inat21": 72.6},
}

# name: data fields that differ from `base_eval_config` (VJEPA_SPEC §7.2-7.4).
DATASETS = {
    # Kinetics-400, "16x8x3": 16 frames x 8 segments x 3 views; CSV `path label`, labels 0..399.
    "k400": dict(source="csv", num_classes=400, num_segments=8, num_views=3, batch_size=256),
    # Something-Something v2, "16x2x3"; CSV labels 0..173.
    "ssv2": dict(source="csv", num_classes=174, num_segments=2, num_views=3, batch_size=256),
    "in1k": dict(source="tfds", tfds_name="imagenet2012", train_split="train",
                 val_split="validation", num_classes=1000),
    # TFDS has no Places205 (only places365_small): an ImageFolder root/{train,val}/<class>/.
    "places205": dict(source="imagefolder", train_split="train", val_split="val",
                      num_classes=205),
    "inat21": dict(source="tfds", tfds_name="i_naturalist2021", train_split="train",
                   val_split="val", num_classes=10000),
}
IMAGE_DEFAULTS = dict(num_segments=1, num_views=1, batch_size=1024, train_scale=(0.08, 1.0),
                      train_hflip=True)
WEIGHT_DECAY = {"k400": 0.01, "ssv2": 0.01, "in1k": 0.001, "places205": 0.001, "inat21": 0.001}


def base_eval_config():
    """Defaults shared by every eval: the reference probe recipe (VJEPA_SPEC §7.2)."""
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.method = "vjepa"  # the encoder's method (vjepa_jax/methods/); its config.model keys
    c.pretrained = ""
    c.which = "target"
    c.model = base_config().model
    c.model.attention = "auto"

    c.data = ml_collections.ConfigDict(dict(
        source="csv",  # csv | synthetic | tfds | imagefolder
        num_classes=0,
        require_all_classes=True,  # the train CSV must use every class 0..num_classes-1
        train_index=(),  # csv: official-format index files `path label`
        val_index=(),
        tfds_name="",
        tfds_data_dir="",
        root="",  # imagefolder: root/<split>/<class>/<image>
        train_subset="",  # imagefolder: text file of the train images to use (e.g. 1 % of IN-1K)
        train_split="train",
        val_split="val",
        synthetic_train_size=512,
        synthetic_val_size=256,
        synthetic_seed=1000,  # train videos use this seed, validation videos seed + 1
        frame_step=4,
        duration=0.0,
        num_segments=1,  # clips per video, their tokens concatenated (K400 8, SSv2 2)
        num_views=3,  # validation spatial views, softmax averaged (training uses 1)
        train_scale=(0.08, 1.0),  # random resized crop of each training clip
        train_ratio=(0.75, 4.0 / 3.0),
        train_hflip=False,
        batch_size=256,  # global
        val_batch_size=0,  # 0: batch_size
        num_workers=8,
        prefetch=2,
    ))

    c.probe = ml_collections.ConfigDict(dict(
        kind="attentive",  # attentive (V-JEPA's eval) | linear (mean token, I-JEPA's eval)
        num_heads=0,  # 0: the encoder's head count
        mlp_ratio=4.0,
        dtype="bfloat16",  # probe matmuls; params, LayerNorm and softmax stay float32
        feature_dtype="bfloat16",  # frozen encoder tokens handed to the probe
        # Add the encoder's fixed sin-cos position table to the frozen tokens before the probe.
        # Not in the reference, whose probe cannot see where a token is; see docs/EVAL.md.
        pos_embed=False,
        encoder_batch=0,  # >0: encode this many clips at a time (less memory for 8x3 clips)
        # Encode both splits once (validation transform, no augmentation) and train on the stored
        # tokens: small datasets only, one process (vjepa_jax/evaluation/feature_cache.py).
        cache_features=False,
        # 'vjepa' (V-JEPA 1's probe) or 'vjepa2': num_blocks - 1 self-attention blocks on the
        # tokens before the cross-attention (VJEPA_SPEC §9.2; its evals use num_blocks=4).
        form="vjepa",
        num_blocks=1,
        # With eval.val_only: the probe to evaluate, an eval workdir or an official probe file.
        checkpoint="",
    ))

    c.optim = ml_collections.ConfigDict(dict(
        epochs=20,
        ipe=0,  # steps per epoch; 0: train examples // batch_size
        warmup=0,
        start_lr=1e-3,
        lr=1e-3,
        final_lr=0.0,
        weight_decay=0.01,
        final_weight_decay=1e-6,
        clip_grad=1.0,
        betas=(0.9, 0.999),
        eps=1e-8,
    ))

    c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1))
    c.eval = ml_collections.ConfigDict(dict(
        log_every=50,
        keep_checkpoints=2,
        stop_after_epochs=0,  # stop (with a checkpoint) after this many epochs in this run
        # Evaluate probe.checkpoint on the validation split (reference protocol), no training.
        val_only=False,
        published_top1=0.0,  # the released probe's top-1 for this (model, dataset); 0: none
    ))
    return c


def eval_config(model, dataset):
    """The reference eval of `model` (MODELS key) on `dataset` (DATASETS key)."""
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; expected one of {sorted(MODELS)}")
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; expected one of {sorted(DATASETS)}")
    c = base_eval_config()
    variant, resolution = MODELS[model]
    c.model.update(variant=variant, crop_size=resolution, num_frames=16)
    if DATASETS[dataset]["source"] != "csv":
        c.data.update(IMAGE_DEFAULTS)
    c.data.update(DATASETS[dataset])
    c.optim.weight_decay = WEIGHT_DECAY[dataset]
    c.eval.published_top1 = PUBLISHED[model][dataset]
    return c


# I-JEPA (IJEPA_SPEC §6.4, §8.2): name: (variant, patch, resolution), and the paper's IN-1K top-1
# of the released checkpoints, linear probe on the mean target token / with 1 % of the labels
# (from the paper's tables as the spec recalls them, not verified there).
IJEPA_MODELS = {"vith14": ("huge", 14, 224), "vith16_448": ("huge", 16, 448)}
IJEPA_PUBLISHED = {"vith14": {"in1k_linear": 79.3, "in1k_1pct": 73.3},
                   "vith16_448": {"in1k_linear": 81.1, "in1k_1pct": 77.3}}
IJEPA_TASKS = ("in1k_linear", "in1k_1pct", "in1k_attentive")


def ijepa_eval_config(model, task):
    """Frozen eval of an I-JEPA encoder on ImageNet-1K: `task` in IJEPA_TASKS.

    in1k_linear: the mean target-encoder token through a linear layer, all labels;
    in1k_1pct: the same on the 1 % split (data.train_subset, ImageFolder);
    in1k_attentive: V-JEPA's attentive probe on the I-JEPA tokens.
    """
    if model not in IJEPA_MODELS:
        raise ValueError(f"unknown I-JEPA model {model!r}; expected one of {sorted(IJEPA_MODELS)}")
    if task not in IJEPA_TASKS:
        raise ValueError(f"unknown I-JEPA task {task!r}; expected one of {IJEPA_TASKS}")
    c = base_eval_config()
    c.method = "ijepa"
    variant, patch, resolution = IJEPA_MODELS[model]
    c.model = ijepa_defaults.model_defaults()
    c.model.update(variant=variant, patch_size=patch, crop_size=resolution)
    c.data.update(IMAGE_DEFAULTS)
    c.data.update(DATASETS["in1k"])
    c.optim.weight_decay = WEIGHT_DECAY["in1k"]
    if task != "in1k_attentive":
        c.probe.kind = "linear"
    if task == "in1k_1pct":  # 12-13 images per class: the ImageFolder and its subset file
        c.data.update(source="imagefolder", train_split="train", val_split="val")
    return c


def _check(ok, key, value, expected):
    if not ok:
        raise ValueError(f"config.{key}={value!r}: expected {expected}")


def validate(c):
    """Raise one ValueError naming the first eval config key with an unusable value."""
    d, o, p = c.data, c.optim, c.probe
    _check(c.which in ("target", "encoder"), "which", c.which, "'target' or 'encoder'")
    _check(d.source in ("csv", "synthetic", "tfds", "imagefolder"), "data.source", d.source,
           "csv, synthetic, tfds or imagefolder")
    _check(isinstance(d.num_classes, int) and d.num_classes > 0, "data.num_classes",
           d.num_classes, "a positive integer")
    _check(d.source != "csv" or (len(d.val_index) > 0 and
                                 (len(d.train_index) > 0 or c.eval.val_only)),
           "data.train_index/val_index", (d.train_index, d.val_index),
           "index files for both splits when data.source='csv' (eval.val_only: val_index only)")
    _check(d.source != "tfds" or bool(d.tfds_name), "data.tfds_name", d.tfds_name,
           "a TFDS dataset name when data.source='tfds'")
    _check(d.source != "imagefolder" or bool(d.root), "data.root", d.root,
           "the image folder root when data.source='imagefolder'")
    for key in ("num_segments", "num_views", "batch_size"):
        _check(isinstance(d[key], int) and d[key] > 0, f"data.{key}", d[key], "a positive integer")
    _check(d.source not in ("tfds", "imagefolder") or d.num_segments == 1, "data.num_segments",
           d.num_segments, "1 for image datasets")
    _check(len(d.train_scale) == 2 and 0 < d.train_scale[0] <= d.train_scale[1] <= 1,
           "data.train_scale", d.train_scale, "(lo, hi) with 0 < lo <= hi <= 1")
    for key in ("epochs",):
        _check(isinstance(o[key], int) and o[key] > 0, f"optim.{key}", o[key], "a positive integer")
    finite = lambda x: isinstance(x, (int, float)) and abs(x) < float("inf")  # False for NaN
    _check(finite(o.lr) and o.lr > 0, "optim.lr", o.lr, "a finite number > 0")
    for key in ("start_lr", "final_lr"):
        _check(finite(o[key]) and o[key] >= 0, f"optim.{key}", o[key], "a finite number >= 0")
    _check(o.clip_grad is None or o.clip_grad >= 0, "optim.clip_grad", o.clip_grad, ">= 0")
    for key in ("dtype", "feature_dtype"):
        _check(p[key] in ("float32", "bfloat16", "float16"), f"probe.{key}", p[key],
               "float32, bfloat16 or float16")
    for key in ("cache_features", "pos_embed"):
        _check(isinstance(p[key], bool), f"probe.{key}", p[key], "True or False")
    _check(p.kind in ("attentive", "linear"), "probe.kind", p.kind, "'attentive' or 'linear'")
    _check(p.form in ("vjepa", "vjepa2"), "probe.form", p.form, "'vjepa' or 'vjepa2'")
    _check(isinstance(p.num_blocks, int) and p.num_blocks >= 1, "probe.num_blocks", p.num_blocks,
           "an integer >= 1")
    _check(p.form == "vjepa2" or p.num_blocks == 1, "probe.num_blocks", p.num_blocks,
           "1 with probe.form='vjepa' (blocks before the cross-attention are probe.form='vjepa2')")
    _check(isinstance(c.eval.val_only, bool), "eval.val_only", c.eval.val_only, "True or False")
    _check(not c.eval.val_only or bool(p.checkpoint), "probe.checkpoint", p.checkpoint,
           "the probe to evaluate (an eval workdir or an official probe file) with "
           "eval.val_only=True")
    _check(c.eval.val_only or not p.checkpoint, "probe.checkpoint", p.checkpoint,
           "'' unless eval.val_only=True (a given probe is evaluated, never trained further)")
    _check(not d.train_subset or d.source == "imagefolder", "data.train_subset", d.train_subset,
           "'' unless data.source='imagefolder'")
    _check(c.eval.keep_checkpoints > 0, "eval.keep_checkpoints", c.eval.keep_checkpoints, "> 0")
