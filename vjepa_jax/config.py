"""Default pretraining config (the reference ViT-L/16 recipe) and config validation."""
import importlib.util
import logging
import os
import sys

import ml_collections
from absl import app, flags
from absl import logging as absl_logging


def mask_config(num_blocks, spatial_scale, *, kind="multiblock"):
    """One mask generator; `num_context`/`num_target` 0 means derived from the reference stats."""
    return ml_collections.ConfigDict(dict(
        kind=kind,  # 'multiblock' | 'tube' | 'causal'
        num_blocks=num_blocks,
        spatial_scale=(spatial_scale, spatial_scale),
        temporal_scale=(1.0, 1.0),
        aspect_ratio=(0.75, 1.5),
        max_temporal_keep=1.0,
        tube_ratio=0.9,  # kind='tube': fraction of spatial positions hidden
        context_frames=1,  # kind='causal': context = first N time steps (tubelet units)
        num_context=0,
        num_target=0,
    ))


def base_config():
    """Reference V-JEPA pretraining settings (VJEPA_SPEC §4.1) for ViT-L/16 at 16x224."""
    c = ml_collections.ConfigDict()
    c.seed = 234

    c.model = ml_collections.ConfigDict(dict(
        variant="large",  # tiny | small | base | large | huge | giant
        depth=0,  # 0: from the size table
        width=0,  # 0: from the size table
        num_heads=0,  # 0: from the size table
        patch_size=16,
        tubelet_size=2,
        num_frames=16,
        crop_size=224,
        uniform_power=True,
        pred_width=384,
        pred_depth=12,
        pred_num_heads=0,  # 0: the encoder's head count, as the reference does
        attention="auto",  # auto | xla | cudnn
        dtype="bfloat16",  # compute dtype; params are always float32
        remat="none",  # none | full | dots (rematerialisation policy per block)
        scan_blocks=False,  # compile one block and loop over the depth (faster compiles)
    ))

    c.masks = [mask_config(8, 0.15), mask_config(2, 0.7)]
    # Static token counts: 'random' keeps a random subset of an oversized context/target set,
    # 'first' keeps the lowest token indices like the reference's batch-min truncation.
    c.mask_truncation = "random"
    c.mask_count_multiple = 64  # round derived counts so attention lengths suit flash kernels
    c.mask_reference_batch = 24  # per-GPU batch whose batch-min statistics the counts follow

    c.data = ml_collections.ConfigDict(dict(
        source="csv",  # csv | synthetic | tfds
        index=(),  # CSV (`path label`) or .npy index files
        weights=(),  # optional sampling weight per index file
        tfds_name="",
        tfds_split="train",
        batch_size=3072,  # global batch, independent of the number of devices
        num_workers=8,
        prefetch=2,
        frame_step=4,
        duration=0.0,  # seconds; >0 overrides frame_step
        num_clips=1,
        random_resize_scale=(0.3, 1.0),
        random_resize_aspect_ratio=(0.75, 1.35),
        hflip=True,
        max_skip_fraction=0.01,  # stop if more than this fraction of videos is unreadable
        synthetic_size=4096,  # number of generated videos when source='synthetic'
        num_views=3,  # evaluation: spatial views per clip
        read_threads=0,  # Grain read threads (0: Grain's default)
        decode_threads=0,  # PyAV decode threads per video (0: FFmpeg's choice)
        seek=True,  # start decoding at the keyframe before a clip, not at the video's start
        tfds_data_dir="",
        tfds_video_key="",  # feature holding the frames ('' : auto-detect)
        tfds_label_key="label",
    ))

    c.optim = ml_collections.ConfigDict(dict(
        epochs=300,
        ipe=300,  # iterations per (virtual) epoch
        ipe_scale=1.25,  # schedules are laid out over ipe_scale * epochs * ipe steps
        warmup=40,  # epochs
        start_lr=2e-4,
        lr=6.25e-4,
        final_lr=1e-6,
        weight_decay=0.04,
        final_weight_decay=0.4,
        clip_grad=10.0,
        ema=(0.998, 1.0),
        betas=(0.9, 0.999),
        eps=1e-8,
    ))

    c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1))

    c.train = ml_collections.ConfigDict(dict(
        log_every=10,
        checkpoint_every=300,
        keep_checkpoints=3,
        stop_after=0,  # stop (with a checkpoint) after this many steps in this run; 0: run to the end
        max_skipped_steps=100,  # abort when more steps than this had non-finite gradients
        # warn when target_rank falls below this fraction of its first logged value (0: never)
        rank_warning=0.5,
        eval_every=0,  # steps between online evaluations (k-NN + linear probe); 0: off
    ))

    # The labelled split and settings of the online k-NN / linear probe (vjepa_jax/online_eval.py).
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
    return c


def _check(ok, key, value, expected):
    if not ok:
        raise ValueError(f"config.{key}={value!r}: expected {expected}")


def validate(c):
    """Raise one ValueError naming the first config key with an unusable value."""
    m = c.model
    _check(m.dtype in ("float32", "bfloat16", "float16"), "model.dtype", m.dtype,
           "float32, bfloat16 or float16")
    for key in ("patch_size", "tubelet_size", "num_frames", "crop_size", "pred_width", "pred_depth"):
        _check(isinstance(m[key], int) and m[key] > 0, f"model.{key}", m[key], "a positive integer")
    _check(len(c.masks) >= 1, "masks", c.masks, "at least one mask generator")
    for i, mask in enumerate(c.masks):
        _check(mask.kind in ("multiblock", "tube", "causal"), f"masks[{i}].kind", mask.kind,
               "multiblock, tube or causal")
    _check(c.mask_truncation in ("random", "first"), "mask_truncation", c.mask_truncation,
           "'random' or 'first'")
    _check(c.data.source in ("csv", "synthetic", "tfds"), "data.source", c.data.source,
           "csv, synthetic or tfds")
    _check(c.data.source != "csv" or len(c.data.index) > 0, "data.index", c.data.index,
           "one or more index files when data.source='csv'")
    _check(isinstance(c.data.batch_size, int) and c.data.batch_size > 0, "data.batch_size",
           c.data.batch_size, "a positive integer (the global batch)")
    _check(c.data.num_workers >= 0, "data.num_workers", c.data.num_workers, ">= 0")
    for key in ("log_every", "checkpoint_every", "keep_checkpoints"):
        _check(c.train[key] > 0, f"train.{key}", c.train[key], "a positive integer")
    _check(c.train.eval_every >= 0, "train.eval_every", c.train.eval_every, ">= 0 (0: off)")
    _check(0 <= c.train.rank_warning < 1, "train.rank_warning", c.train.rank_warning,
           "a fraction in [0, 1) (0: never warn)")


def load_config_file(spec):
    """get_config(ARG) of a config file given as 'path.py' or 'path.py:ARG' (as --config takes)."""
    path, _, arg = spec.partition(":")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config file {path} not found")
    module_spec = importlib.util.spec_from_file_location("vjepa_config_file", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.get_config(arg or None)


def run_program(main, program, argv=None):
    """absl app.run(main), with config-file and --config.* override errors reported in one line.

    The flags are parsed here, so a bad config file, override or flag ends in one
    `PROGRAM: error: ...` line instead of a traceback.
    """
    argv = sys.argv if argv is None else argv
    exit_if_config_file_missing(argv, program)
    try:
        remaining = flags.FLAGS(argv)  # parse here so a bad override is not a traceback from absl
    except AttributeError as e:  # ml_collections: an override names a key the config lacks
        detail = str(e).strip("'\"").replace("\\'", "'").replace("\\n", " ")
        sys.exit(f"{program}: error: unknown config key in an override: {detail}")
    except KeyError as e:  # ml_collections: an override goes through a section the config lacks
        sys.exit(f"{program}: error: unknown config section in an override: {e.args[0]}")
    except (flags.Error, TypeError, ValueError) as e:
        sys.exit(f"{program}: error: {e}")
    app.run(main, argv=argv, flags_parser=lambda _: remaining)


def run_workdir_program(run, program):
    """The command line of train and eval: `run(FLAGS.config, FLAGS.workdir)` via run_program.

    Requires --config and --workdir, starts jax.distributed when launched as one of several
    processes, and turns the errors that mean bad input (ValueError, FileNotFoundError,
    FloatingPointError) into one line and exit status 1. The library's loggers (`vjepa_jax.*`)
    log at INFO, everything else (Orbax logs every file it writes) at WARNING.
    """
    from vjepa_jax import distributed  # here: config files import this module without jax

    def main(args):
        if len(args) > 1:
            raise app.UsageError(f"unexpected arguments: {args[1:]}")
        if flags.FLAGS.config is None or flags.FLAGS.workdir is None:
            raise app.UsageError("--config and --workdir are required")
        distributed.initialize_from_flags()
        absl_logging.set_verbosity(absl_logging.WARNING)  # Orbax logs every file it writes at INFO
        logging.getLogger("vjepa_jax").setLevel(logging.INFO)
        try:
            run(flags.FLAGS.config, flags.FLAGS.workdir)
        except (ValueError, FileNotFoundError, FloatingPointError) as e:
            logging.getLogger("vjepa_jax").error("%s", e)
            sys.exit(f"{program}: error: {e}")

    run_program(main, program)


def exit_if_config_file_missing(argv, program):
    """Exit with one line when --config names no file (ml_collections would print a traceback)."""
    for i, arg in enumerate(argv):
        if arg == "--config" and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith("--config="):
            value = arg.split("=", 1)[1]
        else:
            continue
        path = value.split(":", 1)[0]
        if not os.path.isfile(path):
            sys.exit(f"{program}: error: config file {path} not found (from --config {value})")
