"""The train step: EMA, stop-gradient targets, learning, compile-once, non-finite skipping."""
import jax
import jax.numpy as jnp
import numpy as np

from common import build, random_video, smoke_config
from vjepa_jax import monitors, optim, preprocess
from vjepa_jax.methods.vjepa import loss as loss_lib


def test_train_step_ema_skips_and_compiles_once():
    config = smoke_config()
    encoder, predictor, generators, state, step, _ = build(config)
    before = jax.device_get(state)
    video = random_video(config)
    rng = jax.random.key(1)

    state, m = step(state, {"video": video}, rng)
    after = jax.device_get(state)
    # EMA after the update, with the first momentum value: t <- m t + (1 - m) online_new.
    mom = float(optim.schedules(config.optim)(1)["momentum"])
    assert mom == np.float32(config.optim.ema[0])
    expect = jax.tree.map(lambda t, p: mom * t + (1 - mom) * p, before.target_params,
                          after.params["encoder"])
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-8),
                 after.target_params, expect)
    assert int(after.step) == 1 and int(m["skipped"]) == 0
    assert set(m) >= {"loss", "loss_0", "loss_1", "lr", "wd", "momentum", "grad_norm_encoder",
                      "grad_norm_predictor", "skipped", "target_std", "target_rank", "context_rank",
                      "baseline_loss"}
    np.testing.assert_allclose(m["loss"], (m["loss_0"] + m["loss_1"]) / 2, rtol=1e-6)

    # Steps 2 and 3 reuse the compiled step.
    for _ in range(2):
        state, m = step(state, {"video": video}, rng)
    assert step._cache_size() == 1

    # A NaN batch: params, optimizer state and target unchanged, step advances, skip counted.
    good = jax.device_get(state)
    nan_video = jnp.full(video.shape, jnp.nan, jnp.float32)
    state, m = step(state, {"video": nan_video}, rng)
    bad = jax.device_get(state)
    assert int(m["skipped"]) == 1 and int(bad.skipped) == 1 and int(bad.step) == 4
    for a, b in ((good.params, bad.params), (good.target_params, bad.target_params),
                 (good.opt_state, bad.opt_state)):
        jax.tree.map(np.testing.assert_array_equal, a, b)


def test_no_gradient_reaches_target_params():
    config = smoke_config()
    encoder, predictor, generators, state, _, _ = build(config)
    video = preprocess.normalize(random_video(config))
    masks = [g.sample(jax.random.fold_in(jax.random.key(0), i), video.shape[0])
             for i, g in enumerate(generators)]
    grad_target = jax.jit(jax.grad(lambda tp: loss_lib.loss_fn(state.params, tp, encoder, predictor,
                                                        video, masks)[0]))(state.target_params)
    assert all(not np.any(g) for g in jax.tree.leaves(grad_target))
    grad_online = jax.jit(jax.grad(lambda p: loss_lib.loss_fn(p, state.target_params, encoder, predictor,
                                                      video, masks)[0]))(state.params)
    assert any(np.any(g) for g in jax.tree.leaves(grad_online["encoder"]))
    # The context features returned for the context_rank monitor are the online encoder's
    # tokens on the first generator's context, and the target ones the full target pass.
    _, aux = loss_lib.loss_fn(state.params, state.target_params, encoder, predictor, video,
                              masks)
    raw, context = aux["target"], aux["context"]
    want = encoder.apply({"params": state.params["encoder"]}, video, masks[0][0])
    np.testing.assert_allclose(context, want, rtol=1e-5, atol=1e-5)
    assert context.shape[1] == masks[0][0].shape[1] < raw.shape[1]


def test_baseline_loss_is_the_error_of_clip_plus_position_means():
    rng = np.random.default_rng(0)
    b, n, d = 3, 10, 4
    masks = [(None, jnp.asarray(rng.integers(0, n, (b, k)), jnp.int32)) for k in (2, 5)]
    # Targets made of a per-clip vector plus a per-position vector: the trivial predictor is exact.
    additive = rng.normal(size=(b, 1, d)) + rng.normal(size=(1, n, d))
    assert float(loss_lib.baseline_loss(jnp.asarray(additive, jnp.float32), masks)) < 1e-6
    # Anything else is left over; check against an explicit loop over clips and tokens.
    h = rng.normal(size=(b, n, d))
    want = []
    for _, tgt in masks:
        errs = [np.abs(h[i].mean(0) + h[:, j].mean(0) - h.mean((0, 1)) - h[i, j]).mean()
                for i in range(b) for j in np.asarray(tgt[i])]
        want.append(np.mean(errs))
    got = loss_lib.baseline_loss(jnp.asarray(h, jnp.float32), masks)
    np.testing.assert_allclose(got, np.mean(want), rtol=1e-5)


def test_tiny_model_overfits_a_fixed_batch():
    """On one repeated batch the loss (mean of the last 5 of 40 steps) falls 1.5x below step 1's.

    Masks still change every step and the target encoder drifts with the EMA, so the loss
    cannot reach zero; 40 steps of the smoke model take it from 0.83 to a plateau near 0.49.
    """
    config = smoke_config()
    config.optim.update(epochs=20, ipe=2, warmup=1, start_lr=1e-3, lr=3e-3, final_lr=1e-3)
    _, _, _, state, step, _ = build(config)
    video = random_video(config)
    losses = []
    for _ in range(40):
        state, m = step(state, {"video": video}, jax.random.key(0))
        losses.append(float(m["loss"]))
    assert np.mean(losses[-5:]) < losses[0] / 1.5, losses


def test_feature_rank_is_the_participation_ratio_of_the_covariance_eigenvalues():
    rng = np.random.default_rng(0)
    # Tokens spread over 3 directions with variances 4, 1, 1 in a 16-d space, plus an offset.
    basis = np.linalg.qr(rng.normal(size=(16, 16)))[0][:3]
    x = (rng.normal(size=(2, 500, 3)) * np.array([2.0, 1.0, 1.0])) @ basis + rng.normal(size=16)
    lam = np.linalg.eigvalsh(np.cov(x.reshape(-1, 16).T, bias=True))
    expect = lam.sum() ** 2 / np.square(lam).sum()
    got = float(monitors.feature_rank(jnp.asarray(x, jnp.float32)))
    np.testing.assert_allclose(got, expect, rtol=1e-4)
    assert 1.8 < got < 2.2  # (4+1+1)^2 / (16+1+1) = 2 for the exact variances
    # Collapse onto one direction: rank 1, while the per-feature std stays large.
    line = rng.normal(size=(1000, 1)) * rng.normal(size=(1, 16))
    np.testing.assert_allclose(float(monitors.feature_rank(jnp.asarray(line))), 1.0, rtol=1e-4)
    assert float(monitors.feature_std(jnp.asarray(line))) > 0.3
