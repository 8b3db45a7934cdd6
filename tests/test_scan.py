"""model.scan_blocks: one compiled block in a lax.scan, same parameters, same numbers."""
import jax
import numpy as np

from common import build, random_video, smoke_config
from vjepa_jax import methods, preprocess, sharding, train_state, train_step


def scan_config(scan):
    """The smoke demo with a 3-block encoder and a 2-block predictor."""
    config = smoke_config()
    config.model.update(depth=3, pred_depth=2, scan_blocks=scan)
    return config


def test_scan_on_a_sharded_mesh_matches_unrolled_one_device_steps():
    config = scan_config(False)
    _, _, _, state_a, step_a, _ = build(config)
    # The scanned model on a (2, 4) data x fsdp mesh of 8 fake CPU devices.
    config_b = scan_config(True)
    config_b.mesh.update(data=2, fsdp=4)
    mesh = sharding.make_mesh(config_b.mesh)
    model = methods.get("vjepa").build(config_b)
    _, shardings, init = train_state.create(model.init, config_b.optim, mesh, jax.random.key(0))
    state_b = init(jax.random.key(config_b.seed))
    step_b = train_step.jit_train_step(model, config_b.optim, shardings,
                                       {"video": sharding.batch_sharding(mesh)},
                                       sharding.replicated(mesh))
    # Same names, shapes and initial values: the layout does not depend on the option.
    assert "blocks_2" in state_b.params["encoder"]
    assert "predictor_blocks_1" in state_b.params["predictor"]
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(state_a.params),
                 jax.device_get(state_b.params))
    rng = jax.random.key(3)
    for i in range(2):
        video = {"video": random_video(config, seed=i)}
        state_a, m_a = step_a(state_a, video, rng)
        state_b, m_b = step_b(state_b, video, rng)
        np.testing.assert_allclose(m_b["loss"], m_a["loss"], rtol=1e-5)
        np.testing.assert_allclose(m_b["grad_norm_encoder"], m_a["grad_norm_encoder"], rtol=1e-4)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
                 jax.device_get(state_a.target_params), jax.device_get(state_b.target_params))


def test_scan_traces_one_block():
    plain, scanned = (methods.get("vjepa").build(scan_config(s)).encoder for s in (False, True))
    video = preprocess.normalize(random_video(scan_config(False)))
    params = jax.jit(plain.init)(jax.random.key(0), video)["params"]

    def primitives(encoder):
        jaxpr = jax.make_jaxpr(lambda p, v: encoder.apply({"params": p}, v))(params, video)
        return [e.primitive.name for e in jaxpr.jaxpr.eqns]

    unrolled, looped = primitives(plain), primitives(scanned)
    assert "scan" not in unrolled and looped.count("scan") == 1
    # The unrolled program holds 3 copies of the block's 6 matmuls; the scanned one keeps its
    # single copy inside the scan body, none at the top level.
    assert unrolled.count("dot_general") >= 3 * 6 and looped.count("dot_general") == 0
