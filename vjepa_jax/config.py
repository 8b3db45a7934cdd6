"""The pretraining config: shared sections, the method's reference defaults, and validation.

`base_config(method)` is what every configs/pretrain/*.py starts from: the method's reference
settings (model, masks, optimizer: vjepa_jax/methods/<method>/defaults.py) plus the sections
every method shares (data, mesh, train, online_eval).
"""
import importlib.util
import math
import os
import traceback

import ml_collections

from vjepa_jax import methods, optim


def base_config(method="vjepa"):
    """Reference pretraining settings of `method` (V-JEPA: VJEPA_SPEC §4.1, ViT-L/16 at 16x224)."""
    c = ml_collections.ConfigDict()
    c.seed = 234
    c.method = method

    c.data = ml_collections.ConfigDict(dict(
        source="csv",  # csv | synthetic | tfds | imagefolder
        index=(),  # CSV (`path label`) or .npy index files
        weights=(),  # optional sampling weight per index file: a weighted mixture (docs/DATA.md)
        tfds_name="",
        tfds_split="train",
        batch_size=3072,  # global batch, independent of the number of devices
        num_workers=8,
        prefetch=2,
        frame_step=4,
        duration=0.0,  # seconds; >0 overrides frame_step
        fps=0,  # >0: frames at this rate, frame step ceil(video fps) // fps (V-JEPA 2: 4)
        num_clips=1,
        random_resize_scale=(0.3, 1.0),
        random_resize_aspect_ratio=(0.75, 1.35),
        hflip=True,
        max_skip_fraction=0.01,  # stop if more than this fraction of videos is unusable
        synthetic_size=4096,  # number of generated videos when source='synthetic'
        read_threads=0,  # Grain read threads (0: Grain's default)
        decode_threads=0,  # PyAV decode threads per video (0: FFmpeg's choice)
        seek=True,  # start decoding at the keyframe before a clip, not at the video's start
        tfds_data_dir="",
        tfds_video_key="",  # feature holding the frames ('' : auto-detect)
        tfds_label_key="label",
        root="",  # imagefolder: images under root/<split>/<class>/
        split="train",
    ))

    c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1))

    c.train = ml_collections.ConfigDict(dict(
        log_every=10,
        checkpoint_every=300,
        keep_checkpoints=3,
        # A fresh run starts from this workdir's latest checkpoint (weights, target, AdamW
        # moments; the step restarts at 0): V-JEPA 2's cooldown at a new clip shape.
        init_from="",
        init_from_step=0,  # 0: the latest checkpoint of train.init_from
        stop_after=0,  # stop (with a checkpoint) after this many steps in this run; 0: run to the end
        max_skipped_steps=100,  # abort when more steps than this had non-finite gradients
        # warn when target_rank falls below this fraction of its first logged value (0: never)
        rank_warning=0.5,
        eval_every=0,  # steps between online evaluations (k-NN + linear probe); 0: off
        # JAX's persistent compilation cache: a restart reuses the compiled step ('' = off).
        compilation_cache="~/.cache/vjepa_jax/compilation_cache",
    ))

    # The labelled split and settings of the online k-NN / linear probe (vjepa_jax/evaluation/online.py).
    c.online_eval = ml_collections.ConfigDict(dict(
        source="auto",  # auto (= synthetic when data.source is synthetic, else csv) | synthetic | csv
        train_index="",  # csv: labelled index files `path label`
        val_index="",
        num_classes=0,  # csv: 0 = 1 + the largest label seen; synthetic: 16
        num_train=512,
        num_val=256,
        seed=2000,  # synthetic videos: train seed, validation seed + 1
        batch_size=64,
        k=20,
        knn_temperature=0.07,
        linear_steps=300,
        linear_lr=1e-2,
        linear_weight_decay=1e-4,
        # Also ridge regression on all tokens of each clip (position-aware; holds num_train x
        # tokens x width float32 on the host: 200 MB for the demo, ~3 GB per 512 clips at ViT-L).
        token_ridge=False,
        random_baseline=True,
    ))
    methods.get(method).defaults(c)  # model, masks, optim; may change data defaults
    return c


def _check(ok, key, value, expected):
    if not ok:
        raise ValueError(f"config.{key}={value!r}: expected {expected}")


def validate(c):
    """Raise one ValueError naming the first config key with an unusable value."""
    _check(c.method in methods.names(), "method", c.method, f"one of {methods.names()}")
    methods.get(c.method).validate(c)
    _check(c.data.source in ("csv", "synthetic", "tfds", "imagefolder"), "data.source",
           c.data.source, "csv, synthetic, tfds or imagefolder")
    _check(c.data.source != "imagefolder" or bool(c.data.root), "data.root", c.data.root,
           "the image folder root when data.source='imagefolder'")
    _check(c.data.source != "csv" or len(c.data.index) > 0, "data.index", c.data.index,
           "one or more index files when data.source='csv'")
    # A weighted mixture (docs/DATA.md, "Weighted mixtures"): one weight > 0 per index file.
    files = (c.data.index,) if isinstance(c.data.index, str) else tuple(c.data.index)
    weights = tuple(c.data.weights)
    _check(c.data.source != "csv" or not weights or (
        len(weights) == len(files) and all(_number(w) and w > 0 for w in weights)),
        "data.weights", c.data.weights,
        f"() or one finite number > 0 per data.index file ({len(files)} files)")
    _check(isinstance(c.data.batch_size, int) and c.data.batch_size > 0, "data.batch_size",
           c.data.batch_size, "a positive integer (the global batch)")
    _check(c.data.num_workers >= 0, "data.num_workers", c.data.num_workers, ">= 0")
    _check(isinstance(c.data.fps, int) and c.data.fps >= 0, "data.fps", c.data.fps,
           "an integer >= 0 (0: use data.frame_step)")
    for key in ("log_every", "checkpoint_every", "keep_checkpoints"):
        _check(c.train[key] > 0, f"train.{key}", c.train[key], "a positive integer")
    _check(c.train.eval_every >= 0, "train.eval_every", c.train.eval_every, ">= 0 (0: off)")
    _check(0 <= c.train.rank_warning < 1, "train.rank_warning", c.train.rank_warning,
           "a fraction in [0, 1) (0: never warn)")
    _check(_number(c.data.max_skip_fraction) and 0 <= c.data.max_skip_fraction <= 1,
           "data.max_skip_fraction", c.data.max_skip_fraction, "a fraction in [0, 1]")
    # A NaN or negative rate trains nothing useful: lr=nan wrote an all-NaN checkpoint and
    # exited 0. start_lr and final_lr may be 0 (warm up from zero, decay to zero).
    o = c.optim
    _check(_number(o.lr) and o.lr > 0, "optim.lr", o.lr, "a finite number > 0")
    for key in ("start_lr", "final_lr", "weight_decay", "final_weight_decay"):
        _check(_number(o[key]) and o[key] >= 0, f"optim.{key}", o[key], "a finite number >= 0")
    _check(len(o.ema) == 2 and all(_number(m) and 0 <= m <= 1 for m in o.ema), "optim.ema",
           o.ema, "(start, end) momentums in [0, 1]")
    _check(o.get("schedule", "warmup_cosine") in optim.SCHEDULES, "optim.schedule",
           o.get("schedule"), f"one of {optim.SCHEDULES}")
    k = o.get("accum_steps", 1)
    _check(isinstance(k, int) and not isinstance(k, bool) and k > 0
           and c.data.batch_size % k == 0, "optim.accum_steps", k,
           f"a positive integer dividing data.batch_size={c.data.batch_size} (micro-batches "
           "per update)")
    _check(isinstance(c.train.init_from, str), "train.init_from", c.train.init_from,
           "a workdir path ('' : start from random init)")


def _number(x):
    """A real, finite number (not a bool, a string or NaN)."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def with_defaults(saved):
    """A config saved by an earlier version (a dict), completed with today's defaults.

    Keys added since it was saved take their default value, so stored runs stay readable.
    """
    c = base_config(saved.get("method", "vjepa"))
    c.update(saved)
    if isinstance(saved.get("masks"), list):  # V-JEPA: one entry per mask generator
        c.masks = [ml_collections.ConfigDict(m) for m in saved["masks"]]
    return c


class ConfigFileError(ValueError):
    """A config file fails to load: names the file and the line."""


def load_config_file(spec):
    """get_config(ARG) of a config file given as 'path.py' or 'path.py:ARG' (as --config takes).

    Any failure (syntax, an exception in the file or its get_config, no get_config) raises one
    ConfigFileError naming the file and, where there is one, the line.
    """
    path, _, arg = spec.partition(":")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config file {path} not found")
    try:
        module_spec = importlib.util.spec_from_file_location("vjepa_config_file", path)
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
        if not callable(getattr(module, "get_config", None)):
            raise ConfigFileError(f"config file {path}: defines no get_config(arg)")
        return module.get_config(arg or None)
    except ConfigFileError:
        raise
    except SyntaxError as e:
        raise ConfigFileError(f"config file {path}, line {e.lineno}: SyntaxError: {e.msg}") from e
    except Exception as e:  # whatever the file raises: name the innermost line of the file
        lines = [f.lineno for f in traceback.extract_tb(e.__traceback__)
                 if os.path.abspath(f.filename) == os.path.abspath(path)]
        at = f", line {lines[-1]}" if lines else ""
        raise ConfigFileError(f"config file {spec}{at}: {type(e).__name__}: {e}") from e
