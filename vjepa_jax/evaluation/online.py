"""Cheap online evaluation: k-NN and a linear probe on mean-pooled frozen features, and
optionally ridge regression on all tokens (`online_eval.token_ridge`).

Run every `train.eval_every` steps of pretraining (seconds for the demo) and by the program
`python -m vjepa_jax.online_eval`. Every call also reports the same numbers for a random-init
encoder of the same architecture (computed once and cached), so a number always comes with its
baseline. The labelled split is small and fixed: generated videos when the pretraining data is
synthetic (seeds distinct from the pretraining videos), else the first entries of labelled CSV
index files (`online_eval.train_index`, `online_eval.val_index`), one centre view of one clip
per video. Decoded clips are cached.

Quiet by default (train.py calls it every `train.eval_every` steps); `progress=True` shows tqdm
bars over the feature batches and the readouts, and `summary` turns the scores into one line per
readout beside its random-init baseline (the program `vjepa_jax/online_eval.py` does both).
"""
import functools
import logging

import jax
import jax.numpy as jnp
import numpy as np
import tqdm
from jax.sharding import NamedSharding, PartitionSpec as P

from vjepa_jax import preprocess
from vjepa_jax.data import index as index_lib
from vjepa_jax.data import transforms
from vjepa_jax.data import video as video_lib
from vjepa_jax.data import synthetic
from vjepa_jax.data.synthetic import SyntheticVideos
from vjepa_jax.evaluation import readouts
from vjepa_jax.models import vit

_log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- labelled split
@functools.lru_cache(maxsize=4)
def _synthetic_split(num, frames, size, seed):
    videos = SyntheticVideos(num, frames, size, size, seed)
    items = [videos[i] for i in range(num)]
    return (np.stack([x["video"] for x in items]),
            np.asarray([int(x["label"]) for x in items], np.int32))


@functools.lru_cache(maxsize=4)
def _csv_split(files, num, frames, frame_step, size):
    """First `num` usable videos of the index files: clips uint8 [num, T, S, S, 3], labels [num]."""
    idx = index_lib.read_index(list(files))
    rng = np.random.default_rng(0)
    clips, labels, skipped = [], [], 0
    for path, label in zip(idx.paths, idx.labels):
        if len(clips) == num:
            break
        try:
            clip = video_lib.load_clips(path, rng, frames_per_clip=frames, frame_step=frame_step,
                                        num_clips=1, random_clip_sampling=False,
                                        allow_overlap=True)[0]
        except video_lib.VideoError as e:
            _log.warning("online eval: skipping %s: %s", path, e)
            skipped += 1
            continue
        clips.append(transforms.eval_views(clip, size, num_views=1)[0])
        labels.append(int(label))
    if len(clips) < num:
        raise ValueError(f"online_eval: only {len(clips)} usable videos in {list(files)}, "
                         f"{num} requested")
    if skipped:
        _log.warning("online eval: %d unusable videos skipped in %s", skipped, list(files))
    return np.stack(clips), np.asarray(labels, np.int32)


def labelled_split(config, opts):
    """((train clips, labels), (val clips, labels), num_classes) for the online evaluation.

    Generated single images (model.num_frames 1) are labelled by shape alone (4 classes).
    """
    m = config.model
    source = opts.source
    if source == "auto":
        source = "synthetic" if config.data.source == "synthetic" else "csv"
    if source == "synthetic":
        train = _synthetic_split(opts.num_train, m.num_frames, m.crop_size, opts.seed)
        val = _synthetic_split(opts.num_val, m.num_frames, m.crop_size, opts.seed + 1)
        if m.num_frames == 1:  # images: the motion half of the label is not in a single frame
            shape = lambda split: (split[0], synthetic.label_factors(split[1])["shape"])
            return shape(train), shape(val), len(synthetic.SHAPES)
        return train, val, SyntheticVideos.num_classes
    if source != "csv":
        raise ValueError(f"online_eval.source={source!r}: expected auto, synthetic or csv")

    def files(value, key):
        value = (value,) if isinstance(value, str) else tuple(value)
        value = tuple(v for v in value if v)
        if not value:
            raise ValueError(f"online_eval.{key} is empty: labelled index files are needed when "
                             "the pretraining data is not synthetic")
        return value

    step = config.data.frame_step
    train = _csv_split(files(opts.train_index, "train_index"), opts.num_train, m.num_frames,
                       step, m.crop_size)
    val = _csv_split(files(opts.val_index, "val_index"), opts.num_val, m.num_frames, step,
                     m.crop_size)
    num_classes = opts.num_classes or int(max(train[1].max(), val[1].max())) + 1
    return train, val, num_classes


# ----------------------------------------------------------------------------- features
@functools.partial(jax.jit, static_argnums=(0, 3))
def _features(encoder, params, clips, pool):
    tokens = encoder.apply({"params": params}, preprocess.normalize(clips)).astype(jnp.float32)
    return tokens.mean(axis=1) if pool else tokens


def _mesh_of(params):
    sharding = getattr(jax.tree.leaves(params)[0], "sharding", None)
    if isinstance(sharding, NamedSharding) and sharding.mesh.size > 1:
        return sharding.mesh
    return None


def clip_features(encoder, params, clips, batch_size=64, pool=True, progress=None):
    """Mean over tokens of the encoder output: clips uint8 [N, T, S, S, 3] -> float32 [N, D].

    With pool=False the tokens themselves: float32 [N, tokens, D]. `progress`: None, or the
    description of a tqdm bar over the batches.

    With params on a multi-device mesh the batches are split over all its devices; every process
    must pass the same clips (the split is small and deterministic).
    """
    mesh = _mesh_of(params)
    if mesh is not None:
        batch_size = -(-batch_size // mesh.size) * mesh.size
        data_sharding = NamedSharding(mesh, P(mesh.axis_names))
        # Gathered onto every device, so each process can read the whole batch.
        gather = jax.jit(lambda f: f, out_shardings=NamedSharding(mesh, P()))
    out = []
    starts = range(0, len(clips), batch_size)
    if progress:
        starts = tqdm.tqdm(starts, desc=progress, unit="batch", dynamic_ncols=True)
    for start in starts:
        x = clips[start:start + batch_size]
        n = len(x)
        if n < batch_size:  # pad: one compiled shape for every batch
            x = np.concatenate([x, np.zeros((batch_size - n,) + x.shape[1:], x.dtype)])
        if mesh is not None:
            x = jax.make_array_from_callback(x.shape, data_sharding, lambda i, x=x: x[i])
        feats = _features(encoder, params, x, pool)
        if mesh is not None:
            feats = gather(feats)
        out.append(np.asarray(jax.device_get(feats))[:n])
    return np.concatenate(out)


# ----------------------------------------------------------------------------- classifiers
def _scores(encoder, params, train, val, num_classes, opts, progress=None):
    """The readouts of one encoder; `progress`: None, or the encoder's name in tqdm bars."""
    bar = lambda split: progress and f"{progress}: {split} features"
    tx = clip_features(encoder, params, train[0], opts.batch_size, pool=not opts.token_ridge,
                       progress=bar(f"{len(train[0])} train"))
    vx = clip_features(encoder, params, val[0], opts.batch_size, pool=not opts.token_ridge,
                       progress=bar(f"{len(val[0])} val"))
    ty, vy = jnp.asarray(train[1]), np.asarray(val[1])
    steps = tqdm.tqdm(total=2 + bool(opts.token_ridge), desc=f"{progress}: readouts",
                      unit="readout", dynamic_ncols=True, disable=not progress)
    out = {}
    if opts.token_ridge:
        steps.set_postfix_str("ridge on all tokens")
        ridge, _, _ = readouts.ridge_predict(tx.reshape(len(tx), -1), train[1], vx.reshape(len(vx), -1),
                                    num_classes=num_classes)
        out["ridge_top1"] = 100.0 * float(np.mean(ridge == vy))
        tx, vx = tx.mean(axis=1), vx.mean(axis=1)
        steps.update()
    steps.set_postfix_str("k-NN")
    knn = readouts.knn_predict(tx, ty, vx, k=opts.k, num_classes=num_classes,
                      temperature=opts.knn_temperature)
    knn_top1 = 100.0 * float(np.mean(np.asarray(knn) == vy))
    steps.update()
    steps.set_postfix_str("linear")
    lin = readouts.linear_predict(tx, ty, vx, num_classes=num_classes, steps=opts.linear_steps,
                         lr=opts.linear_lr, weight_decay=opts.linear_weight_decay)
    linear_top1 = 100.0 * float(np.mean(np.asarray(lin) == vy))
    steps.update()
    steps.close()
    return {"knn_top1": knn_top1, "linear_top1": linear_top1,
            "feature_std": float(np.mean(np.std(tx, axis=0))), **out}


_BASELINES = {}  # (encoder, seed, options) -> scores of the random-init encoder; fixed per run


def random_init_scores(encoder, seed, train, val, num_classes, opts, progress=False):
    """_scores of a random-init encoder of the same architecture, computed once per setting."""
    key = (encoder, int(seed), opts.to_json())
    if key not in _BASELINES:
        _BASELINES[key] = _scores(encoder, vit.random_init_params(encoder, seed), train, val,
                                  num_classes, opts, progress="random init" if progress else None)
    return _BASELINES[key]


def online_eval(encoder, params, config, progress=False):
    """{'knn_top1', 'linear_top1', 'feature_std'} (percent) of encoder params, plus '*_random_init'.

    With `online_eval.token_ridge` also 'ridge_top1': `ridge_predict` on every token of each clip.

    `encoder` is the VisionTransformer, `params` its parameters (the EMA target encoder is what
    frozen evaluation uses), `config` the pretraining config (model, data, optional online_eval).
    `progress=True` shows tqdm bars (stderr); the default is quiet, for calls during training.
    """
    opts = config.online_eval
    train, val, num_classes = labelled_split(config, opts)
    out = _scores(encoder, params, train, val, num_classes, opts,
                  progress="pretrained" if progress else None)
    if opts.random_baseline:
        base = random_init_scores(encoder, config.seed, train, val, num_classes, opts, progress)
        out.update({f"{k}_random_init": v for k, v in base.items()})
    return out


# The readouts in the order `summary` prints them. Ridge on all tokens (`online_eval.token_ridge`)
# is the readout of the demo configs, the one the README reports: unlike the mean-pooled two it
# can read where things are, which the demo's labels (shape x motion direction) need.
READOUTS = (("ridge_top1", "ridge on all tokens (the demo's readout, the one README reports)"),
            ("knn_top1", "k-NN on mean-pooled tokens"),
            ("linear_top1", "linear on mean-pooled tokens"))


def summary(scores):
    """One human line per readout of online_eval's dict, beside its random-init baseline, e.g.
    'ridge on all tokens (...): 30.5 % vs 26.9 % random init (+3.6)', then the feature std."""
    lines = []
    for key, name in READOUTS:
        if key not in scores:
            continue
        line = f"{name}: {scores[key]:.1f} %"
        base = scores.get(f"{key}_random_init")
        if base is not None:
            line += f" vs {base:.1f} % random init ({scores[key] - base:+.1f})"
        lines.append(line)
    line = f"feature std (collapse if -> 0): {scores['feature_std']:.3f}"
    if "feature_std_random_init" in scores:
        line += f" vs {scores['feature_std_random_init']:.3f} random init"
    return lines + [line]
