"""Orbax checkpoints of the train state, the data-iterator state and the model description.

Layout: DIR/checkpoints/<step>/{state, data, meta}. Saves are asynchronous and atomic (a step
directory appears only once complete), so a run killed at any point resumes from the last
complete checkpoint. Restores take target shardings, so a checkpoint written on one mesh
restores onto another.
"""
import logging
import os

import jax
import orbax.checkpoint as ocp

import grain

_log = logging.getLogger(__name__)


def manager(workdir, keep, read_only=False, folder="checkpoints"):
    """CheckpointManager for DIR/<folder> keeping the last `keep` steps, async saves."""
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=not read_only,
                                           read_only=read_only, enable_async_checkpointing=True)
    # Orbax requires an absolute path; users naturally pass relative ones (runs/demo).
    return ocp.CheckpointManager(os.path.join(os.path.abspath(workdir), folder), options=options,
                                 item_names=("state", "data", "meta"))


def state_dict(state):
    """The saved part of a TrainState as a plain dict (no functions, no optimizer object)."""
    return {"step": state.step, "params": state.params, "target_params": state.target_params,
            "opt_state": state.opt_state, "skipped": state.skipped}


def save(mngr, state, data_iter, meta, force=False):
    """Start an async save of state (+ data iterator, + meta) at state.step; returns whether it saved."""
    return save_tree(mngr, int(jax.device_get(state.step)), state_dict(state), data_iter, meta,
                     force)


def save_tree(mngr, step, tree, data_iter, meta, force=False):
    """Start an async save of a pytree of arrays (+ data iterator, + meta) at `step`."""
    items = {"state": ocp.args.StandardSave(tree), "meta": ocp.args.JsonSave(meta)}
    if data_iter is not None:
        items["data"] = grain.checkpoint.CheckpointSave(data_iter)
    return mngr.save(step, args=ocp.args.Composite(**items), force=force)


def read_meta(mngr, step):
    """The JSON model description stored with a checkpoint."""
    return mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]


def restore(mngr, step, state, shardings, data_iter=None):
    """Restore step into a TrainState shaped like `state`, placed with `shardings`."""
    restored = restore_tree(mngr, step, state_dict(state), state_dict(shardings), data_iter)
    return state.replace(**restored)


def restore_tree(mngr, step, tree, shardings, data_iter=None):
    """Restore step into a pytree shaped like `tree` (arrays or shape structs), placed with
    `shardings`; the data iterator too when given and saved."""
    def abstract(x, s):
        return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s)
    target = jax.tree.map(abstract, tree, shardings)
    items = {"state": ocp.args.StandardRestore(target)}
    if data_iter is not None and not os.path.isdir(os.path.join(str(mngr.directory), str(step), "data")):
        _log.warning("checkpoint %d has no data-iterator state (an imported checkpoint?): "
                        "the data starts from the beginning", step)
        data_iter = None
    if data_iter is not None:
        items["data"] = grain.checkpoint.CheckpointRestore(data_iter)
    return mngr.restore(step, args=ocp.args.Composite(**items))["state"]
