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


def demo_ridge_scores(config, workdir_env, tmp_path, split_seeds):
    """{split seed: (ridge_top1 of a demo's EMA target, [ridge_top1 of random inits 0, 1, 2])}.

    The demo run is $workdir_env (a finished run of `config`) or one trained here; the readout
    is the demo's (ridge on all tokens, online_eval.token_ridge) on each labelled split.
    """
    from vjepa_jax import loader, train
    from vjepa_jax.evaluation import online

    workdir = os.environ.get(workdir_env)
    if not workdir:
        workdir = str(tmp_path / "pretrain")
        train.run(config, workdir)
    params = jax.device_get(loader.load_encoder(workdir, which="target").params)
    encoder = methods.get(config.method).encoder_from_config(config.model)
    assert config.online_eval.token_ridge
    scores = {}
    for split_seed in split_seeds:
        config.online_eval.seed = split_seed
        opts = config.online_eval
        train_split, val_split, num_classes = online.labelled_split(config, opts)
        pretrained = online.online_eval(encoder, params, config)["ridge_top1"]
        random_init = [online.random_init_scores(encoder, seed, train_split, val_split,
                                                 num_classes, opts)["ridge_top1"]
                       for seed in (0, 1, 2)]
        scores[split_seed] = (pretrained, random_init)
    print(scores)
    return scores
