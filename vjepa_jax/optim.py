"""AdamW with the reference LR / WD / EMA-momentum schedules, decay mask and per-module clipping.

Everything here is a plain function that the jitted train step calls (VJEPA_SPEC §4.2, §4.4-4.7).
Schedules are indexed by the 1-based update index s (s=1 for the first update), because the
reference advances its schedulers before the first optimizer step.
"""
import math

import jax
import jax.numpy as jnp
import optax

from vjepa_jax import trees

SCHEDULES = ("warmup_cosine", "linear_decay")
_KEYS = ("epochs", "ipe", "ipe_scale", "warmup", "start_lr", "lr", "final_lr", "weight_decay",
         "final_weight_decay", "clip_grad", "ema", "betas", "eps")


def _get(optim_cfg, key):
    try:
        return optim_cfg[key]
    except (KeyError, AttributeError) as e:
        raise ValueError(f"optim config is missing key 'optim.{key}'") from e


def _read(optim_cfg):
    """(values dict, warmup_steps, T_max, ema_steps) as the reference computes them, validated."""
    cfg = {k: _get(optim_cfg, k) for k in _KEYS}
    if cfg["ipe"] <= 0 or cfg["epochs"] <= 0 or cfg["ipe_scale"] <= 0:
        raise ValueError(f"optim.ipe={cfg['ipe']}, optim.epochs={cfg['epochs']} and "
                         f"optim.ipe_scale={cfg['ipe_scale']} must all be > 0")
    if cfg["warmup"] < 0:
        raise ValueError(f"optim.warmup={cfg['warmup']} must be >= 0")
    warmup_steps = int(cfg["warmup"] * cfg["ipe"])
    t_max = int(cfg["ipe_scale"] * cfg["epochs"] * cfg["ipe"])
    if t_max <= warmup_steps:
        raise ValueError(f"optim.warmup={cfg['warmup']} epochs ({warmup_steps} steps) must be "
                         f"shorter than the schedule ipe_scale*epochs*ipe={t_max} steps")
    if len(cfg["ema"]) != 2 or len(cfg["betas"]) != 2:
        raise ValueError(f"optim.ema={cfg['ema']} and optim.betas={cfg['betas']} must be pairs")
    # The momentum ramp divides by the unrounded float product, as the reference does.
    ema_steps = cfg["ipe"] * cfg["epochs"] * cfg["ipe_scale"]
    return cfg, warmup_steps, t_max, ema_steps


def _half_cosine(remaining, length):
    """0.5*(1 + cos(pi*(1 - remaining/length))) computed as sin^2 to stay float32-accurate.

    The identity 0.5*(1+cos(pi*p)) = sin^2(pi/2*(1-p)) holds for every p; written this way the
    small values near the end of the cosine keep full relative precision in float32.
    """
    return jnp.square(jnp.sin((0.5 * math.pi) * (remaining / length)))


def lr_wd_schedule(*, start_lr, lr, final_lr, weight_decay, final_weight_decay, warmup_steps,
                   total_steps):
    """f(s) -> (lr, wd) float32: linear warmup from start_lr, then half-cosine to final_lr; wd
    half-cosine from weight_decay to final_weight_decay over all total_steps (s is 1-based)."""
    if total_steps <= warmup_steps:
        raise ValueError(f"the warmup ({warmup_steps} steps) must be shorter than the schedule "
                         f"({total_steps} steps)")
    start_lr, ref_lr, final_lr = float(start_lr), float(lr), float(final_lr)
    ref_wd, final_wd = float(weight_decay), float(final_weight_decay)

    def at(step):
        s = jnp.asarray(step).astype(jnp.int32)
        f32 = lambda x: jnp.asarray(x).astype(jnp.float32)  # integers below 2**24 are exact

        warm = start_lr + (f32(s) / max(1, warmup_steps)) * (ref_lr - start_lr)
        cos_lr = _half_cosine(f32(total_steps - s), float(total_steps - warmup_steps))
        cos_lr = jnp.maximum(final_lr, final_lr + (ref_lr - final_lr) * cos_lr)
        lr_s = jnp.where(s < warmup_steps, warm, cos_lr)

        wd = final_wd + (ref_wd - final_wd) * _half_cosine(f32(total_steps - s), float(total_steps))
        wd = jnp.maximum(final_wd, wd) if final_wd <= ref_wd else jnp.minimum(final_wd, wd)
        return lr_s.astype(jnp.float32), wd.astype(jnp.float32)

    return at


def linear_decay_schedule(*, lr, final_lr, total_steps):
    """f(s) -> lr float32 falling linearly from lr (s = 0) toward final_lr at s = total_steps.

    V-JEPA 2's cooldown (LinearDecaySchedule, VJEPA_SPEC §9.3): lr + (s / total_steps) *
    (final_lr - lr), no warmup. With ipe_scale 1.25 a run ends at 80 % of the way; past
    total_steps the value is held at final_lr.
    """
    ref_lr, final_lr = float(lr), float(final_lr)

    def at(step):
        progress = jnp.asarray(step).astype(jnp.int32).astype(jnp.float32) / float(total_steps)
        value = ref_lr + jnp.minimum(progress, 1.0) * (final_lr - ref_lr)
        return value.astype(jnp.float32)

    return at


def momentum_schedule(ema, ema_steps):
    """f(s) -> EMA momentum float32: linear from ema[0] to ema[1] over ema_steps updates.

    The reference's momentum generator holds int(ema_steps)+1 values; past that it would stop,
    so the index is held at its last value instead of ramping beyond ema[1]. The s-th update
    consumes the (s-1)-th value of the ramp: exactly ema[0] for s=1.
    """
    ema0, ema1 = (float(v) for v in ema)
    last_ema_index = int(ema_steps)

    def at(step):
        s = jnp.asarray(step).astype(jnp.int32)
        i = jnp.asarray(jnp.clip(s - 1, 0, last_ema_index)).astype(jnp.float32)
        return (ema0 + i * ((ema1 - ema0) / ema_steps)).astype(jnp.float32)

    return at


def schedules(optim_cfg):
    """Return f(s) -> {'lr', 'wd', 'momentum'} float32 of s's shape; s = 1-based update index.

    optim.schedule picks the LR curve: 'warmup_cosine' (V-JEPA, I-JEPA; with final_lr = lr it is
    V-JEPA 2's warmup-then-constant) or 'linear_decay' (V-JEPA 2's cooldown). The weight decay
    always follows the half-cosine (constant when final_weight_decay = weight_decay).
    """
    cfg, warmup_steps, t_max, ema_steps = _read(optim_cfg)
    kind = optim_cfg.get("schedule", "warmup_cosine")
    if kind not in SCHEDULES:
        raise ValueError(f"optim.schedule={kind!r}: expected one of {SCHEDULES}")
    if kind == "linear_decay" and warmup_steps:
        raise ValueError(f"optim.warmup={cfg['warmup']}: optim.schedule='linear_decay' (a "
                         "cooldown) has no warmup; set optim.warmup=0")
    lr_wd = lr_wd_schedule(start_lr=cfg["start_lr"], lr=cfg["lr"], final_lr=cfg["final_lr"],
                           weight_decay=cfg["weight_decay"],
                           final_weight_decay=cfg["final_weight_decay"],
                           warmup_steps=warmup_steps, total_steps=t_max)
    decay = linear_decay_schedule(lr=cfg["lr"], final_lr=cfg["final_lr"], total_steps=t_max)
    momentum = momentum_schedule(cfg["ema"], ema_steps)

    def at(step):
        lr, wd = lr_wd(step)
        if kind == "linear_decay":
            lr = decay(step)
        return {"lr": lr, "wd": wd, "momentum": momentum(step)}

    return at


def decay_mask(params):
    """Pytree of bools shaped like params: True = decayed (ndim >= 2, no 'bias' in the path)."""
    # Same rule as the reference's param groups: biases and LayerNorm scales are excluded, while
    # conv/dense kernels and the 3-D predictor mask tokens are decayed. Leaves may be arrays or
    # jax.ShapeDtypeStruct, so only `.shape` is read.
    return jax.tree_util.tree_map_with_path(
        lambda path, x: len(x.shape) > 1 and "bias" not in trees.path_name(path), params)


def make_optimizer(optim_cfg, params):
    """AdamW for the pretraining `config.optim` section (see adamw)."""
    cfg = _read(optim_cfg)[0]
    return adamw(params, betas=cfg["betas"], eps=cfg["eps"], lr=cfg["start_lr"],
                 weight_decay=cfg["weight_decay"])


def adamw(params, *, betas, eps, lr, weight_decay):
    """AdamW (torch semantics, decoupled decay on decay_mask(params)) with injectable lr and wd."""
    b1, b2 = (float(b) for b in betas)
    if not (0.0 <= b1 < 1.0 and 0.0 <= b2 < 1.0) or eps <= 0:
        raise ValueError(f"optim.betas={tuple(betas)} must lie in [0, 1) and "
                         f"optim.eps={eps} must be > 0")
    # optax.adamw applies p <- p - lr*(adam + wd*p), which equals torch's p*(1-lr*wd) then the Adam
    # step. lr and wd are placeholders here: the train step writes them with `set_hyperparams`.
    return optax.inject_hyperparams(optax.adamw, hyperparam_dtype=jnp.float32)(
        learning_rate=float(lr), b1=b1, b2=b2, eps=float(eps),
        weight_decay=float(weight_decay), mask=decay_mask(params))


def set_hyperparams(opt_state, lr, wd):
    """opt_state with scalar learning_rate=lr and weight_decay=wd for the next `tx.update`."""
    if not hasattr(opt_state, "hyperparams"):
        raise ValueError(f"set_hyperparams needs the state of `make_optimizer`'s optimizer, "
                         f"got {type(opt_state).__name__}")
    hp = dict(opt_state.hyperparams)
    # Keep the stored dtype so the optimizer state's structure and dtypes never change.
    hp["learning_rate"] = jnp.asarray(lr).astype(hp["learning_rate"].dtype)
    hp["weight_decay"] = jnp.asarray(wd).astype(hp["weight_decay"].dtype)
    return opt_state._replace(hyperparams=hp)


def _global_norm(tree):
    """Scalar float32 L2 norm over every leaf of tree."""
    squares = [jnp.sum(jnp.square(x.astype(jnp.float32))) for x in jax.tree.leaves(tree)]
    return jnp.sqrt(sum(squares, jnp.zeros((), jnp.float32)))


def clip_by_module(grads, max_norm, active):
    """Clip each top-level module of grads to L2 norm max_norm when active; return (grads, norms).

    norms maps each top-level key ('encoder', 'predictor') to its scalar pre-clip norm. As in
    torch's clip_grad_norm_, the scale is min(1, max_norm / (norm + 1e-6)). max_norm None: no clip.
    """
    if not hasattr(grads, "keys"):
        raise ValueError(f"clip_by_module expects a dict of modules, got {type(grads).__name__}")
    clipped, norms = {}, {}
    for name in grads.keys():
        norm = _global_norm(grads[name])
        norms[name] = norm
        if max_norm is None:
            clipped[name] = grads[name]
            continue
        scale = jnp.where(active, jnp.minimum(1.0, max_norm / (norm + 1e-6)), 1.0)
        clipped[name] = jax.tree.map(lambda g: (g * scale).astype(g.dtype), grads[name])
    if type(grads) is not dict:
        clipped = type(grads)(clipped)
    return clipped, norms


def clip_active(optim_cfg, step):
    """Bool array of step's shape: clip once the 0-based epoch (s-1)//ipe exceeds optim.warmup."""
    cfg = _read(optim_cfg)[0]
    clip_grad = cfg["clip_grad"]
    if clip_grad is None or clip_grad == 0:
        return jnp.zeros(jnp.shape(step), bool)  # the reference clips only when clip_grad is set
    if clip_grad < 0:
        raise ValueError(f"optim.clip_grad={clip_grad} must be > 0 (or 0/None to disable clipping)")
    epoch = (jnp.asarray(step).astype(jnp.int32) - 1) // int(cfg["ipe"])
    return epoch > cfg["warmup"]


def ema_update(target, online, momentum):
    """Per leaf: momentum*target + (1-momentum)*online in float32, cast back to target's dtype."""
    m = jnp.asarray(momentum, jnp.float32)
    return jax.tree.map(
        lambda t, o: (m * t.astype(jnp.float32) + (1.0 - m) * o.astype(jnp.float32)
                      ).astype(t.dtype), target, online)


def all_finite(tree):
    """Scalar bool: True when no leaf of tree holds a NaN or an Inf (True for an empty tree)."""
    flags = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]
    return jnp.stack(flags).all() if flags else jnp.asarray(True)
