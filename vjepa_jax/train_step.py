"""The single jitted train step, the same for every method (VJEPA_SPEC §4.2-4.7 for V-JEPA).

With `optim.accum_steps = k > 1` the step splits the global batch into k micro-batches, runs the
loss and its gradient on each in turn (a `jax.lax.scan`, so only one micro-batch's activations
are alive at a time), averages the gradients and makes one optimizer update: the same update,
up to float rounding, as one step on the whole batch (docs/SCALING.md, "Gradient accumulation").
"""
import functools
import math

import jax
import jax.numpy as jnp

from vjepa_jax import monitors, optim, preprocess


def train_step(state, batch, rng, *, model, optim_cfg, batch_shards=1):
    """One update of any method: masks, loss and grads, AdamW, EMA. Returns (state, metrics).

    `model` is a method's bundle (methods/<method>/model.py): it samples the masks and computes
    the loss; aux carries its per-generator losses, baseline loss and the target and context
    features the collapse monitors read. `batch_shards`: how many devices the batch is split
    over (the per-device batch must divide into `optim.accum_steps` micro-batches).

    A step whose gradients or new params are not all finite (a NaN learning rate gives finite
    gradients and NaN params) leaves params, optimizer state and target params unchanged and
    increments `state.skipped`; the schedules still advance with `state.step`. Under
    accumulation one non-finite micro-batch skips the whole update.
    """
    s = state.step + 1  # the reference's schedules are indexed from 1 for the first update
    rng = jax.random.fold_in(rng, state.step)
    batch_size = batch["video"].shape[0]
    k = accum_steps(optim_cfg, batch_size, batch_shards)
    if k == 1:  # exactly the unaccumulated step
        video = preprocess.normalize(batch["video"])
        masks = model.sample_masks(rng, batch_size)
        (loss, aux), grads = jax.value_and_grad(model.loss, has_aux=True)(
            state.params, state.target_params, video, masks)
        readout = _readout(loss, aux)
    else:
        # Masks are drawn once for the whole batch and split with its clips, so the k
        # micro-batches see exactly the masks the whole batch would.
        masks = model.sample_masks(rng, batch_size)
        grads, readout = _accumulate(model, state.params, state.target_params, batch["video"],
                                     masks, _mask_batch_axes(model, rng, batch_size, k), k)
    loss = readout["loss"]
    finite = optim.all_finite(grads) & jnp.isfinite(loss)
    sched = optim.schedules(optim_cfg)(s)
    grads, norms = optim.clip_by_module(grads, optim_cfg.clip_grad, optim.clip_active(optim_cfg, s))
    opt_state = optim.set_hyperparams(state.opt_state, sched["lr"], sched["wd"])
    updates, opt_state = state.tx.update(grads, opt_state, state.params)
    params = jax.tree.map(jnp.add, state.params, updates)
    target = optim.ema_update(state.target_params, params["encoder"], sched["momentum"])
    finite = finite & optim.all_finite(params) & optim.all_finite(target)

    keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
    new_state = state.replace(
        step=state.step + 1,
        params=keep(params, state.params),
        opt_state=keep(opt_state, state.opt_state),
        target_params=keep(target, state.target_params),
        skipped=state.skipped + (~finite).astype(jnp.int32))
    metrics = dict(readout, lr=sched["lr"], wd=sched["wd"], momentum=sched["momentum"],
                   grad_norm_encoder=norms["encoder"], grad_norm_predictor=norms["predictor"],
                   skipped=new_state.skipped)
    return new_state, metrics


def _readout(loss, aux):
    """The scalar metrics of one loss evaluation: losses, baseline and collapse monitors."""
    out = {"loss": loss, "baseline_loss": aux["baseline_loss"],
           "target_std": monitors.feature_std(aux["target"]),
           "target_rank": monitors.feature_rank(aux["target"]),
           "context_rank": monitors.feature_rank(aux["context"])}
    out.update({f"loss_{i}": l for i, l in enumerate(aux["losses"])})
    return out


def _accumulate(model, params, target_params, video, masks, mask_axes, k):
    """(mean gradient, mean readout) over k micro-batches of video [B, ...] and its masks.

    Micro-batch i holds clips i, i + k, i + 2k, ...: every device keeps 1/k of its own clips
    in each micro-batch, so splitting moves no data between devices. Gradients are summed in
    float32 and divided by k; every metric is the mean of its k micro-batch values.
    """
    def body(grad_sum, micro):
        micro_video, micro_masks = micro
        (loss, aux), grads = jax.value_and_grad(model.loss, has_aux=True)(
            params, target_params, preprocess.normalize(micro_video), micro_masks)
        grad_sum = jax.tree.map(lambda a, g: a + g.astype(jnp.float32), grad_sum, grads)
        return grad_sum, _readout(loss, aux)

    micro_batches = (_split(video, 0, k),
                     jax.tree.map(lambda m, a: _split(m, a, k), masks, mask_axes))
    zeros = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), params)
    grad_sum, readouts = jax.lax.scan(body, zeros, micro_batches)
    grads = jax.tree.map(lambda g, p: (g / k).astype(p.dtype), grad_sum, params)
    return grads, jax.tree.map(lambda r: r.mean(axis=0), readouts)


def _split(x, axis, k):
    """x with batch axis `axis` of size B -> [k, ...] where entry i holds rows i, i + k, ..."""
    b = x.shape[axis]
    x = x.reshape(x.shape[:axis] + (b // k, k) + x.shape[axis + 1:])
    return jnp.moveaxis(x, axis + 1, 0)


def _mask_batch_axes(model, rng, batch_size, k):
    """Per mask array, the axis that holds the batch (found by sampling shapes at two sizes).

    Methods lay masks out differently (V-JEPA [B, K] pairs, I-JEPA targets [M, B, K]); the
    axis whose size follows the batch size is the one to split, whatever the method.
    """
    whole = jax.eval_shape(lambda key: model.sample_masks(key, batch_size), rng)
    part = jax.eval_shape(lambda key: model.sample_masks(key, batch_size // k), rng)

    def axis(w, p):
        axes = [a for a, (n, m) in enumerate(zip(w.shape, p.shape)) if n != m]
        if len(axes) != 1 or w.shape[axes[0]] != batch_size:
            raise ValueError(f"optim.accum_steps: a mask of shape {w.shape} at batch "
                             f"{batch_size} has no single batch axis to split")
        return axes[0]

    return jax.tree.map(axis, whole, part)


def accum_steps(optim_cfg, batch_size, batch_shards=1):
    """optim.accum_steps (default 1), checked to split batch_size evenly on each device."""
    k = optim_cfg.get("accum_steps", 1)
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"optim.accum_steps={k!r}: expected a positive integer")
    per_device = batch_size // batch_shards
    if per_device % k:
        raise ValueError(f"optim.accum_steps={k} must divide the per-device batch {per_device} "
                         f"(global batch {batch_size} over {batch_shards} devices)")
    return k


def _num_shards(batch_sharding):
    """How many pieces a NamedSharding cuts the leading (batch) axis into (1 for others)."""
    spec = getattr(batch_sharding, "spec", None)
    axes = spec[0] if spec else None
    axes = () if axes is None else (axes if isinstance(axes, tuple) else (axes,))
    return math.prod(batch_sharding.mesh.shape[a] for a in axes)


def jit_train_step(model, optim_cfg, state_shardings, batch_shardings, replicated):
    """train_step of a method's model bundle, jitted with explicit shardings, state donated."""
    shards = _num_shards(batch_shardings["video"])
    step = functools.partial(train_step, model=model, optim_cfg=optim_cfg, batch_shards=shards)
    return jax.jit(step, donate_argnums=(0,),
                   in_shardings=(state_shardings, batch_shardings, replicated),
                   out_shardings=(state_shardings, replicated))
