"""Gradient accumulation (optim.accum_steps): k micro-batches make the update of one whole batch.

Every run below starts from the same initial state and makes two updates on one fixed batch of
8 clips (fp32 smoke models). The config is set so that the second update clips the gradients
(warmup 0, one step per epoch, clip_grad far below the gradient norms), so clipping on the
averaged gradients is part of what is compared. Compiled steps are shared between tests.
"""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from common import load_config
from vjepa_jax import config as config_lib, methods, optim, preprocess, sharding, train_state
from vjepa_jax import train_step

CONFIGS = {"vjepa": "configs/pretrain/demo.py", "ijepa": "configs/pretrain/ijepa_demo.py"}
STEPS = 2


def smoke(method):
    """The method's smoke config on one device with one encoder block (less to compile), set
    up so that the second update is clipped."""
    config = load_config(CONFIGS[method], "smoke")
    config.model.depth = 1
    config.mesh.update(data=1, fsdp=1)
    config.optim.update(epochs=2, ipe=1, warmup=0, clip_grad=1e-5)
    return config


class Runs:
    """One method's model, initial state and batch, and its compiled step per accum_steps."""

    def __init__(self, method):
        self.config = smoke(method)
        mesh = sharding.make_mesh(self.config.mesh)
        self.model = methods.get(self.config.method).build(self.config)
        _, self.shardings, self.init = train_state.create(self.model.init, self.config.optim,
                                                          mesh, jax.random.key(0))
        self.batch_sharding, self.repl = sharding.batch_sharding(mesh), sharding.replicated(mesh)
        # Already-normalised float clips: a NaN clip then reuses the same compiled step.
        shape = self.model.encoder.shape.clip(self.config.data.batch_size)
        self.video = jax.random.normal(jax.random.key(3), shape, jnp.float32)
        self.steps, self.results = {}, {}

    def step(self, k):
        if k not in self.steps:
            optim_cfg = self.config.optim.copy_and_resolve_references()
            optim_cfg.accum_steps = k
            self.steps[k] = train_step.jit_train_step(self.model, optim_cfg, self.shardings,
                                                      {"video": self.batch_sharding}, self.repl)
        return self.steps[k]

    def result(self, k):
        """run(k) on the fixed batch, computed once."""
        if k not in self.results:
            self.results[k] = self.run(k)
        return self.results[k]

    def run(self, k, video=None, steps=STEPS):
        """(final state on the host, metrics of each update) of `steps` updates with k."""
        state = self.init(jax.random.key(self.config.seed))
        history = []
        for _ in range(steps):
            state, metrics = self.step(k)(state, {"video": self.video if video is None else video},
                                          jax.random.key(1))
            history.append(jax.device_get(metrics))
        return jax.device_get(state), history


_RUNS = {}


def runs(method):
    if method not in _RUNS:
        _RUNS[method] = Runs(method)
    return _RUNS[method]


def close(got, want, rtol, atol):
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=rtol, atol=atol), got, want)


@pytest.mark.parametrize("method,k", [
    ("vjepa", 2), ("vjepa", 4), ("ijepa", 2),
    pytest.param("ijepa", 4, marks=pytest.mark.slow)])  # one compile less in the default run
def test_accumulated_micro_batches_give_the_whole_batch_update(method, k):
    r = runs(method)
    whole, whole_metrics = r.result(1)
    accum, accum_metrics = r.result(k)
    assert int(accum.step) == STEPS and int(accum.skipped) == 0  # one update per call, not k
    for key in ("lr", "wd", "momentum"):  # the schedules count updates, not micro-batches
        assert [m[key] for m in accum_metrics] == [m[key] for m in whole_metrics]
    # The loss of the whole batch is the mean of its micro-batches' losses (equal sizes).
    for key in ["loss"] + [key for key in whole_metrics[0] if key.startswith("loss_")]:
        np.testing.assert_allclose([m[key] for m in accum_metrics],
                                   [m[key] for m in whole_metrics], rtol=1e-5)
    for key in ("grad_norm_encoder", "grad_norm_predictor"):  # clipping sees the same norms
        np.testing.assert_allclose([m[key] for m in accum_metrics],
                                   [m[key] for m in whole_metrics], rtol=1e-5)
    # The gradients differ only by float32 summation order (~1e-7 relative). Adam divides each
    # by its own size, so a weight moves by ~lr (1.6e-4 at the first update) whatever its
    # gradient; where a gradient is near eps = 1e-8 its rounding error still shifts the update
    # (docs/SCALING.md says the same of sharded steps). Measured: params and EMA target within
    # 2e-7 of the whole batch's; allow 1e-6, 160x below how far the first update moves them.
    close(accum.params, whole.params, rtol=1e-5, atol=1e-6)
    close(accum.target_params, whole.target_params, rtol=1e-5, atol=1e-6)
    # The Adam moments are ~g and ~g^2: near-zero entries have no relative accuracy, so each
    # leaf is compared to 1e-4 of its largest entry.
    adam, adam_whole = accum.opt_state.inner_state[0], whole.opt_state.inner_state[0]
    for got, want in zip(jax.tree.leaves((adam.mu, adam.nu)),
                         jax.tree.leaves((adam_whole.mu, adam_whole.nu))):
        assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()
    assert int(adam.count) == int(adam_whole.count) == STEPS
    jax.tree.map(np.testing.assert_array_equal, accum.opt_state.hyperparams,
                 whole.opt_state.hyperparams)
    # The update did move the weights far more than the tolerance.
    start = jax.device_get(r.init(jax.random.key(r.config.seed)).params)
    moved = max(float(np.abs(a - b).max()) for a, b in zip(jax.tree.leaves(whole.params),
                                                           jax.tree.leaves(start)))
    assert moved > 100 * 1e-6
    for key in ("grad_norm_encoder", "grad_norm_predictor"):  # the second update is clipped
        assert whole_metrics[1][key] > 10 * r.config.optim.clip_grad


def reference_step(state, batch, rng, *, model, optim_cfg):
    """The step before accumulation existed, written out: one loss and gradient on the whole
    batch, clip, AdamW, EMA, skip on non-finite values."""
    s = state.step + 1
    rng = jax.random.fold_in(rng, state.step)
    video = preprocess.normalize(batch["video"])
    masks = model.sample_masks(rng, video.shape[0])
    (loss, _), grads = jax.value_and_grad(model.loss, has_aux=True)(
        state.params, state.target_params, video, masks)
    finite = optim.all_finite(grads) & jnp.isfinite(loss)
    sched = optim.schedules(optim_cfg)(s)
    grads, _ = optim.clip_by_module(grads, optim_cfg.clip_grad, optim.clip_active(optim_cfg, s))
    opt_state = optim.set_hyperparams(state.opt_state, sched["lr"], sched["wd"])
    updates, opt_state = state.tx.update(grads, opt_state, state.params)
    params = jax.tree.map(jnp.add, state.params, updates)
    target = optim.ema_update(state.target_params, params["encoder"], sched["momentum"])
    finite = finite & optim.all_finite(params) & optim.all_finite(target)
    keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
    return state.replace(step=state.step + 1, params=keep(params, state.params),
                         opt_state=keep(opt_state, state.opt_state),
                         target_params=keep(target, state.target_params),
                         skipped=state.skipped + (~finite).astype(jnp.int32)), loss


def test_accum_steps_1_is_the_unaccumulated_step_bit_for_bit():
    r = runs("vjepa")
    got, metrics = r.result(1)
    step = jax.jit(lambda s, b, k: reference_step(s, b, k, model=r.model, optim_cfg=r.config.optim),
                   donate_argnums=(0,))
    want = r.init(jax.random.key(r.config.seed))
    losses = []
    for _ in range(STEPS):
        want, loss = step(want, {"video": r.video}, jax.random.key(1))
        losses.append(float(loss))
    want = jax.device_get(want)
    assert [float(m["loss"]) for m in metrics] == losses
    for a, b in ((got.params, want.params), (got.target_params, want.target_params),
                 (got.opt_state, want.opt_state)):
        jax.tree.map(np.testing.assert_array_equal, a, b)


def test_one_non_finite_micro_batch_skips_the_whole_update():
    r = runs("vjepa")
    before = jax.device_get(r.init(jax.random.key(r.config.seed)))
    video = r.video.at[5].set(jnp.nan)  # clip 5 lies in micro-batch 1 of 2
    after, metrics = r.run(2, video=video, steps=1)
    assert int(after.skipped) == 1 and int(after.step) == 1 and int(metrics[0]["skipped"]) == 1
    for a, b in ((after.params, before.params), (after.target_params, before.target_params),
                 (after.opt_state, before.opt_state)):
        jax.tree.map(np.testing.assert_array_equal, a, b)


@pytest.mark.parametrize("value", [0, -2, 3, 2.0, True, "2"])
def test_bad_accum_steps_is_refused_naming_the_key(value):
    config = smoke("vjepa")  # data.batch_size 8
    # A ConfigDict keeps each key's type: a new section holds values of any type.
    config.optim = ml_collections.ConfigDict(config.optim.to_dict() | {"accum_steps": value})
    with pytest.raises(ValueError, match=r"optim\.accum_steps"):
        config_lib.validate(config)


@pytest.mark.parametrize("method", ["vjepa", "ijepa", "vjepa2"])
def test_every_method_defaults_to_no_accumulation(method):
    assert config_lib.base_config(method).optim.accum_steps == 1


def test_accum_steps_must_divide_the_per_device_batch():
    """8 clips over 8 devices leave 1 per device: 2 micro-batches are refused before compiling."""
    config = smoke("vjepa")
    config.mesh.update(data=8, fsdp=1)
    config.optim.accum_steps = 2
    config_lib.validate(config)  # 8 divides globally; only the mesh makes it impossible
    mesh = sharding.make_mesh(config.mesh)
    model = methods.get(config.method).build(config)
    abstract, shardings, _ = train_state.create(model.init, config.optim, mesh, jax.random.key(0))
    step = train_step.jit_train_step(model, config.optim, shardings,
                                     {"video": sharding.batch_sharding(mesh)},
                                     sharding.replicated(mesh))
    video = jax.ShapeDtypeStruct(model.encoder.shape.clip(8), jnp.uint8)
    with pytest.raises(ValueError, match=r"optim\.accum_steps=2 must divide the per-device "
                                         r"batch 1 \(global batch 8 over 8 devices\)"):
        step.lower(abstract, {"video": video}, jax.random.key(1))
