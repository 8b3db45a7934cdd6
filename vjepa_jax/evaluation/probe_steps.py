"""The attentive probe's train and eval steps on a frozen encoder, and the checks before them.

The eval program (vjepa_jax/eval.py) jits these with its shardings; tokens come from the frozen
encoder inside the step (no gradient) or from a feature cache (evaluation/feature_cache.py).
"""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from vjepa_jax import mismatch, optim
from vjepa_jax.models import probe as probe_lib, vit

# Encoder geometry that must agree with the pretrained checkpoint; frames and resolution may differ
# (the sin-cos table is rebuilt for the eval grid, as the reference's eval loader does).
ARCHITECTURE = ("width", "depth", "num_heads", "mlp_hidden", "patch_size", "tubelet_size")


def check_architecture(saved_model, model_cfg, where):
    """Raise ValueError naming every geometry field where checkpoint and config.model differ."""
    saved_cfg = ml_collections.ConfigDict(model_cfg.to_dict())
    saved_cfg.update({k: v for k, v in saved_model.items() if k in saved_cfg})
    saved, want = vit.shape_from_config(saved_cfg), vit.shape_from_config(model_cfg)
    described = lambda shape, cfg: {**{k: getattr(shape, k) for k in ARCHITECTURE},
                                    "uniform_power": cfg.get("uniform_power")}  # V-JEPA only
    mismatch.check_agrees(described(saved, saved_cfg), described(want, model_cfg), where,
                          what="holds a different encoder than config.model",
                          hint="Set config.model (variant, width, depth, num_heads, patch_size, "
                               "tubelet_size) to the pretraining model.")


def batch_tokens(encoder, encoder_params, batch, probe_cfg):
    """The frozen tokens of a batch: cached ones (batch['tokens']) or encoded from batch['video']."""
    if "tokens" in batch:
        return batch["tokens"]
    return probe_lib.frozen_features(encoder, encoder_params, batch["video"],
                                     jnp.dtype(probe_cfg.feature_dtype), probe_cfg.encoder_batch)


def schedule(optim_cfg, ipe):
    """f(s) -> (lr, wd) of the probe's `config.optim` section with `ipe` steps per epoch."""
    return optim.lr_wd_schedule(
        start_lr=optim_cfg.start_lr, lr=optim_cfg.lr, final_lr=optim_cfg.final_lr,
        weight_decay=optim_cfg.weight_decay, final_weight_decay=optim_cfg.final_weight_decay,
        warmup_steps=int(optim_cfg.warmup * ipe), total_steps=int(optim_cfg.epochs * ipe))


def train_step(state, encoder_params, batch, *, encoder, probe, tx, lr_wd, clip_grad, probe_cfg):
    """One probe update on frozen features; state = {'step', 'params', 'opt_state'}.

    lr_wd: `schedule(...)`; clip_grad: the probe's gradient-norm bound (0 / None: none).
    """
    s = state["step"] + 1  # schedules advance before the update, as the reference's do
    tokens = batch_tokens(encoder, encoder_params, batch, probe_cfg)
    labels = batch["label"]

    def loss_fn(params):
        logits = probe_lib.view_logits(probe, params, tokens)
        return probe_lib.view_loss(logits, labels).mean(), logits

    (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
    lr, wd = lr_wd(s)
    grads, norms = optim.clip_by_module({"probe": grads}, clip_grad or None, jnp.asarray(True))
    opt_state = optim.set_hyperparams(state["opt_state"], lr, wd)
    updates, opt_state = tx.update(grads["probe"], opt_state, state["params"])
    params = optax.apply_updates(state["params"], updates)
    top1 = probe_lib.topk_correct(probe_lib.view_probs(logits), labels, 1).mean()
    metrics = {"loss": loss, "top1": top1, "lr": lr, "wd": wd, "grad_norm": norms["probe"]}
    return {"step": state["step"] + 1, "params": params, "opt_state": opt_state}, metrics


def factor_hits(probs, labels, factors):
    """{'top1_NAME': 1.0 where the top-1 class agrees with the label on factor NAME} ({} if None).

    factors maps class ids to named parts (evaluation/data.py: label_factors), e.g. the shape and the
    direction of a generated clip's class.
    """
    if factors is None:
        return {}
    pred, true = factors(jnp.argmax(probs, axis=-1)), factors(labels)
    return {f"top1_{name}": (pred[name] == true[name]).astype(jnp.float32) for name in pred}


def eval_step(params, encoder_params, batch, *, encoder, probe, probe_cfg, factors=None):
    """Sums over the valid examples of a batch: loss, top-1 (overall and per factor), top-5, count."""
    tokens = batch_tokens(encoder, encoder_params, batch, probe_cfg)
    logits = probe_lib.view_logits(probe, params, tokens)
    probs = probe_lib.view_probs(logits)
    valid = batch["valid"].astype(jnp.float32)
    hits = factor_hits(probs, batch["label"], factors)
    return {"loss": jnp.sum(probe_lib.view_loss(logits, batch["label"]) * valid),
            "top1": jnp.sum(probe_lib.topk_correct(probs, batch["label"], 1) * valid),
            "top5": jnp.sum(probe_lib.topk_correct(probs, batch["label"], 5) * valid),
            "count": jnp.sum(valid), **{k: jnp.sum(v * valid) for k, v in hits.items()}}


def to_global(local, batch_sharding):
    """A host's local batch -> global jax.Arrays split over the batch sharding ('skipped' dropped)."""
    return {k: jax.make_array_from_process_local_data(batch_sharding, np.asarray(local[k]))
            for k in local if k != "skipped"}


def validate_probe(eval_fn, params, encoder_params, val_ds, to_global):
    """Loss, top-1 (and per factor) and top-5 (percent) over the validation split, no padding."""
    sums = None
    for local in val_ds:
        out = eval_fn(params, encoder_params, to_global(local))
        sums = out if sums is None else jax.tree.map(jnp.add, sums, out)
    sums = jax.device_get(sums)
    n = max(float(sums["count"]), 1.0)
    out = {"val_loss": float(sums["loss"]) / n, "val_top1": 100.0 * float(sums["top1"]) / n,
           "val_top5": 100.0 * float(sums["top5"]) / n, "val_count": int(sums["count"])}
    out.update({f"val_{k}": 100.0 * float(v) / n for k, v in sums.items() if k.startswith("top1_")})
    return out
