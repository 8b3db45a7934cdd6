"""JEPA pretraining (V-JEPA; `config.method` picks the method): one program for a laptop, a GPU node, a GPU cluster or a TPU pod.

    python -m vjepa_jax.train --config configs/pretrain/demo.py --workdir /tmp/vjepa_demo
    python -m vjepa_jax.train --config configs/pretrain/vitl16.py --workdir DIR \
        --config.data.index=/data/k710.csv --config.data.batch_size=3072

Resumes automatically from the newest intact checkpoint in --workdir (a damaged one is moved
aside to checkpoints/<step>.corrupt). SIGTERM (pre-emption) saves a checkpoint and exits with
status 75 (cli.EXIT_PREEMPTED: resume me); docs/RELIABILITY.md lists every exit. Writes
DIR/metrics.jsonl, DIR/tensorboard/ and DIR/metrics.png.
"""
import logging
import signal
import time

import jax
import numpy as np
import tqdm
from absl import flags
from ml_collections import config_flags

from vjepa_jax import checkpoint, cli, compilation_cache, config as config_lib, distributed
from vjepa_jax import logger, methods, plot
from vjepa_jax import sharding, train_state, train_step, workdir as workdir_lib
from vjepa_jax.data import pipeline
from vjepa_jax.evaluation import online

log = logging.getLogger("vjepa_jax.train")


def compile_step(step_fn, state, batch, rng):
    """Compile the jitted step for these arguments ahead of time, then line up all processes.

    Compile times differ between hosts; without the barrier a fast host would sit inside the
    first step's collectives waiting for a slow one, and CPU (gloo) collectives time out after
    about 30 s. The barrier (coordination service, 30 min) releases once all hold executables.
    """
    start = time.perf_counter()
    compiled = step_fn.lower(state, batch, rng).compile()
    log.info("train step compiled in %.1f s", time.perf_counter() - start)
    distributed.barrier("vjepa_jax.train.step_compiled")
    return compiled


def run(config, workdir):
    # ---------------------------------------------------------------- setup
    config_lib.validate(config)
    workdir = workdir_lib.prepare_workdir(workdir)
    cache = compilation_cache.enable(config.train.compilation_cache)
    main_process = jax.process_index() == 0
    log.info("jax %s, %d processes, %d devices (%s)", jax.__version__, jax.process_count(),
                 jax.device_count(), jax.devices()[0].platform)
    log.info("compilation cache: %s", cache or "off (train.compilation_cache='')")

    # ---------------------------------------------------------------- mesh
    mesh = sharding.make_mesh(config.mesh)
    sharding.check_divisible("data.batch_size", config.data.batch_size, mesh)
    batch_sharding, repl = sharding.batch_sharding(mesh), sharding.replicated(mesh)

    # ---------------------------------------------------------------- model, masks, optimizer
    model = methods.get(config.method).build(config)
    total_steps = config.optim.epochs * config.optim.ipe
    for line in model.describe():
        log.info("%s", line)

    # ---------------------------------------------------------------- data
    dataset = pipeline.make_dataset(config, process_index=jax.process_index(),
                                    process_count=jax.process_count())
    data_iter = iter(dataset)

    # ---------------------------------------------------------------- shapes first, then state
    b = config.data.batch_size
    rng = jax.random.key(config.seed)
    init_rng, step_rng = jax.random.split(rng)
    abstract_state, state_shardings, init = train_state.create(model.init, config.optim, mesh,
                                                               init_rng)
    n_params = sum(x.size for x in jax.tree.leaves(abstract_state.params))
    log.info("%s parameters (encoder + predictor)", f"{n_params:,}")

    # ---------------------------------------------------------------- compiled step
    step_fn = train_step.jit_train_step(model, config.optim, state_shardings,
                                        {"video": batch_sharding}, repl)

    # ---------------------------------------------------------------- checkpoint: resume or init
    mngr = checkpoint.manager(workdir, config.train.keep_checkpoints)
    meta = workdir_lib.model_meta(config, model)
    state = workdir_lib.resume(mngr, abstract_state, state_shardings, data_iter, meta, workdir)
    if state is not None:
        log.info("resumed from %s/checkpoints/%d", workdir, int(jax.device_get(state.step)))
    elif config.train.init_from:  # e.g. V-JEPA 2's cooldown at a larger clip
        state, from_step = workdir_lib.init_from(config.train.init_from,
                                                 config.train.init_from_step or None,
                                                 abstract_state, state_shardings, config)
        log.info("initialised from %s step %d (weights, target, AdamW moments); the step "
                 "count starts at 0", config.train.init_from, from_step)
    else:
        state = init(init_rng)
    start = int(jax.device_get(state.step))
    writer = logger.MetricWriter(workdir, enabled=main_process, resume_step=start)

    # ---------------------------------------------------------------- loop
    stop = {"signal": None}
    signal.signal(signal.SIGTERM, lambda signum, _: stop.update(signal=signum))
    last_step = total_steps if not config.train.stop_after else min(
        total_steps, start + config.train.stop_after)
    skips = pipeline.SkipCounts(pipeline.source_labels(config))  # unusable videos per index file
    first_rank, rank_warned = {}, set()  # per monitor: first logged value, warned already
    compiled = None
    if start >= total_steps:
        log.info("%s is already complete (step %d of %d): nothing to train", workdir, start,
                 total_steps)
    bar = tqdm.tqdm(total=total_steps, initial=start, unit="step", dynamic_ncols=True,
                    mininterval=2.0, disable=not main_process or start >= total_steps)
    tick, tick_step = time.perf_counter(), start
    step = start
    while step < last_step and stop["signal"] is None:
        checkpoint.check_saves(mngr)  # a failed async save (disk full) stops the run here
        local = next(data_iter)
        skips.add(local)
        skips.check(config.data.max_skip_fraction)
        batch = {"video": jax.make_array_from_process_local_data(batch_sharding, local["video"])}
        if compiled is None:
            compiled = compile_step(step_fn, state, batch, step_rng)
        state, metrics = compiled(state, batch, step_rng)
        step += 1
        bar.update(1)

        if step % config.train.log_every == 0 or step == last_step:
            metrics = jax.device_get(metrics)
            now = time.perf_counter()
            metrics["clips_per_s"] = (step - tick_step) * b / (now - tick)
            metrics.update(skips.metrics())  # bad_videos (+ bad_videos/<file>, seen_videos/<file>)
            tick, tick_step = now, step
            writer.write(step, metrics)
            bar.set_postfix(loss=f"{metrics['loss']:.4f}", clips_s=f"{metrics['clips_per_s']:.1f}")
            for key, features in (("target_rank", "target"), ("context_rank", "online encoder")):
                first_rank.setdefault(key, float(metrics[key]))
                if (key not in rank_warned
                        and metrics[key] < config.train.rank_warning * first_rank[key]):
                    rank_warned.add(key)
                    log.warning("step %d: %s fell from %.1f to %.1f: the %s features may be "
                                "collapsing onto few directions, or only dropping the position "
                                "table (docs/MODEL.md, 'Collapse')", step,
                                key, first_rank[key], metrics[key], features)
            if not np.isfinite(metrics["loss"]):
                log.warning("step %d: non-finite loss %s (update skipped)", step, metrics["loss"])
            if metrics["skipped"] > config.train.max_skipped_steps:
                checkpoint.save(mngr, state, data_iter, meta, force=True)
                checkpoint.finish(mngr)
                raise FloatingPointError(
                    f"step {step}: {int(metrics['skipped'])} steps had non-finite gradients or "
                    "updates "
                    f"(limit train.max_skipped_steps={config.train.max_skipped_steps}); "
                    "lower optim.lr or check the data. Last state saved.")
        if config.train.eval_every and step % config.train.eval_every == 0:
            scores = online.online_eval(model.encoder, state.target_params, config)
            writer.write(step, {f"online/{k}": v for k, v in scores.items()})
            log.info("step %d: online eval %s", step,
                     ", ".join(f"{k} {v:.1f}" for k, v in scores.items()))
        if step % config.train.checkpoint_every == 0:
            checkpoint.save(mngr, state, data_iter, meta)
    bar.close()
    if skips.bad.sum():
        log.info("%s", skips.summary())

    # ---------------------------------------------------------------- final save and plot
    if mngr.latest_step() != step:
        checkpoint.save(mngr, state, data_iter, meta, force=True)
    checkpoint.finish(mngr)
    mngr.close()
    writer.close()
    if main_process and logger.read(workdir):  # stopped before its first log: nothing to plot
        log.info("plot: %s", plot.plot(workdir))
    if stop["signal"] is not None:
        # Not exit 0: a scheduler must tell a pre-empted run (requeue it) from a finished one.
        raise cli.Preempted(f"received signal {stop['signal']}: saved step {step} of "
                            f"{total_steps}; run the same command to resume (with "
                            "data.num_workers > 0, Grain may take up to 25 s per worker to stop; "
                            "the checkpoint is complete)")
    return state


def define_flags():
    """Program flags; defined only when run as a program so modules can be imported together."""
    config_flags.DEFINE_config_file("config", None, "Config file (configs/pretrain/*.py).",
                                    lock_config=True)
    flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and plots.")
    distributed.define_flags()


if __name__ == "__main__":
    define_flags()
    cli.run_workdir_program(run, "vjepa_jax.train")
