"""Sharding on 8 fake CPU devices: a sharded step equals one device, parameters are really split,
checkpoints move between meshes, masks do not depend on the mesh."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from common import random_video, smoke_config
from vjepa_jax import checkpoint, methods, sharding, train_state, train_step

# Test-only: no LLVM optimisation halves compile time; results agree to float rounding.
FAST = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}
STEPS = 2  # the second step also uses the sharded Adam moments written by the first


def config_on(data, fsdp):
    """Smoke config with one encoder block and one mask generator: every kind of parameter,
    a third less to compile."""
    config = smoke_config()
    config.model.depth = 1
    config.masks = config.masks[:1]
    config.mesh.update(data=data, fsdp=fsdp)
    return config


def shapes(data, fsdp):
    """(config, vjepa, mesh, abstract state, state shardings, jitted init) on a data x fsdp mesh."""
    config = config_on(data, fsdp)
    mesh = sharding.make_mesh(config.mesh)
    vjepa = methods.get(config.method).build(config)
    abstract, shardings, init = train_state.create(vjepa.init, config.optim, mesh,
                                                   jax.random.key(0))
    return config, vjepa, mesh, abstract, shardings, init


_RUNS = {}


def train(data, fsdp):
    """STEPS train steps on one fixed batch -> (losses, host params, host target, final state)."""
    if (data, fsdp) not in _RUNS:
        config, vjepa, mesh, abstract, shardings, _ = shapes(data, fsdp)
        if "initial" not in _RUNS:  # one initial state for every mesh, created on one device
            key = jax.random.key(config.seed)
            init = shapes(1, 1)[-1].lower(key).compile(FAST)(key)
            _RUNS["initial"] = jax.device_get(checkpoint.state_dict(init))
        state = abstract.replace(**jax.device_put(_RUNS["initial"], checkpoint.state_dict(shardings)))
        batch_sharding, repl = sharding.batch_sharding(mesh), sharding.replicated(mesh)
        step = train_step.jit_train_step(vjepa, config.optim, shardings,
                                         {"video": batch_sharding}, repl)
        batch = {"video": jax.device_put(random_video(config), batch_sharding)}
        rng = jax.device_put(jax.random.key(1), repl)
        compiled = step.lower(state, batch, rng).compile(FAST)
        losses = []
        for _ in range(STEPS):
            state, metrics = compiled(state, batch, rng)
            losses.append(float(metrics["loss"]))
        _RUNS[data, fsdp] = (losses, jax.device_get(state.params),
                             jax.device_get(state.target_params), state)
    return _RUNS[data, fsdp]


@pytest.mark.parametrize("data,fsdp", [(2, 4), (8, 1)])
def test_sharded_step_equals_single_device(data, fsdp):
    losses, params, target, _ = train(data, fsdp)
    ref_losses, ref_params, ref_target, _ = train(1, 1)
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-5)
    assert losses[1] != losses[0]  # the params did change between the two steps
    # Adam moves each weight by ~lr (1e-3 here) whatever the gradient's size, so where a gradient
    # is ~1e-8, summing it in another order across devices moves the update by ~1e-6: allow 1e-5.
    for got, want in ((params, ref_params), (target, ref_target)):
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5), got, want)


def test_fsdp_splits_params_target_and_adam_moments():
    state = train(2, 4)[3]
    d0 = jax.devices()[0]
    checked = {}
    for name, tree in (("params", state.params), ("target_params", state.target_params),
                       ("opt_state", state.opt_state)):
        checked[name] = 0
        for path, x in jax.tree_util.tree_leaves_with_path(tree):
            if x.size < 1000:  # biases, norms and mask tokens are small and replicated
                continue
            checked[name] += 1
            shards = x.addressable_shards
            mine = [s for s in shards if s.device == d0][0]
            where = f"{name}{jax.tree_util.keystr(path)}"
            assert mine.data.nbytes * 4 == x.nbytes, where  # a quarter: split over fsdp=4
            assert len({str(s.index) for s in shards}) == 4, where  # 4 distinct pieces, 2 copies
    # Every kernel: 5 encoder + 6 predictor, the encoder's EMA copy, both Adam moments.
    assert checked == {"params": 11, "target_params": 5, "opt_state": 22}

    # The shape-only estimate used for planning matches what device 0 really holds.
    on_d0 = sum(s.data.nbytes for x in jax.tree.leaves(state) if hasattr(x, "addressable_shards")
                for s in x.addressable_shards if s.device == d0)
    _, _, _, abstract, shardings, _ = shapes(2, 4)
    assert sharding.bytes_per_device(abstract, shardings) == on_d0
    total = sum(x.nbytes for x in jax.tree.leaves(state))
    assert on_d0 < 0.3 * total


def test_checkpoint_saved_on_4x2_restores_on_1x1_and_2x4(tmp_path):
    _, _, _, abstract, shardings, _ = shapes(4, 2)
    # Distinct random values in every leaf (fresh Adam moments would be all zero), placed
    # directly on the (4, 2) mesh.
    rng = np.random.default_rng(0)

    def random_like(x):
        floating = jnp.issubdtype(x.dtype, jnp.floating)
        return (rng.standard_normal(x.shape) if floating else rng.integers(1, 100, x.shape)).astype(x.dtype)
    state = jax.device_put(jax.tree.map(random_like, abstract), shardings)
    assert state.params["encoder"]["blocks_0"]["fc1"]["kernel"].addressable_shards[0].data.shape == (96, 768)
    saved = jax.device_get(checkpoint.state_dict(state))
    mngr = checkpoint.manager(str(tmp_path), keep=1)
    step = int(saved["step"])
    checkpoint.save(mngr, state, None, {"mesh": [4, 2]})
    mngr.wait_until_finished()
    mngr.close()

    for data, fsdp in ((1, 1), (2, 4)):
        _, _, mesh, abstract, target, _ = shapes(data, fsdp)
        reader = checkpoint.manager(str(tmp_path), keep=1, read_only=True)
        restored = checkpoint.restore(reader, step, abstract, target)
        reader.close()
        got = checkpoint.state_dict(restored)
        jax.tree.map(np.testing.assert_array_equal, jax.device_get(got), saved)
        kernel = got["params"]["encoder"]["blocks_0"]["fc1"]["kernel"]
        assert kernel.sharding.mesh.devices.shape == (data, fsdp)
        assert kernel.addressable_shards[0].data.shape == (192 // fsdp, 768)


def test_masks_are_identical_on_every_mesh():
    config = config_on(1, 1)
    vjepa = methods.get(config.method).build(config)
    generators = vjepa.generators
    b = config.data.batch_size
    key = jax.random.key(11)
    sample = lambda k: vjepa.sample_masks(k, b)
    want = jax.device_get(jax.jit(sample)(key))
    for data, fsdp in ((2, 4), (8, 1), (4, 2)):
        config.mesh.update(data=data, fsdp=fsdp)
        split = sharding.batch_sharding(sharding.make_mesh(config.mesh))
        fn = jax.jit(sample, out_shardings=[(split, split)] * len(generators))
        got = fn.lower(key).compile(FAST)(key)
        assert got[0][0].addressable_shards[0].data.shape[0] == b // 8  # one sample per device
        jax.tree.map(np.testing.assert_array_equal, jax.device_get(got), want)


def test_unsplittable_parameter_is_named():
    mesh = sharding.make_mesh(config_on(1, 8).mesh)
    abstract = {"predictor": {"kernel": jax.ShapeDtypeStruct((12, 5), jnp.float32)}}
    shardings = {"predictor": {"kernel": NamedSharding(mesh, P("fsdp", None))}}
    with pytest.raises(ValueError, match=r"\['predictor'\]\['kernel'\] of shape \(12, 5\): "
                                         r"dimension 12 .* size 8"):
        sharding.check_shardable(abstract, shardings)


def test_mesh_sizes_from_config():
    config = smoke_config()
    config.mesh.update(data=-1, fsdp=2)
    assert dict(sharding.make_mesh(config.mesh).shape) == {"data": 4, "fsdp": 2}
    config.mesh.update(data=2, fsdp=-1)
    assert dict(sharding.make_mesh(config.mesh).shape) == {"data": 2, "fsdp": 4}
    for data, fsdp, message in ((-1, -1, "at most one"), (3, -1, "cannot be split"),
                                (4, 4, "needs 16 devices"), (0, 2, "positive")):
        config.mesh.update(data=data, fsdp=fsdp)
        with pytest.raises(ValueError, match=message):
            sharding.make_mesh(config.mesh)
    config.mesh.update(data=8, fsdp=1)
    with pytest.raises(ValueError, match="data.batch_size=12 is not divisible by the 8 devices"):
        sharding.check_divisible("data.batch_size", 12, sharding.make_mesh(config.mesh))
