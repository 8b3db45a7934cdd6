"""Test workdirs: a smoke-config checkpoint with every array non-trivial, saved directly."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np

from common import smoke_config
from vjepa_jax import checkpoint, methods, optim, train_state, workdir as workdir_lib

STEP = 6  # a multiple of the smoke config's ipe (3): epoch 2


def _random(tree, rng, scale, offset=0.0):
    return jax.tree.map(lambda s: jnp.asarray(offset + scale * rng.standard_normal(s.shape), s.dtype), tree)


def make_workdir(path, step=STEP, seed=0, config=None):
    """A checkpoint of `config` (default: the V-JEPA smoke config) whose every array is
    non-trivial (no zero biases or moments).

    Built from shapes with NumPy noise and saved directly: no model init is compiled.
    """
    if config is None:
        config = smoke_config()
        config.mesh.update(data=1, fsdp=1)
    vjepa = methods.get(config.method).build(config)
    abstract = workdir_lib.abstract_params(vjepa)
    rng = np.random.default_rng(seed)
    # LayerNorm scales near 1 keep activations at a realistic size; everything else near 0.
    params = jax.tree_util.tree_map_with_path(
        lambda p, s: _random(s, rng, 0.05, 1.0 if p[-1].key == "scale" else 0.0), abstract)
    tx = optim.make_optimizer(config.optim, abstract)
    opt = jax.jit(tx.init)(params)
    adam = opt.inner_state[0]
    adam = adam._replace(count=jnp.asarray(step, adam.count.dtype), mu=_random(adam.mu, rng, 1e-3),
                         nu=jax.tree.map(jnp.abs, _random(adam.nu, rng, 1e-5)))
    opt = opt._replace(count=jnp.asarray(step, opt.count.dtype),
                       inner_state=(adam,) + tuple(opt.inner_state[1:]))
    target = jax.tree.map(lambda x: x + jnp.asarray(0.01 * rng.standard_normal(x.shape), x.dtype),
                          params["encoder"])
    state = train_state.TrainState(step=jnp.asarray(step, jnp.int32), apply_fn=None, params=params,
                                   tx=tx, opt_state=opt, target_params=target,
                                   skipped=jnp.zeros((), jnp.int32))
    mngr = checkpoint.manager(str(path), 2)
    checkpoint.save(mngr, state, None, workdir_lib.model_meta(config, vjepa), force=True)
    mngr.wait_until_finished()
    mngr.close()
    with open(os.path.join(path, "metrics.jsonl"), "w") as f:
        f.write(json.dumps({"step": step, "loss": 0.25}) + "\n")
    return config, vjepa.encoder, vjepa.predictor, state
