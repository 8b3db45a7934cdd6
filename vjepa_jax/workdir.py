"""A pretraining workdir on disk: create it, describe its model for the checkpoints, read it back.

DIR/checkpoints/<step>/{state, data, meta} (checkpoint.py writes them). `meta` records the
method, the model and the method's mask description (what a resume must agree with) and the
whole config; `read_workdir` restores chosen parts of a checkpoint onto the CPU from it alone,
which is how the encoder loader and the converter read runs.
"""
import json
import logging
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp

from vjepa_jax import checkpoint, config as config_lib, distributed, methods, mismatch, optim
from vjepa_jax.models import vit

_log = logging.getLogger(__name__)


def prepare_workdir(path):
    """Create the workdir and prove it is writable, before any compute is spent."""
    try:
        os.makedirs(path, exist_ok=True)
        probe = os.path.join(path, f".write_test_{jax.process_index()}")
        with open(probe, "w") as f:
            f.write("ok")
        os.remove(probe)
    except OSError as e:
        raise ValueError(f"--workdir {path} is not writable: {e.strerror or e}") from e
    return os.path.abspath(path)


def model_meta(config, model):
    """Stored with every checkpoint: the method, the model and what the method's bundle says of
    itself (V-JEPA: its masks), which a resume must agree with, and the full config."""
    return {"method": config.method, "model": config.model.to_dict(), **model.meta(),
            "config": config.to_json()}


def read_meta(mngr, step):
    """The JSON model description stored with a checkpoint (older ones: method 'vjepa')."""
    meta = checkpoint.read_meta(mngr, step)
    meta.setdefault("method", "vjepa")
    return meta


def check_resumable(saved, current, workdir):
    """Raise mismatch.CheckpointMismatch naming every described setting that differs."""
    mismatch.check_agrees(saved, {k: v for k, v in current.items() if k != "config"}, workdir,
                          what="holds a checkpoint of a different model; refusing to resume or "
                               "overwrite it")


def resume(mngr, state, shardings, data_iter, meta, workdir):
    """Restore the newest usable checkpoint into a TrainState shaped like `state`; None if none.

    A damaged checkpoint (checksums, unreadable items, NaN/Inf: checkpoint.CheckpointDamaged) is
    moved aside to checkpoints/<step>.corrupt, said in one line, and the one before it tried.
    A checkpoint of a different model is refused (CheckpointMismatch), never moved. When every
    checkpoint is damaged the run stops: starting from scratch would silently lose the run.
    """
    moved = []
    for step in sorted(mngr.all_steps(), reverse=True):
        damage = None
        try:
            checkpoint.verify(mngr.directory, step)  # before meta: a damaged meta is named as such
            check_resumable(read_meta(mngr, step), meta, workdir)
            restored = checkpoint.restore(mngr, step, state, shardings, data_iter)
        except checkpoint.CheckpointDamaged as e:
            damage = e
        # All processes fall back together, also when only one process's shard failed to read.
        if distributed.any_process(damage is not None):
            dst = checkpoint.move_aside(mngr, step)
            moved.append(os.path.basename(dst))
            _log.warning("%s; moved to %s, falling back to the checkpoint before it",
                         damage or f"checkpoint {step} is damaged on another process", dst)
            continue
        return restored
    if moved:
        raise checkpoint.CheckpointDamaged(
            f"--workdir {workdir}: every checkpoint is damaged (moved aside: {', '.join(moved)}); "
            "refusing to start from scratch over them: inspect them or use a new --workdir")
    return None


def init_from(path, step, state, shardings, config):
    """The TrainState `state` filled from another workdir's checkpoint, its step set back to 0.

    V-JEPA 2's cooldown ("progressive resolution"): a fresh run at a new clip shape starts from
    the main phase's weights, EMA target and AdamW moments; its schedules start over. The clip
    shape, masks and recipe may differ; the method and every parameter shape must not (RoPE and
    the computed sin-cos tables carry no clip-shaped parameter). step None: the latest.
    """
    where = f"train.init_from={path}"
    if not os.path.isdir(os.path.join(path, "checkpoints")):
        raise FileNotFoundError(f"{where}: no checkpoints directory in it")
    mngr = checkpoint.manager(path, 1, read_only=True)
    try:
        step = select_step(mngr, step, where)
        source = config_from_meta(read_meta(mngr, step))
        if source.method != config.method:
            raise ValueError(f"{where} step {step} is a {source.method!r} run; this config is "
                             f"config.method={config.method!r}")
        mismatch.check_tree_shapes(abstract_params(methods.get(source.method).build(source)),
                                   state.params, f"{where} step {step} vs this config.model")
        restored = checkpoint.restore(mngr, step, state, shardings)
    finally:
        mngr.close()
    zero = lambda x: jax.device_put(jnp.zeros_like(x), x.sharding)
    return restored.replace(step=zero(restored.step), skipped=zero(restored.skipped)), step


def select_step(mngr, step, where):
    """`step` if mngr holds a complete checkpoint there, the latest if step is None; else one
    error that starts with `where` and lists the steps there are."""
    steps = sorted(mngr.all_steps())
    if not steps:
        raise FileNotFoundError(f"{where}: {mngr.directory} holds no complete checkpoint")
    if step is None:
        return steps[-1]
    if step not in steps:
        raise ValueError(f"{where}: no checkpoint at step {step} (it has checkpoints at steps "
                         f"{steps})")
    return step


def config_from_meta(meta):
    """The full config stored with a checkpoint, keys added since it was saved at their defaults
    (checkpoints older than the stored config: the base config with the stored model)."""
    if "config" in meta:
        return config_lib.with_defaults(json.loads(meta["config"]))
    c = config_lib.base_config()
    c.model.update(meta["model"])
    return c


def abstract_params(model):
    """Unboxed jax.ShapeDtypeStruct params {'encoder', 'predictor'} of a method's model bundle."""
    boxed = jax.eval_shape(model.init, jax.random.key(0))
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), nn.unbox(boxed))


def read_workdir(workdir, step=None, parts=("params", "target_params")):
    """Restore only `parts` of the state at `step` (default: latest) of a workdir, onto the CPU.

    Returns (tree {part: ...}, config, meta, step). parts may name 'step', 'params',
    'target_params', 'opt_state' or a sub-tree such as 'params/encoder'.
    """
    ckpt_dir = os.path.join(workdir, "checkpoints")
    if not os.path.isdir(ckpt_dir):
        raise FileNotFoundError(f"--workdir {workdir}: no checkpoints (missing {ckpt_dir})")
    mngr = checkpoint.manager(workdir, 1, read_only=True)
    try:
        step = select_step(mngr, step, f"--workdir {workdir}")
        checkpoint.verify(mngr.directory, step)  # CheckpointDamaged names the step and file
        meta = read_meta(mngr, step)
        item_dir = os.path.join(str(mngr.directory), str(step), "state")
    finally:
        mngr.close()
    config = config_from_meta(meta)
    method = methods.get(config.method)
    if all(p in ("target_params", "params/encoder") for p in parts):  # the encoder alone
        params = {"encoder": vit.abstract_params(method.encoder_from_config(config.model))}
    else:
        params = abstract_params(method.build(config))
    counter = jax.ShapeDtypeStruct((), jnp.int32)
    full = {"step": counter, "skipped": counter, "params": params, "target_params": params["encoder"]}
    if any(p.startswith("opt_state") for p in parts):
        full["opt_state"] = jax.eval_shape(optim.make_optimizer(config.optim, params).init, params)
    item = {}
    for part in parts:
        keys = part.split("/")
        src, dst = full, item
        for k in keys[:-1]:
            src, dst = src[k], dst.setdefault(k, {})
        dst[keys[-1]] = src[keys[-1]]
    cpu = jax.sharding.SingleDeviceSharding(jax.devices("cpu")[0])
    item = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=cpu), item)
    restore_args = jax.tree.map(lambda x: ocp.ArrayRestoreArgs(sharding=cpu), item)
    try:
        tree = ocp.PyTreeCheckpointer().restore(item_dir, args=ocp.args.PyTreeRestore(
            item=item, restore_args=restore_args, partial_restore=True))
    except Exception as e:  # corrupt or foreign data: name the directory, not an orbax internal
        raise ValueError(f"{item_dir}: cannot restore {list(parts)}: {type(e).__name__}: {e}") from e
    try:
        mismatch.check_finite(tree, f"{item_dir}")
    except mismatch.NonFiniteWeights as e:
        raise checkpoint.CheckpointDamaged(str(e)) from e
    return tree, config, meta, step
