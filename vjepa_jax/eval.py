"""Frozen evaluation: train an attentive probe on a pretrained encoder and report top-1 / top-5.

    python -m vjepa_jax.eval --config configs/evals/demo.py --workdir /tmp/vjepa_demo_eval
    python -m vjepa_jax.eval --config configs/evals/probe.py:vitl16,k400 --workdir DIR \
        --config.pretrained=/ckpt/vitl16.pth.tar \
        --config.data.train_index=TRAIN.csv --config.data.val_index=VAL.csv

`config.pretrained` is a pretraining workdir or an official .pth.tar; '' evaluates a random-init
encoder (the baseline every number should be compared with). The encoder is frozen: its tokens
are computed inside the jitted step, without gradient, and handed to the probe in
probe.feature_dtype; with probe.cache_features both splits are encoded once up front instead and
the probe trains on the stored tokens (small datasets: vjepa_jax/evaluation/feature_cache.py).
Validation runs after every epoch; the probe is saved with Orbax at
DIR/probe_checkpoints/<step>/ every epoch and a rerun with the same --workdir resumes.
Writes DIR/eval_metrics.jsonl (one row per epoch) and DIR/eval_summary.json.

    python -m vjepa_jax.eval --config configs/evals/probe.py:vitl16,k400 \
        --config.pretrained=/ckpt/vitl16.pth.tar --config.data.val_index=VAL.csv \
        --config.eval.val_only=True --config.probe.checkpoint=/ckpt/k400-probe.pth.tar

evaluates a given probe (an eval workdir or an official probe file) on the validation split
with the reference protocol, no training, and prints top-1 / top-5 beside the published top-1
of the config (`eval.published_top1`) and what the probe's own run reported; --workdir is
optional then (DIR/val_only.json).
"""
import functools
import json
import logging
import os
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import tqdm
from absl import flags
from ml_collections import config_flags

from vjepa_jax import (checkpoint, classifier, cli, distributed, logger, methods, mismatch, optim,
                       sharding)
from vjepa_jax.evaluation import configs as eval_configs, data as eval_data, feature_cache
from vjepa_jax.evaluation import probe_steps
from vjepa_jax.loader import load_encoder
from vjepa_jax.models import probe as probe_lib, vit

log = logging.getLogger("vjepa_jax.eval")


def frozen_encoder(config, mesh):
    """(encoder module, params on the mesh, their shardings, description) of config.pretrained,
    or a random-init encoder when it is ''."""
    encoder = methods.get(config.method).encoder_from_config(config.model)
    boxed = jax.eval_shape(lambda k: vit.init_params(encoder, k), jax.random.key(0))
    enc_shardings = sharding.param_shardings(boxed, mesh)
    if config.pretrained:
        pretrained = load_encoder(config.pretrained, which=config.which)
        host_params, source = jax.device_get(pretrained.params), pretrained.source
        probe_steps.check_architecture(dict(pretrained.model_config), config.model,
                                       config.pretrained)
        mismatch.check_tree_shapes(host_params, nn.unbox(boxed),
                                   f"{config.pretrained}: encoder parameters vs config.model")
        encoder_params = jax.device_put(host_params, enc_shardings)
    else:
        source = f"random-init encoder (seed {config.seed}): a baseline, not a pretrained model"
        log.warning("config.pretrained is empty: evaluating a RANDOM-INIT encoder")
        encoder_params = vit.random_init_params(encoder, config.seed, enc_shardings)
    log.info("encoder: %s", source)
    return encoder, encoder_params, enc_shardings, source


def run(config, workdir):
    """Train and validate the probe; returns the list of per-epoch metric rows.

    With eval.val_only: evaluate probe.checkpoint instead (`validate_only`), workdir optional.
    """
    # ---------------------------------------------------------------- setup
    eval_configs.validate(config)
    if config.eval.val_only:
        return validate_only(config, workdir)
    if not workdir:
        raise ValueError("--workdir is required to train a probe (it is optional only with "
                         "--config.eval.val_only=True)")
    os.makedirs(workdir, exist_ok=True)
    main_process = jax.process_index() == 0
    pi, pc = jax.process_index(), jax.process_count()

    # ---------------------------------------------------------------- mesh
    mesh = sharding.make_mesh(config.mesh)
    sharding.check_divisible("data.batch_size", config.data.batch_size, mesh)
    sharding.check_divisible("data.val_batch_size",
                             config.data.val_batch_size or config.data.batch_size, mesh)
    batch_sharding, repl = sharding.batch_sharding(mesh), sharding.replicated(mesh)

    # ---------------------------------------------------------------- data
    cached = config.probe.cache_features
    if cached and pc > 1:
        raise ValueError(f"probe.cache_features=True runs in one process, not {pc}: the cache is "
                         "not split over hosts")
    train_source = eval_data.make_source(config, train=True)
    val_source = eval_data.make_source(config, train=False)
    val_ds = eval_data.make_val_dataset(config, val_source, process_index=pi, process_count=pc)
    log.info("%d train / %d val examples, %d classes", len(train_source), len(val_source),
             config.data.num_classes)

    # ---------------------------------------------------------------- frozen encoder
    encoder, encoder_params, enc_shardings, source = frozen_encoder(config, mesh)
    shape = encoder.shape

    # ---------------------------------------------------------------- train batches
    # Streamed through the Grain pipeline (augmented, encoded every step), or with
    # probe.cache_features both splits encoded once here and the probe trained on stored tokens.
    to_global = functools.partial(probe_steps.to_global, batch_sharding=batch_sharding)
    if cached:
        encode_fn = jax.jit(lambda p, b: probe_steps.batch_tokens(encoder, p, b, config.probe),
                            in_shardings=(enc_shardings, batch_sharding))
        val_bs = config.data.val_batch_size or config.data.batch_size
        train_cache = feature_cache.encode_split(
            encode_fn, encoder_params, eval_data.make_val_dataset(config, train_source), to_global,
            "train split", -(-len(train_source) // val_bs))
        val_cache = feature_cache.encode_split(encode_fn, encoder_params, val_ds, to_global,
                                               "validation split", -(-len(val_source) // val_bs))
        val_ds = feature_cache.ValBatches(val_cache, val_bs)
        num_train, grain_iter = len(train_cache["label"]), None
    else:
        num_train = len(train_source)
        grain_iter = iter(eval_data.make_train_dataset(config, train_source, process_index=pi,
                                                       process_count=pc))
    ipe = config.optim.ipe or num_train // config.data.batch_size
    if ipe < 1:
        raise ValueError(f"{num_train} training examples are fewer than one batch "
                         f"(data.batch_size={config.data.batch_size})")
    total_steps = config.optim.epochs * ipe
    log.info("%d steps per epoch%s", ipe, ", on cached features" if cached else "")

    # ---------------------------------------------------------------- probe and optimizer
    probe = probe_lib.probe_from_config(config, shape, config.data.num_classes)
    feats = jnp.zeros((1, shape.num_tokens, shape.width), jnp.float32)  # one segment
    o = config.optim
    lr_wd = probe_steps.schedule(o, ipe)

    def init_state(rng):
        params = probe.init(rng, feats)["params"]
        return {"step": jnp.zeros((), jnp.int32), "params": params,
                "opt_state": tx.init(params)}

    tx = optim.adamw(jax.eval_shape(probe.init, jax.random.key(0), feats)["params"],
                     betas=o.betas, eps=o.eps, lr=o.start_lr, weight_decay=o.weight_decay)
    abstract_state = jax.eval_shape(init_state, jax.random.key(0))
    state_shardings = jax.tree.map(lambda _: repl, abstract_state)
    n_params = sum(x.size for x in jax.tree.leaves(abstract_state["params"]))
    log.info("probe (%s): %s parameters", config.probe.kind, f"{n_params:,}")

    # ---------------------------------------------------------------- compiled steps
    step_fn = jax.jit(
        functools.partial(probe_steps.train_step, encoder=encoder, probe=probe, tx=tx,
                          lr_wd=lr_wd, clip_grad=o.clip_grad, probe_cfg=config.probe),
        donate_argnums=(0,), in_shardings=(state_shardings, enc_shardings, batch_sharding),
        out_shardings=(state_shardings, repl))
    eval_fn = jax.jit(functools.partial(probe_steps.eval_step, encoder=encoder, probe=probe,
                                        probe_cfg=config.probe,
                                        factors=eval_data.label_factors(config)),
                      in_shardings=(state_shardings["params"], enc_shardings, batch_sharding),
                      out_shardings=repl)

    # ---------------------------------------------------------------- checkpoint: resume or init
    mngr = checkpoint.manager(workdir, config.eval.keep_checkpoints, folder="probe_checkpoints")
    meta = {"model": config.model.to_dict(), "data": config.data.to_dict(),
            "probe": config.probe.to_dict(), "pretrained": config.pretrained,
            "which": config.which, "ipe": ipe, "config": config.to_json()}
    latest = mngr.latest_step()
    if latest is not None:
        saved = checkpoint.read_meta(mngr, latest)
        # Keys added to the probe / model sections since the workdir was written take their
        # defaults, so an older probe run still resumes when nothing it recorded differs.
        base = eval_configs.base_eval_config()
        for section in ("model", "probe"):
            if isinstance(saved.get(section), dict):
                saved[section] = {**base[section].to_dict(), **saved[section]}
        mismatch.check_agrees(saved,
                              {k: meta[k] for k in ("model", "probe", "pretrained", "which", "ipe")},
                              workdir, what="holds a probe of a different setup; refusing to "
                                            "resume or overwrite it")
        state = checkpoint.restore_tree(mngr, latest, abstract_state, state_shardings, grain_iter)
        log.info("resumed probe from %s at step %d", mngr.directory, latest)
    else:
        state = jax.jit(init_state, out_shardings=state_shardings)(jax.random.key(config.seed + 1))
    start = int(jax.device_get(state["step"]))
    train_iter = (feature_cache.TrainBatches(train_cache, config.data.batch_size, config.seed,
                                             start) if cached else grain_iter)
    metrics_path = os.path.join(workdir, "eval_metrics.jsonl")
    # A resumed run drops the rows past its checkpoint.
    rows = logger.truncate_after(metrics_path, start) if main_process else []

    # ---------------------------------------------------------------- loop: one epoch at a time
    first_epoch = start // ipe
    last_epoch = config.optim.epochs
    if config.eval.stop_after_epochs:
        last_epoch = min(last_epoch, first_epoch + config.eval.stop_after_epochs)
    bar = tqdm.tqdm(total=total_steps, initial=start, disable=not main_process, unit="step",
                    dynamic_ncols=True, mininterval=2.0)
    step = start
    for epoch in range(first_epoch, last_epoch):
        tick = time.perf_counter()
        sums = {"loss": jnp.zeros(()), "top1": jnp.zeros(())}
        while step < (epoch + 1) * ipe:
            local = next(train_iter)
            state, metrics = step_fn(state, encoder_params, to_global(local))
            sums = {k: sums[k] + metrics[k] for k in sums}  # on device: no sync per step
            step += 1
            bar.update(1)
            if step % config.eval.log_every == 0 or step == (epoch + 1) * ipe:
                loss = float(jax.device_get(metrics["loss"]))
                if not np.isfinite(loss):
                    raise FloatingPointError(f"step {step}: probe loss is {loss}; lower optim.lr "
                                             "(the last epoch's checkpoint is kept)")
                bar.set_postfix(loss=f"{loss:.3f}")
        val = probe_steps.validate_probe(eval_fn, state["params"], encoder_params, val_ds, to_global)
        sums = jax.device_get(sums)
        row = {"epoch": epoch + 1, "step": step,
               "train_loss": float(sums["loss"]) / ipe,
               "train_top1": 100.0 * float(sums["top1"]) / ipe,
               **val, "lr": float(metrics["lr"]), "wd": float(metrics["wd"]),
               "epoch_time_s": time.perf_counter() - tick}
        rows.append(row)
        msg = (f"epoch {epoch + 1}/{config.optim.epochs}: train loss {row['train_loss']:.4f} "
               f"top-1 {row['train_top1']:.2f} | val top-1 {row['val_top1']:.2f} "
               f"top-5 {row['val_top5']:.2f} ({row['val_count']} examples)")
        factor_keys = [k for k in row if k.startswith("val_top1_")]
        if factor_keys:
            msg += "; top-1 per factor: " + ", ".join(
                f"{k[len('val_top1_'):]} {row[k]:.2f}" for k in factor_keys)
        if main_process:
            bar.write(msg)  # through the progress bar, once (not also to the log)
            logger.append_row(metrics_path, row)
        checkpoint.save_tree(mngr, step, state, grain_iter, meta)
    bar.close()
    mngr.wait_until_finished()
    mngr.close()

    # ---------------------------------------------------------------- summary
    if rows and main_process:
        summary = {"encoder": source, "epochs": rows[-1]["epoch"],
                   "final_val_top1": rows[-1]["val_top1"], "final_val_top5": rows[-1]["val_top5"],
                   "best_val_top1": max(r["val_top1"] for r in rows),
                   **{f"final_{k}": v for k, v in rows[-1].items() if k.startswith("val_top1_")}}
        with open(os.path.join(workdir, "eval_summary.json"), "w") as f:
            json.dump(summary, f, indent=1)
        log.info("summary: %s", summary)
    return rows


def validate_only(config, workdir=None):
    """Top-1 / top-5 of probe.checkpoint on the validation split, beside the published value.

    The protocol is the eval's (data.num_segments x data.num_views, mean of the per-view softmax);
    with probe.cache_features the split is encoded once first, as a training run validates.
    Returns the report dict (also DIR/val_only.json when workdir is given).
    """
    pi, pc = jax.process_index(), jax.process_count()
    mesh = sharding.make_mesh(config.mesh)
    val_bs = config.data.val_batch_size or config.data.batch_size
    sharding.check_divisible("data.val_batch_size", val_bs, mesh)
    batch_sharding, repl = sharding.batch_sharding(mesh), sharding.replicated(mesh)
    to_global = functools.partial(probe_steps.to_global, batch_sharding=batch_sharding)
    val_source = eval_data.make_source(config, train=False)
    val_ds = eval_data.make_val_dataset(config, val_source, process_index=pi, process_count=pc)
    encoder, encoder_params, enc_shardings, source = frozen_encoder(config, mesh)

    # ---------------------------------------------------------------- the given probe
    path = config.probe.checkpoint
    # An official file records no head count (its evals use the encoder's); a workdir its own.
    probe = classifier.load_probe(path, config.probe.num_heads or encoder.shape.num_heads,
                                  dtype=None if os.path.isdir(path) else config.probe.dtype,
                                  attention=config.model.attention)
    if probe.num_classes != config.data.num_classes:
        raise ValueError(f"probe.checkpoint {path} has {probe.num_classes} classes, "
                         f"data.num_classes={config.data.num_classes}")
    width = int(probe.params["linear"]["kernel"].shape[0])
    if width != encoder.shape.width:
        raise ValueError(f"probe.checkpoint {path} has width {width}, the encoder "
                         f"({source}) {encoder.shape.width}")
    if probe.eval_config is not None and probe.eval_config.pretrained != config.pretrained:
        log.warning("probe %s was trained on %r, config.pretrained is %r", path,
                    probe.eval_config.pretrained, config.pretrained)
    log.info("probe: %s (%s)", probe.source, probe.form or "linear")

    # ---------------------------------------------------------------- validation
    if config.probe.cache_features:
        if pc > 1:
            raise ValueError(f"probe.cache_features=True runs in one process, not {pc}")
        encode_fn = jax.jit(lambda p, b: probe_steps.batch_tokens(encoder, p, b, config.probe),
                            in_shardings=(enc_shardings, batch_sharding))
        val_ds = feature_cache.ValBatches(feature_cache.encode_split(
            encode_fn, encoder_params, val_ds, to_global, "validation split",
            -(-len(val_source) // val_bs)), val_bs)
    eval_fn = jax.jit(functools.partial(probe_steps.eval_step, encoder=encoder, probe=probe.module,
                                        probe_cfg=config.probe,
                                        factors=eval_data.label_factors(config)),
                      in_shardings=(repl, enc_shardings, batch_sharding), out_shardings=repl)
    params = jax.device_put(probe.params, repl)
    val = probe_steps.validate_probe(eval_fn, params, encoder_params, val_ds, to_global)

    # ---------------------------------------------------------------- report
    d = config.data
    report = {**val, "probe": probe.source, "encoder": source,
              "protocol": f"{config.model.num_frames} frames x {d.num_segments} segments x "
                          f"{d.num_views} views",
              "published_top1": config.eval.published_top1 or None,
              "reported": probe.reported}
    lines = [f"{path} on {source}, {report['protocol']}: val top-1 {val['val_top1']:.2f} %, "
             f"top-5 {val['val_top5']:.2f} % ({val['val_count']} examples)"]
    if report["published_top1"]:
        lines.append(f"  published top-1 {report['published_top1']:.1f} % (eval.published_top1): "
                     f"difference {val['val_top1'] - report['published_top1']:+.2f}")
    if probe.reported and "val_top1" in probe.reported:
        r = probe.reported
        lines.append(f"  the probe's training run reported top-1 {r['val_top1']:.2f} %, top-5 "
                     f"{r.get('val_top5', float('nan')):.2f} % at epoch {r.get('epoch')}")
    if jax.process_index() == 0:
        print("\n".join(lines), flush=True)
        if workdir:
            os.makedirs(workdir, exist_ok=True)
            with open(os.path.join(workdir, "val_only.json"), "w") as f:
                json.dump(report, f, indent=1)
    return report


def define_flags():
    """Program flags; defined only when run as a program, so train and eval import side by side."""
    config_flags.DEFINE_config_file("config", None, "Config file (configs/evals/probe.py:MODEL,DATASET or demo.py).",
                                    lock_config=True)
    flags.DEFINE_string("workdir", None, "Directory for probe checkpoints and metrics "
                                         "(optional with --config.eval.val_only=True).")
    distributed.define_flags()


def main(argv):
    """`run(--config, --workdir)`; --workdir may be left out with eval.val_only."""
    if len(argv) > 1:
        raise cli.UsageError(f"unexpected arguments: {argv[1:]}")
    config, workdir = flags.FLAGS.config, flags.FLAGS.workdir
    if config is None:
        raise cli.UsageError("--config is required")
    if workdir is None and not config.eval.val_only:
        raise cli.UsageError("--workdir is required (optional only with "
                             "--config.eval.val_only=True)")
    distributed.initialize_from_flags()
    run(config, workdir)


if __name__ == "__main__":
    define_flags()
    cli.run_program(main, "vjepa_jax.eval")
