"""Cheap online evaluation: k-NN and a linear probe on mean-pooled frozen features, and
optionally ridge regression on all tokens (`online_eval.token_ridge`).

Meant to run every `eval_every` steps of pretraining (seconds for the demo), and standalone:

    python -m vjepa_jax.online_eval --config configs/pretrain/demo.py --workdir /tmp/vjepa_demo

Every call also reports the same numbers for a random-init encoder of the same architecture
(computed once and cached), so a number always comes with its baseline. The labelled split is
small and fixed: generated videos when the pretraining data is synthetic (seeds distinct from the
pretraining videos), else the first entries of labelled CSV index files (`online_eval.train_index`,
`online_eval.val_index`), one centre view of one clip per video. Decoded clips are cached.
"""
import functools
import json
import logging

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec as P

from vjepa_jax import config as config_lib, objective
from vjepa_jax.models import vit
from vjepa_jax.data import index as index_lib
from vjepa_jax.data import transforms
from vjepa_jax.data import video as video_lib
from vjepa_jax.data.synthetic import SyntheticVideos


def default_config():
    """Online-eval settings: the `online_eval` section of config.base_config()."""
    return config_lib.base_config().online_eval


def options_from(config):
    """default_config() updated with config.online_eval (configs saved before it existed lack it)."""
    opts = default_config()
    if "online_eval" in config:
        opts.update(config.online_eval.to_dict())
    return opts


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
    clips, labels = [], []
    for path, label in zip(idx.paths, idx.labels):
        if len(clips) == num:
            break
        try:
            clip = video_lib.load_clips(path, rng, frames_per_clip=frames, frame_step=frame_step,
                                        num_clips=1, random_clip_sampling=False,
                                        allow_overlap=True)[0]
        except video_lib.VideoError as e:
            logging.warning("online eval: skipping %s: %s", path, e)
            continue
        clips.append(transforms.eval_views(clip, size, num_views=1)[0])
        labels.append(int(label))
    if len(clips) < num:
        raise ValueError(f"online_eval: only {len(clips)} usable videos in {list(files)}, "
                         f"{num} requested")
    return np.stack(clips), np.asarray(labels, np.int32)


def labelled_split(config, opts):
    """((train clips, labels), (val clips, labels), num_classes) for the online evaluation."""
    m = config.model
    source = opts.source
    if source == "auto":
        source = "synthetic" if config.data.source == "synthetic" else "csv"
    if source == "synthetic":
        train = _synthetic_split(opts.num_train, m.num_frames, m.crop_size, opts.seed)
        val = _synthetic_split(opts.num_val, m.num_frames, m.crop_size, opts.seed + 1)
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
    tokens = encoder.apply({"params": params}, objective.normalize(clips)).astype(jnp.float32)
    return tokens.mean(axis=1) if pool else tokens


def _mesh_of(params):
    sharding = getattr(jax.tree.leaves(params)[0], "sharding", None)
    if isinstance(sharding, NamedSharding) and sharding.mesh.size > 1:
        return sharding.mesh
    return None


def clip_features(encoder, params, clips, batch_size=64, pool=True):
    """Mean over tokens of the encoder output: clips uint8 [N, T, S, S, 3] -> float32 [N, D].

    With pool=False the tokens themselves: float32 [N, tokens, D].

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
    for start in range(0, len(clips), batch_size):
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
@functools.partial(jax.jit, static_argnames=("k", "num_classes"))
def knn_predict(train_x, train_y, val_x, *, k, num_classes, temperature=0.07):
    """Cosine k-NN with similarity-weighted votes exp(sim / T): [N, D], [N], [M, D] -> labels [M]."""
    normalize = lambda x: x / (jnp.linalg.norm(x, axis=-1, keepdims=True) + 1e-12)
    sim = normalize(val_x) @ normalize(train_x).T
    k = min(k, train_x.shape[0])
    top_sim, top_idx = jax.lax.top_k(sim, k)
    votes = jax.nn.one_hot(train_y[top_idx], num_classes) * jnp.exp(top_sim / temperature)[..., None]
    return jnp.argmax(votes.sum(axis=1), axis=-1)


def _standardised(train_x, val_x):
    """Both splits scaled by the train split's per-feature mean and std (NumPy or JAX arrays)."""
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    return (train_x - mean) / std, (val_x - mean) / std


@functools.partial(jax.jit, static_argnames=("num_classes", "steps"))
def linear_predict(train_x, train_y, val_x, *, num_classes, steps, lr, weight_decay):
    """Softmax regression on standardised features, full-batch AdamW: -> val labels [M]."""
    xs, vs = _standardised(train_x, val_x)
    params = {"w": jnp.zeros((xs.shape[1], num_classes)), "b": jnp.zeros((num_classes,))}
    tx = optax.adamw(lr, weight_decay=weight_decay)

    def loss(p):
        logits = xs @ p["w"] + p["b"]
        return optax.softmax_cross_entropy_with_integer_labels(logits, train_y).mean()

    def step(carry, _):
        p, s = carry
        updates, s = tx.update(jax.grad(loss)(p), s, p)
        return (optax.apply_updates(p, updates), s), None

    (params, _), _ = jax.lax.scan(step, (params, tx.init(params)), None, length=steps)
    return jnp.argmax(vs @ params["w"] + params["b"], axis=-1)


RIDGE_LAMBDAS = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)


def ridge_predict(train_x, train_y, val_x, *, num_classes, lambdas=RIDGE_LAMBDAS):
    """One-vs-rest ridge regression on standardised features, penalty chosen by leave-one-out.

    train_x [N, F], train_y [N], val_x [M, F]. Targets are one-hot minus 1 / num_classes, there is
    no bias (the features are centred), and the penalty is `lam * F` for each lam in `lambdas`:
    F is the mean eigenvalue of the Gram matrix of F unit-variance features, so lam is relative.
    Solved in closed form through the N x N Gram matrix, so F may be large (every token of a clip).
    The lam with the best leave-one-out accuracy on the training split (exact, from the hat
    matrix; the smallest lam on ties) is used on the validation split.
    Returns (val labels [M], chosen lam, leave-one-out accuracy [len(lambdas)]).
    """
    x, v = _standardised(np.asarray(train_x, np.float32), np.asarray(val_x, np.float32))
    x, v = jnp.asarray(x), jnp.asarray(v)
    gram = np.asarray(x @ x.T, np.float64)
    cross = np.asarray(v @ x.T, np.float64)
    y = np.asarray(train_y)
    targets = np.eye(num_classes)[y] - 1.0 / num_classes
    eigval, eigvec = np.linalg.eigh(gram)
    eigval = np.maximum(eigval, 0.0)
    proj = eigvec.T @ targets
    penalties = [lam * x.shape[1] for lam in lambdas]
    loo_acc = []
    for penalty in penalties:
        shrink = eigval / (eigval + penalty)  # eigenvalues of the hat matrix
        fitted = eigvec @ (shrink[:, None] * proj)
        hat_diag = (eigvec ** 2) @ shrink
        loo = targets - (targets - fitted) / np.maximum(1.0 - hat_diag, 1e-12)[:, None]
        loo_acc.append(float(np.mean(loo.argmax(-1) == y)))
    best = int(np.argmax(loo_acc))
    alpha = eigvec @ (proj / (eigval + penalties[best])[:, None])  # dual weights, best penalty
    return (cross @ alpha).argmax(-1), lambdas[best], np.asarray(loo_acc)


def _scores(encoder, params, train, val, num_classes, opts):
    tx = clip_features(encoder, params, train[0], opts.batch_size, pool=not opts.token_ridge)
    vx = clip_features(encoder, params, val[0], opts.batch_size, pool=not opts.token_ridge)
    ty, vy = jnp.asarray(train[1]), np.asarray(val[1])
    out = {}
    if opts.token_ridge:
        ridge, _, _ = ridge_predict(tx.reshape(len(tx), -1), train[1], vx.reshape(len(vx), -1),
                                    num_classes=num_classes)
        out["ridge_top1"] = 100.0 * float(np.mean(ridge == vy))
        tx, vx = tx.mean(axis=1), vx.mean(axis=1)
    knn = knn_predict(tx, ty, vx, k=opts.k, num_classes=num_classes,
                      temperature=opts.knn_temperature)
    lin = linear_predict(tx, ty, vx, num_classes=num_classes, steps=opts.linear_steps,
                         lr=opts.linear_lr, weight_decay=opts.linear_weight_decay)
    return {"knn_top1": 100.0 * float(np.mean(np.asarray(knn) == vy)),
            "linear_top1": 100.0 * float(np.mean(np.asarray(lin) == vy)),
            "feature_std": float(np.mean(np.std(tx, axis=0))), **out}


_BASELINES = {}  # (encoder, seed, options) -> scores of the random-init encoder; fixed per run


def random_init_scores(encoder, seed, train, val, num_classes, opts):
    """_scores of a random-init encoder of the same architecture, computed once per setting."""
    key = (encoder, int(seed), opts.to_json())
    if key not in _BASELINES:
        _BASELINES[key] = _scores(encoder, vit.random_init_params(encoder, seed), train, val,
                                  num_classes, opts)
    return _BASELINES[key]


def online_eval(encoder, params, config):
    """{'knn_top1', 'linear_top1', 'feature_std'} (percent) of encoder params, plus '*_random_init'.

    With `online_eval.token_ridge` also 'ridge_top1': `ridge_predict` on every token of each clip.

    `encoder` is the VisionTransformer, `params` its parameters (the EMA target encoder is what
    frozen evaluation uses), `config` the pretraining config (model, data, optional online_eval).
    """
    opts = options_from(config)
    train, val, num_classes = labelled_split(config, opts)
    out = _scores(encoder, params, train, val, num_classes, opts)
    if opts.random_baseline:
        base = random_init_scores(encoder, config.seed, train, val, num_classes, opts)
        out.update({f"{k}_random_init": v for k, v in base.items()})
    return out


def run(config, workdir):
    """Print the scores of the latest checkpoint of a pretraining workdir (--which encoder)."""
    from absl import flags
    from vjepa_jax import eval as eval_lib

    params, source, _ = eval_lib.load_pretrained(ml_collections.ConfigDict(
        dict(pretrained=workdir, which=flags.FLAGS.which)))
    result = online_eval(vit.encoder_from_config(config.model), params, config)
    print(json.dumps({"encoder": source, **result}, indent=1))


if __name__ == "__main__":
    from absl import flags
    from ml_collections import config_flags
    from vjepa_jax import distributed

    config_flags.DEFINE_config_file("config", None, "Pretraining config (configs/pretrain/*.py).")
    flags.DEFINE_string("workdir", None, "Pretraining workdir whose latest checkpoint is evaluated.")
    flags.DEFINE_enum("which", "target", ["target", "encoder"], "EMA target or online encoder.")
    distributed.define_flags()
    config_lib.run_workdir_program(run, "vjepa_jax.online_eval")
