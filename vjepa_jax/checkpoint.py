"""Orbax checkpoints of the train state, the data-iterator state and the model description.

Layout: DIR/checkpoints/<step>/{state, data, meta, checksums.json}. Saves are asynchronous and
atomic (a step directory appears only once complete), so a run killed at any point resumes from
the last complete checkpoint. Restores take target shardings, so a checkpoint written on one mesh
restores onto another.

Integrity: Orbax verifies no data on restore (4 KiB of random bytes in an OCDBT data file restore
silently), so every save records the size and SHA-256 of each file in checksums.json, inside the
step directory before Orbax commits it; restore checks them and checks the state finite. A
checkpoint that fails raises CheckpointDamaged (step and file named); workdir.resume moves it
aside to <step>.corrupt and falls back. Orbax deletes old steps (keep_checkpoints) only after the
new one committed, i.e. after its checksums were written: the newest verified checkpoint is never
deleted while a newer one is in flight.
"""
import errno
import glob
import hashlib
import json
import logging
import os
import re
import shutil
import sys
import traceback
import weakref

import jax
import orbax.checkpoint as ocp
from absl import logging as absl_logging

import grain

from vjepa_jax import distributed, mismatch

_log = logging.getLogger(__name__)

MANIFEST = "checksums.json"
_TMP = ".orbax-checkpoint-tmp"  # suffix of the directory of a save in flight (or a failed one)


class CheckpointDamaged(ValueError):
    """A checkpoint's files do not match their checksums, cannot be read, or hold NaN/Inf."""


class SaveFailed(OSError):
    """An asynchronous save failed (disk full, quota, permissions); names the step and directory."""


def _digest(path):
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


# Orbax rewrites these step-level files when it commits, after the checksums are taken.
_UNCHECKED = {MANIFEST, "_CHECKPOINT_METADATA", "commit_success.txt"}


def _files(step_dir):
    """Relative paths of the files of a step directory's items (state, data, meta), sorted."""
    out = []
    for root, _, names in os.walk(step_dir):
        out += [os.path.relpath(os.path.join(root, n), step_dir) for n in names]
    return sorted(p for p in out if p not in _UNCHECKED)


def write_manifest(step_dir):
    """Record {relative path: [size, sha256]} of every file of a written checkpoint."""
    entries = {p: [os.path.getsize(os.path.join(step_dir, p)), _digest(os.path.join(step_dir, p))]
               for p in _files(step_dir)}
    tmp = os.path.join(step_dir, MANIFEST + ".tmp")
    with open(tmp, "w") as f:
        json.dump(entries, f, indent=0)
    os.replace(tmp, os.path.join(step_dir, MANIFEST))


def _record_in_flight(directory):
    """post_finalization_callback: the in-flight save's files are all written, not yet committed."""
    if jax.process_index() != 0:
        return
    for step_dir in glob.glob(os.path.join(directory, f"*{_TMP}*")):
        if not os.path.exists(os.path.join(step_dir, MANIFEST)):
            write_manifest(step_dir)


def verify(directory, step):
    """True when checkpoint `step` matches its checksums, False when it has none (written before
    checksums were recorded); raises CheckpointDamaged naming the step, item and file."""
    step_dir = os.path.join(str(directory), str(step))
    where = f"checkpoint {step_dir}"
    if not os.path.exists(os.path.join(step_dir, MANIFEST)):
        return False
    try:
        with open(os.path.join(step_dir, MANIFEST)) as f:
            entries = json.load(f)
    except (OSError, ValueError) as e:
        raise CheckpointDamaged(f"{where}: {MANIFEST} unreadable: {e}") from e
    for rel, (size, digest) in entries.items():
        path = os.path.join(step_dir, rel)
        item = rel.split(os.sep, 1)[0]
        if not os.path.isfile(path):
            raise CheckpointDamaged(f"{where}: item '{item}': {rel} is missing")
        if os.path.getsize(path) != size:
            raise CheckpointDamaged(f"{where}: item '{item}': {rel} has {os.path.getsize(path)} "
                                    f"bytes, {size} were written")
        if _digest(path) != digest:
            raise CheckpointDamaged(f"{where}: item '{item}': {rel} does not match its checksum")
    return True


def remove_failed_saves(directory):
    """Delete the temporary directories of saves that never committed (process 0)."""
    removed = sorted(glob.glob(os.path.join(str(directory), f"*{_TMP}*")))
    if jax.process_index() == 0:
        for path in removed:
            shutil.rmtree(path, ignore_errors=True)
    return removed


# The step of the save each manager has in flight (a failure names it even once its temporary
# directory is gone).
_saving = weakref.WeakKeyDictionary()


def _reason(e, directory):
    """The root cause of a failed save in a few words: for an OS error reported through
    TensorStore ("... No space left on device [os_error_code='28']"), the OS message, errno name
    and the file, relative to the checkpoints directory; otherwise `Type: message`."""
    while e.__cause__ is not None or e.__context__ is not None:
        e = e.__cause__ or e.__context__
    text = str(e)
    code = re.search(r"os_error_code='?(\d+)", text)
    if code is None:
        return f"{type(e).__name__}: {text}"
    number = int(code.group(1))
    reason = f"{os.strerror(number)} ({errno.errorcode.get(number, number)})"
    written = re.findall(r'Failed writing: "([^"]+)"', text)
    if written:
        reason += f" writing {os.path.relpath(written[-1], str(directory))}"
    return reason


def _failure(mngr, e):
    """SaveFailed in one line for the error `e` of a save; removes its temporary directory."""
    failed = [os.path.basename(p).split(".")[0] for p in remove_failed_saves(mngr.directory)]
    step = _saving.pop(mngr, None)
    if step is not None and str(step) not in failed:
        failed.insert(0, str(step))
    steps = f"checkpoint {', '.join(failed)}" if failed else "a checkpoint"
    return SaveFailed(f"saving {steps} to {mngr.directory} failed: {_reason(e, mngr.directory)}; "
                      "its temporary directory is removed, the checkpoints before it are intact")


def check_saves(mngr):
    """Raise SaveFailed (one line naming the step) when the last asynchronous save failed.
    Cheap, never blocks on a save in flight: call it every step, so a full disk stops the run at
    the first step (or save) after Orbax's threads report the failure."""
    try:
        mngr.check_for_errors()
        if not mngr.is_saving_in_progress():  # done: returns at once, or raises its error
            mngr.wait_until_finished()
            _saving.pop(mngr, None)
    except Exception as e:  # the background thread's error, whatever its type
        raise _failure(mngr, e) from e


def finish(mngr):
    """Wait for the save in flight; SaveFailed (one line) if it failed."""
    try:
        mngr.wait_until_finished()
    except Exception as e:
        raise _failure(mngr, e) from e
    check_saves(mngr)
    _saving.pop(mngr, None)


def _closed_loop_report(unraisable):
    """True for TensorStore's report of a write that completed after its save was abandoned.

    When one write of an Orbax save fails (disk full), Orbax stops waiting and closes the
    save's asyncio loop; each of TensorStore's writes still running then completes from C++ by
    calling loop.call_soon_threadsafe on the closed loop, and Python prints that RuntimeError
    as an "unraisable" traceback, dozens per failed save. The failure itself is reported by
    check_saves; these reports say nothing more."""
    frames = traceback.extract_tb(unraisable.exc_traceback)
    return (isinstance(unraisable.exc_value, RuntimeError)
            and str(unraisable.exc_value) == "Event loop is closed"
            and bool(frames) and frames[0].name == "call_soon_threadsafe")


def _quiet_closed_loop_reports():
    """Install (once) a sys.unraisablehook that drops _closed_loop_report()s and passes every
    other report to the hook it replaces."""
    previous = sys.unraisablehook
    if getattr(previous, "_vjepa_closed_loop_filter", False):
        return

    def hook(unraisable):
        if _closed_loop_report(unraisable):
            _log.debug("dropped a TensorStore 'Event loop is closed' report of an abandoned save")
            return
        previous(unraisable)

    hook._vjepa_closed_loop_filter = True
    sys.unraisablehook = hook
    # Orbax may also leave the failed writes' futures unawaited (always on Python 3.12 installs,
    # by race on 3.11), and asyncio logs each: the same failure, said again.
    logging.getLogger("asyncio").addFilter(_abandoned_write_task)


def _abandoned_write_task(record):
    """Logging filter: False (drop) for asyncio's report of an Orbax write of a failed save.

    It says "Task exception was never retrieved" (the task names Orbax's coroutine) or
    "_GatheringFuture exception was never retrieved" (the exception's traceback runs through
    Orbax's serialization module), depending on which write loses the race."""
    message = record.getMessage()
    if "exception was never retrieved" not in message.split("\n", 1)[0]:
        return True
    if "async_serialize_from_host" in message:
        return False
    error = record.exc_info[1] if record.exc_info else None
    frames = traceback.extract_tb(error.__traceback__) if error is not None else []
    return not any(os.path.join("orbax", "checkpoint") in f.filename
                   and "serialization" in os.path.basename(f.filename) for f in frames)


def manager(workdir, keep, read_only=False, folder="checkpoints"):
    """CheckpointManager for DIR/<folder> keeping the last `keep` steps, async saves, checksums."""
    # Orbax requires an absolute path; users naturally pass relative ones (runs/demo).
    directory = os.path.join(os.path.abspath(workdir), folder)
    if not read_only:
        _quiet_closed_loop_reports()
    if not read_only and os.path.isdir(directory):
        for path in remove_failed_saves(directory):
            _log.warning("removed %s: a save that never completed", path)
    options = ocp.CheckpointManagerOptions(
        max_to_keep=None if read_only else keep, create=not read_only, read_only=read_only,
        save_interval_steps=0 if read_only else 1, enable_async_checkpointing=True,
        async_options=ocp.AsyncOptions(
            post_finalization_callback=lambda: _record_in_flight(directory)))
    if not read_only:
        return ocp.CheckpointManager(directory, options=options,
                                     item_names=("state", "data", "meta"))
    # Orbax warns on every read-only manager ("Given directory is read only"): that is the point
    # of a reader (load_encoder, convert), not news, so its log is quieted while it is built.
    verbosity = absl_logging.get_verbosity()
    absl_logging.set_verbosity(absl_logging.ERROR)
    try:
        return ocp.CheckpointManager(directory, options=options,
                                     item_names=("state", "data", "meta"))
    finally:
        absl_logging.set_verbosity(verbosity)


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
    # Never write a broken state (the train step skips non-finite updates; this is the last guard).
    mismatch.check_finite(tree, f"step {step}: state not saved")
    finish(mngr)  # Orbax waits for the previous save anyway: its failure is named here
    items = {"state": ocp.args.StandardSave(tree), "meta": ocp.args.JsonSave(meta)}
    if data_iter is not None:
        items["data"] = grain.checkpoint.CheckpointSave(data_iter)
    _saving[mngr] = step
    try:
        saved = mngr.save(step, args=ocp.args.Composite(**items), force=force)
    except Exception as e:
        raise _failure(mngr, e) from e
    if not saved:
        _saving.pop(mngr, None)
    return saved


def read_meta(mngr, step):
    """The JSON model description stored with a checkpoint; CheckpointDamaged if unreadable."""
    try:
        return mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
    except Exception as e:  # Orbax raises various types for a damaged item
        raise CheckpointDamaged(f"checkpoint {mngr.directory}/{step}: item 'meta' unreadable: "
                                f"{type(e).__name__}: {e}") from e


def restore(mngr, step, state, shardings, data_iter=None):
    """Restore step into a TrainState shaped like `state`, placed with `shardings`."""
    restored = restore_tree(mngr, step, state_dict(state), state_dict(shardings), data_iter)
    return state.replace(**restored)


def restore_tree(mngr, step, tree, shardings, data_iter=None):
    """Restore step into a pytree shaped like `tree` (arrays or shape structs), placed with
    `shardings`; the data iterator too when given and saved.

    Checks the checksums first and the restored values finite after: CheckpointDamaged names
    the step and the item. A checkpoint whose checksums match but that fails to restore (another
    mesh, memory) raises a plain ValueError: its files are fine.
    """
    verified = verify(mngr.directory, step)
    if not verified:
        _log.warning("checkpoint %s/%d has no %s (written by an older version): not verified",
                     mngr.directory, step, MANIFEST)
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
    try:
        restored = mngr.restore(step, args=ocp.args.Composite(**items))["state"]
    except Exception as e:  # Orbax, TensorStore and Grain raise various types
        detail = f"checkpoint {mngr.directory}/{step}: cannot restore: {type(e).__name__}: {e}"
        if verified:
            raise ValueError(detail + f" (its files match {MANIFEST})") from e
        raise CheckpointDamaged(detail) from e
    try:
        mismatch.check_finite(restored, f"checkpoint {mngr.directory}/{step}: item 'state'")
    except mismatch.NonFiniteWeights as e:
        raise CheckpointDamaged(str(e)) from e
    return restored


def move_aside(mngr, step):
    """Rename a damaged step to <step>.corrupt (Orbax then ignores it); returns the new path.

    With several processes every one calls this for the same step (all check the same files):
    each picks the new name, all wait until all have (so none is still reading the step or
    picks another name), process 0 renames, and all wait again before looking at the steps."""
    src = os.path.join(str(mngr.directory), str(step))
    dst, n = src + ".corrupt", 1
    while os.path.exists(dst):
        dst, n = f"{src}.corrupt{n}", n + 1
    distributed.barrier(f"vjepa_jax.checkpoint.move_aside_{step}_found")
    if jax.process_index() == 0:
        os.rename(src, dst)
    distributed.barrier(f"vjepa_jax.checkpoint.move_aside_{step}")
    mngr.reload()
    return dst
