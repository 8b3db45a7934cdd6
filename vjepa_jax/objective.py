"""The V-JEPA objective and the single jitted train step (VJEPA_SPEC §4.2-4.3)."""
import functools

import jax
import jax.numpy as jnp
import numpy as np

from vjepa_jax import optim

# NumPy, not jnp: a jnp constant at import time starts the XLA backend, and
# jax.distributed.initialize() must run before that.
MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


def normalize(video):
    """uint8 clips [..., 3] in 0..255 -> float32 normalised with ImageNet mean/std.

    Float input is taken as already normalised (pipelines that normalise on the host).
    """
    if jnp.issubdtype(video.dtype, jnp.floating):
        return video.astype(jnp.float32)
    return (jnp.asarray(video, jnp.float32) / 255.0 - MEAN) / STD


def feature_layer_norm(x, eps=1e-5):
    """Parameter-free layer norm over features, in float32 (torch F.layer_norm default eps)."""
    x = x.astype(jnp.float32)
    mean = x.mean(-1, keepdims=True)
    var = jnp.square(x - mean).mean(-1, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(var + eps)


def gather(x, idx):
    """x [B, N, D], idx [B, K] -> [B, K, D]."""
    return jnp.take_along_axis(x, idx[..., None], axis=1)


def sample_masks(generators, rng, batch_size):
    """One (context, target) index pair per generator, each [B, K] int32."""
    return [g.sample(jax.random.fold_in(rng, i), batch_size) for i, g in enumerate(generators)]


def targets(encoder, target_params, video):
    """Full target-encoder pass -> (layer-normed features [B, N, D] fp32, raw features)."""
    raw = encoder.apply({"params": target_params}, video)
    return feature_layer_norm(raw), raw


def loss_fn(params, target_params, encoder, predictor, video, masks):
    """Mean over generators of the per-generator mean L1 error.

    Returns (loss, (per-generator losses, raw target features, context features of the first
    generator, baseline_loss of the same targets)). Targets pass through stop_gradient: no
    gradient ever reaches the target encoder.
    """
    h, raw = targets(encoder, target_params, video)
    h = jax.lax.stop_gradient(h)
    losses = []
    for i, (ctx, tgt) in enumerate(masks):
        z = encoder.apply({"params": params["encoder"]}, video, ctx)
        pred = predictor.apply({"params": params["predictor"]}, z, ctx, tgt, i)
        losses.append(jnp.abs(pred - gather(h, tgt)).mean())
        if i == 0:
            first_context = z
    aux = (losses, jax.lax.stop_gradient(raw), jax.lax.stop_gradient(first_context),
           baseline_loss(h, masks))
    return sum(losses) / len(losses), aux


def baseline_loss(h, masks):
    """L1 loss of a predictor that knows only each clip's mean target and each position's mean.

    h: layer-normed targets [B, N, D]. The trivial prediction for token n of clip b is
    mean_n h[b] + mean_b h[:, n] - mean h (batch statistics, which even see the hidden tokens);
    its error is averaged over the target tokens of every generator like the real loss. A
    predictor scoring above it has learned no more than clip-level appearance and the
    position-wise average; below it, it predicts what is where in the hidden region. The
    position means need several clips: with a batch of one clip the baseline is exactly 0.
    """
    clip = h.mean(axis=1, keepdims=True)
    position = h.mean(axis=0, keepdims=True)
    trivial = clip + position - h.mean(axis=(0, 1), keepdims=True)
    errors = [jnp.abs(gather(trivial, tgt) - gather(h, tgt)).mean() for _, tgt in masks]
    return sum(errors) / len(errors)


def feature_std(x):
    """Mean over features of the std across all tokens; near 0 signals collapse."""
    x = x.reshape(-1, x.shape[-1]).astype(jnp.float32)
    return x.std(axis=0).mean()


def feature_rank(x):
    """Effective dimensionality of tokens [..., D]: participation ratio (sum l)^2 / sum l^2.

    l are the eigenvalues of the token covariance, so this is 1 when every token lies on one
    line and D when the variance spreads evenly over all D features. It catches dimensional
    collapse, which feature_std misses: tokens can keep their spread while it shrinks onto a
    few directions. Needs one D x D Gram matrix and no eigendecomposition.
    """
    x = x.reshape(-1, x.shape[-1]).astype(jnp.float32)
    x = x - x.mean(axis=0)
    cov = x.T @ x / x.shape[0]
    return jnp.square(jnp.trace(cov)) / jnp.maximum(jnp.sum(jnp.square(cov)), 1e-30)


def train_step(state, batch, rng, *, encoder, predictor, generators, optim_cfg):
    """One update: targets, context + predictor passes, L1 loss, AdamW, EMA. Returns (state, metrics).

    A step whose gradients are not all finite leaves params, optimizer state and target params
    unchanged and increments `state.skipped`; the schedules still advance with `state.step`.
    """
    s = state.step + 1  # the reference's schedules are indexed from 1 for the first update
    rng = jax.random.fold_in(rng, state.step)
    video = normalize(batch["video"])
    masks = sample_masks(generators, rng, video.shape[0])
    (loss, (losses, raw, context, baseline)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params, state.target_params, encoder, predictor, video, masks)
    finite = optim.all_finite(grads) & jnp.isfinite(loss)
    sched = optim.schedules(optim_cfg)(s)
    grads, norms = optim.clip_by_module(grads, optim_cfg.clip_grad, optim.clip_active(optim_cfg, s))
    opt_state = optim.set_hyperparams(state.opt_state, sched["lr"], sched["wd"])
    updates, opt_state = state.tx.update(grads, opt_state, state.params)
    params = jax.tree.map(jnp.add, state.params, updates)
    target = optim.ema_update(state.target_params, params["encoder"], sched["momentum"])

    keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
    new_state = state.replace(
        step=state.step + 1,
        params=keep(params, state.params),
        opt_state=keep(opt_state, state.opt_state),
        target_params=keep(target, state.target_params),
        skipped=state.skipped + (~finite).astype(jnp.int32))
    metrics = {"loss": loss, "baseline_loss": baseline, "lr": sched["lr"], "wd": sched["wd"],
               "momentum": sched["momentum"],
               "grad_norm_encoder": norms["encoder"], "grad_norm_predictor": norms["predictor"],
               "skipped": new_state.skipped, "target_std": feature_std(raw),
               "target_rank": feature_rank(raw), "context_rank": feature_rank(context)}
    metrics.update({f"loss_{i}": l for i, l in enumerate(losses)})
    return new_state, metrics


def jit_train_step(encoder, predictor, generators, optim_cfg, state_shardings, batch_shardings,
                   replicated):
    """train_step compiled once with explicit shardings and the state buffers donated."""
    step = functools.partial(train_step, encoder=encoder, predictor=predictor,
                             generators=tuple(generators), optim_cfg=optim_cfg)
    return jax.jit(step, donate_argnums=(0,),
                   in_shardings=(state_shardings, batch_shardings, replicated),
                   out_shardings=(state_shardings, replicated))
