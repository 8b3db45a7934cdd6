"""Shared test helpers: load a config file the way the programs do, build a tiny model."""
import os

import jax
import jax.numpy as jnp

from vjepa_jax import config as config_lib, methods, sharding, train_state, train_step

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_config(relpath, arg=None):
    """get_config(arg) of a config file under the repo root."""
    return config_lib.load_config_file(os.path.join(ROOT, relpath) + (f":{arg}" if arg else ""))


def smoke_config():
    """The smoke demo on one device (tests that exercise meshes set their own)."""
    config = load_config("configs/pretrain/demo.py", "smoke")
    config.mesh.update(data=1, fsdp=1)
    return config


def build(config, devices=1):
    """(encoder, predictor, generators, state, jitted step, mesh) for a config on `devices` CPUs."""
    config.mesh.update(data=devices, fsdp=1)
    mesh = sharding.make_mesh(config.mesh)
    model = methods.get(config.method).build(config)
    _, shardings, init = train_state.create(model.init, config.optim, mesh, jax.random.key(0))
    state = init(jax.random.key(config.seed))
    step = train_step.jit_train_step(model, config.optim, shardings,
                                     {"video": sharding.batch_sharding(mesh)},
                                     sharding.replicated(mesh))
    return model.encoder, model.predictor, model.generators, state, step, mesh


def random_video(config, seed=0):
    """A uint8 batch [B, T, S, S, 3] of noise."""
    m = config.model
    shape = (config.data.batch_size, m.num_frames, m.crop_size, m.crop_size, 3)
    return jax.random.randint(jax.random.key(seed), shape, 0, 256).astype(jnp.uint8)
