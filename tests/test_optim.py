"""Optimizer, schedules, decay mask, per-module clipping and EMA against independent references."""
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from vjepa_jax import optim
from vjepa_jax.config import base_config


def small_cfg(**overrides):
    """A short schedule with a fractional warmup, decreasing WD and lr below final_lr (clamp)."""
    # A fresh ConfigDict (not the typed base one) so that warmup may be fractional.
    values = base_config().optim.to_dict()
    values.update(epochs=10, ipe=7, ipe_scale=1.3, warmup=2.5, start_lr=1e-5, lr=1e-4,
                  final_lr=2e-4, weight_decay=0.4, final_weight_decay=0.04, ema=(0.99, 0.999))
    values.update(overrides)
    return ml_collections.ConfigDict(values)


def ref_lr(c, s):
    """WarmupCosineSchedule as in VJEPA_SPEC §4.5, float64 python math."""
    w, t = int(c.warmup * c.ipe), int(c.ipe_scale * c.epochs * c.ipe)
    if s < w:
        return c.start_lr + (s / max(1, w)) * (c.lr - c.start_lr)
    p = (s - w) / (t - w)
    return max(c.final_lr, c.final_lr + (c.lr - c.final_lr) * 0.5 * (1 + math.cos(math.pi * p)))


def ref_wd(c, s):
    """CosineWDSchedule as in VJEPA_SPEC §4.6, float64 python math."""
    t = int(c.ipe_scale * c.epochs * c.ipe)
    wd = c.final_weight_decay + (c.weight_decay - c.final_weight_decay) * 0.5 * (
        1 + math.cos(math.pi * s / t))
    if c.final_weight_decay <= c.weight_decay:
        return max(c.final_weight_decay, wd)
    return min(c.final_weight_decay, wd)


def ref_momentum(c, s):
    """The (s-1)-th value of the reference's momentum generator (VJEPA_SPEC §4.7)."""
    n = c.ipe * c.epochs * c.ipe_scale
    return c.ema[0] + (s - 1) * (c.ema[1] - c.ema[0]) / n


def test_schedules_reproduce_spec_numbers():
    c = base_config().optim
    out = optim.schedules(c)(jnp.array([1, 12000, 45000, 90000]))
    np.testing.assert_allclose(out["lr"], [2.0004e-4, 6.25e-4, 4.732e-4, 7.50e-5], rtol=1e-3)
    wd = np.asarray(out["wd"])[[0, 2, 3]]
    np.testing.assert_allclose(wd, [0.0400, 0.1644, 0.3656], rtol=1e-3)
    assert out["momentum"][0] == np.float32(0.998)  # the first update uses exactly ema[0]
    np.testing.assert_allclose(out["momentum"][3], 0.998 + 89999 * 0.002 / 112500, rtol=1e-7)
    np.testing.assert_allclose(out["momentum"][3], 0.9996, rtol=1e-3)
    assert all(v.dtype == jnp.float32 for v in out.values())


@pytest.mark.parametrize("cfg", [base_config().optim, small_cfg()], ids=["reference", "small"])
def test_schedules_match_reference_formulas(cfg):
    w, t = int(cfg.warmup * cfg.ipe), int(cfg.ipe_scale * cfg.epochs * cfg.ipe)
    rng = np.random.default_rng(0)
    steps = {1, 2, w - 1, w, w + 1, t - 1, t, t + 3, *rng.integers(1, t + 10, 20).tolist()}
    steps = sorted(steps)
    steps = [s for s in steps if s >= 1]
    # Traced step inside jit, as the train step calls it.
    out = jax.jit(optim.schedules(cfg))(jnp.array(steps, jnp.int32))
    np.testing.assert_allclose(out["lr"], [ref_lr(cfg, s) for s in steps], rtol=1e-6)
    np.testing.assert_allclose(out["wd"], [ref_wd(cfg, s) for s in steps], rtol=1e-6)
    inside = [i for i, s in enumerate(steps) if s - 1 <= int(cfg.ipe * cfg.epochs * cfg.ipe_scale)]
    np.testing.assert_allclose(np.asarray(out["momentum"])[inside],
                               [ref_momentum(cfg, steps[i]) for i in inside], rtol=1e-7)


def test_small_config_exercises_both_clamps():
    c = small_cfg()
    out = optim.schedules(c)(jnp.array([20, 80]))
    # lr < final_lr: after warmup the max(final_lr, .) clamp holds lr at final_lr.
    np.testing.assert_allclose(out["lr"], [2e-4, 2e-4], rtol=1e-7)
    # Decreasing WD stays between final and ref.
    assert np.all((np.asarray(out["wd"]) > 0.04) & (np.asarray(out["wd"]) < 0.4))


def test_momentum_holds_last_value_past_the_generator():
    c = small_cfg()
    n = int(c.ipe * c.epochs * c.ipe_scale)  # 91 -> generator holds i = 0..91
    out = optim.schedules(c)(jnp.array([n + 1, n + 50]))
    np.testing.assert_allclose(out["momentum"], [ref_momentum(c, n + 1)] * 2, rtol=1e-7)


def tree():
    """Small param tree with every kind of leaf the models produce."""
    f = lambda *shape: jnp.arange(1, 1 + math.prod(shape), dtype=jnp.float32).reshape(shape) / 7.0
    return {
        "encoder": {
            "patch_embed": {"kernel": f(2, 2, 2, 3, 4), "bias": f(4)},
            "blocks_0": {"norm1": {"scale": f(4), "bias": f(4)},
                         "attn": {"qkv": {"kernel": f(4, 12), "bias": f(12)},
                                  "rel_bias_table": f(3, 3)}},
            "temperature": f(),
        },
        "predictor": {"mask_tokens_0": f(1, 1, 4), "mask_tokens_1": f(1, 1, 4),
                      "predictor_embed": {"kernel": f(4, 3), "bias": f(3)},
                      "predictor_norm": {"scale": f(3)}},
    }


# Written out by hand from the rule in VJEPA_SPEC §4.4 (not from decay_mask).
EXPECTED_DECAY = {
    "encoder": {
        "patch_embed": {"kernel": True, "bias": False},
        "blocks_0": {"norm1": {"scale": False, "bias": False},
                     "attn": {"qkv": {"kernel": True, "bias": False}, "rel_bias_table": False}},
        "temperature": False,
    },
    "predictor": {"mask_tokens_0": True, "mask_tokens_1": True,
                  "predictor_embed": {"kernel": True, "bias": False},
                  "predictor_norm": {"scale": False}},
}


def test_decay_mask_selects_kernels_and_mask_tokens():
    assert optim.decay_mask(tree()) == EXPECTED_DECAY


def test_decay_mask_works_on_abstract_and_boxed_params():
    abstract = jax.eval_shape(tree)
    assert optim.decay_mask(abstract) == EXPECTED_DECAY
    token = nn.Partitioned(jnp.zeros((1, 1, 4)), (None, None, "pred"))
    boxed = {"predictor": {"mask_tokens_0": token,
                           "norm": {"scale": nn.Partitioned(jnp.zeros(4), ("pred",))}}}
    mask = optim.decay_mask(boxed)
    assert [bool(x) for x in jax.tree.leaves(mask)] == [True, False]


def numpy_adamw(params, grads_seq, hps, decay, b1=0.9, b2=0.999, eps=1e-8):
    """torch.optim.AdamW in float64: p *= 1 - lr*wd (decayed leaves), then bias-corrected Adam."""
    p = {k: np.asarray(v, np.float64) for k, v in params.items()}
    m = {k: np.zeros_like(v) for k, v in p.items()}
    v = {k: np.zeros_like(x) for k, x in p.items()}
    for t, (g, (lr, wd)) in enumerate(zip(grads_seq, hps), start=1):
        for k in p:
            gk = np.asarray(g[k], np.float64)
            if decay[k]:
                p[k] = p[k] * (1 - lr * wd)
            m[k] = b1 * m[k] + (1 - b1) * gk
            v[k] = b2 * v[k] + (1 - b2) * gk * gk
            denom = np.sqrt(v[k]) / math.sqrt(1 - b2 ** t) + eps
            p[k] = p[k] - (lr / (1 - b1 ** t)) * m[k] / denom
    return p


def flat(t):
    return {jax.tree_util.keystr(path): np.asarray(x) for path, x in
            jax.tree_util.tree_leaves_with_path(t)}


def test_adamw_matches_torch_adamw_with_mask():
    c = base_config().optim
    params = tree()
    rng = np.random.default_rng(1)
    grads_seq = [jax.tree.map(lambda x: jnp.asarray(rng.normal(size=x.shape), jnp.float32), params)
                 for _ in range(2)]
    hps = [(1e-2, 0.5), (3e-3, 0.2)]  # lr/wd changed between updates through set_hyperparams
    tx = optim.make_optimizer(c, jax.eval_shape(lambda: params))

    @jax.jit
    def step(p, state, g, lr, wd):
        state = optim.set_hyperparams(state, lr, wd)
        updates, state = tx.update(g, state, p)
        return jax.tree.map(lambda a, u: a + u, p, updates), state

    p, state = params, tx.init(params)
    for g, (lr, wd) in zip(grads_seq, hps):
        p, state = step(p, state, g, lr, wd)
    np.testing.assert_allclose(state.hyperparams["learning_rate"], 3e-3, rtol=1e-7)

    decay = flat(EXPECTED_DECAY)
    expected = numpy_adamw(flat(params), [flat(g) for g in grads_seq], hps, decay)
    no_decay = numpy_adamw(flat(params), [flat(g) for g in grads_seq], hps,
                           {k: False for k in decay})
    got = flat(p)
    for k in got:
        np.testing.assert_allclose(got[k], expected[k], rtol=2e-6, atol=1e-7, err_msg=k)
        if decay[k]:  # the decay term must be visible, so a wrong mask cannot pass
            assert np.abs(expected[k] - no_decay[k]).max() > 1e-4, k


def test_clip_by_module_scales_only_the_module_over_the_limit():
    enc = {"a": jnp.full((4,), 1.5), "b": {"kernel": jnp.full((2, 2), 2.0)}}  # sqrt(9 + 16) = 5
    pred = {"k": jnp.array([12.0, 16.0])}  # norm 20
    grads = {"encoder": enc, "predictor": pred}
    clipped, norms = jax.jit(optim.clip_by_module, static_argnums=1)(grads, 10.0, jnp.array(True))
    np.testing.assert_allclose(norms["encoder"], 5.0, rtol=1e-6)
    np.testing.assert_allclose(norms["predictor"], 20.0, rtol=1e-6)
    for a, b in zip(jax.tree.leaves(clipped["encoder"]), jax.tree.leaves(enc)):
        np.testing.assert_array_equal(a, b)
    scale = 10.0 / (20.0 + 1e-6)
    np.testing.assert_allclose(clipped["predictor"]["k"], [12.0 * scale, 16.0 * scale], rtol=1e-6)

    unclipped, norms = optim.clip_by_module(grads, 10.0, jnp.array(False))
    np.testing.assert_array_equal(unclipped["predictor"]["k"], pred["k"])
    np.testing.assert_allclose(norms["predictor"], 20.0, rtol=1e-6)


def test_clip_active_from_epoch_after_warmup():
    c = base_config().optim
    active = optim.clip_active(c, jnp.array([1, 12000, 12300, 12301, 90000]))
    assert active.tolist() == [False, False, False, True, True]
    off = base_config().optim
    off.clip_grad = 0.0
    assert not bool(optim.clip_active(off, jnp.array(50000)))


def test_ema_update_exact_and_dtype():
    target = {"w": jnp.array([1.0, -2.0, 4.0], jnp.float32), "h": jnp.array([8.0], jnp.bfloat16)}
    online = {"w": jnp.array([3.0, 2.0, 0.0], jnp.float32), "h": jnp.array([0.0], jnp.bfloat16)}
    out = optim.ema_update(target, online, 0.75)
    np.testing.assert_array_equal(out["w"], [1.5, -1.0, 3.0])  # dyadic values: exact in float32
    assert out["h"].dtype == jnp.bfloat16 and float(out["h"][0]) == 6.0
    out = optim.ema_update(target, online, jnp.float32(0.998))
    m = float(np.float32(0.998))
    np.testing.assert_allclose(out["w"], [m * 1 + (1 - m) * 3, m * -2 + (1 - m) * 2, m * 4],
                               rtol=1e-7)


def test_all_finite():
    good = {"a": jnp.ones((2, 3)), "b": [jnp.zeros(4), jnp.arange(3)]}
    assert bool(optim.all_finite(good))
    for bad in (jnp.nan, jnp.inf, -jnp.inf):
        tree_ = {"a": jnp.ones((2, 3)).at[1, 2].set(bad), "b": [jnp.zeros(4)]}
        assert not bool(jax.jit(optim.all_finite)(tree_))
    assert bool(optim.all_finite({}))


def test_bad_config_and_state_raise():
    with pytest.raises(ValueError, match="optim.ipe"):
        optim.schedules(ml_collections.ConfigDict({"epochs": 1}))
    with pytest.raises(ValueError, match="warmup"):
        optim.schedules(small_cfg(warmup=20))
    with pytest.raises(ValueError, match="betas"):
        optim.make_optimizer(small_cfg(betas=(0.9, 1.0)), tree())
    with pytest.raises(ValueError, match="set_hyperparams"):
        optim.set_hyperparams(optax_state_without_hyperparams(), 1e-3, 0.1)


def optax_state_without_hyperparams():
    return optax.adam(1e-3).init({"w": jnp.zeros(2)})
