"""The single jitted train step, the same for every method (VJEPA_SPEC §4.2-4.7 for V-JEPA)."""
import functools

import jax
import jax.numpy as jnp

from vjepa_jax import monitors, optim, preprocess


def train_step(state, batch, rng, *, model, optim_cfg):
    """One update of any method: masks, loss and grads, AdamW, EMA. Returns (state, metrics).

    `model` is a method's bundle (methods/<method>/model.py): it samples the masks and computes
    the loss; aux carries its per-generator losses, baseline loss and the target and context
    features the collapse monitors read.

    A step whose gradients or new params are not all finite (a NaN learning rate gives finite
    gradients and NaN params) leaves params, optimizer state and target params unchanged and
    increments `state.skipped`; the schedules still advance with `state.step`.
    """
    s = state.step + 1  # the reference's schedules are indexed from 1 for the first update
    rng = jax.random.fold_in(rng, state.step)
    video = preprocess.normalize(batch["video"])
    masks = model.sample_masks(rng, video.shape[0])
    (loss, aux), grads = jax.value_and_grad(model.loss, has_aux=True)(
        state.params, state.target_params, video, masks)
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
    metrics = {"loss": loss, "baseline_loss": aux["baseline_loss"], "lr": sched["lr"],
               "wd": sched["wd"], "momentum": sched["momentum"],
               "grad_norm_encoder": norms["encoder"], "grad_norm_predictor": norms["predictor"],
               "skipped": new_state.skipped, "target_std": monitors.feature_std(aux["target"]),
               "target_rank": monitors.feature_rank(aux["target"]),
               "context_rank": monitors.feature_rank(aux["context"])}
    metrics.update({f"loss_{i}": l for i, l in enumerate(aux["losses"])})
    return new_state, metrics


def jit_train_step(model, optim_cfg, state_shardings, batch_shardings, replicated):
    """train_step of a method's model bundle, jitted with explicit shardings, state donated."""
    step = functools.partial(train_step, model=model, optim_cfg=optim_cfg)
    return jax.jit(step, donate_argnums=(0,),
                   in_shardings=(state_shardings, batch_shardings, replicated),
                   out_shardings=(state_shardings, replicated))
