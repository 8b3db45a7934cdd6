"""TrainState with the EMA target encoder, created shapes-first and directly sharded."""
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.training import train_state

from vjepa_jax import optim, sharding


class TrainState(train_state.TrainState):
    """params {'encoder', 'predictor'}, EMA `target_params` of the encoder, skipped-step count."""
    target_params: Any = None
    skipped: Any = None


def create(init_boxed, optim_cfg, mesh, rng):
    """Shapes first: `init_boxed(rng)` returns boxed params {'encoder', 'predictor'} (a method
    bundle's `init`).

    Returns (abstract_state, state_shardings, init) where `init(rng)` creates the TrainState
    already sharded (a jitted init with out_shardings); a resumed run restores into
    `abstract_state` instead and never materialises fresh parameters.
    """
    boxed = jax.eval_shape(init_boxed, rng)
    params_abstract = nn.unbox(boxed)
    tx = optim.make_optimizer(optim_cfg, params_abstract)
    p_sharding = sharding.param_shardings(boxed, mesh)
    opt_sharding = sharding.opt_state_shardings(tx, jax.eval_shape(tx.init, params_abstract),
                                                p_sharding, mesh)
    rep = sharding.replicated(mesh)
    shardings = TrainState(step=rep, apply_fn=None, params=p_sharding, tx=tx,
                           opt_state=opt_sharding, target_params=p_sharding["encoder"], skipped=rep)

    def init(rng):
        params = nn.unbox(init_boxed(rng))
        return TrainState(step=jnp.zeros((), jnp.int32), apply_fn=None, params=params, tx=tx,
                          opt_state=tx.init(params), target_params=params["encoder"],
                          skipped=jnp.zeros((), jnp.int32))

    return jax.eval_shape(init, rng), shardings, jax.jit(init, out_shardings=shardings)
