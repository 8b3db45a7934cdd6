"""Frozen evaluation: train an attentive probe on a pretrained encoder and report top-1 / top-5.

    python -m vjepa_jax.eval --config configs/evals/demo.py --workdir /tmp/vjepa_demo_eval
    python -m vjepa_jax.eval --config configs/evals/vitl16_k400.py --workdir DIR \
        --config.pretrained=/ckpt/vitl16.pth.tar \
        --config.data.train_index=TRAIN.csv --config.data.val_index=VAL.csv

`config.pretrained` is a pretraining workdir or an official .pth.tar; '' evaluates a random-init
encoder (the baseline every number should be compared with). The encoder is frozen: its tokens
are computed inside the jitted step, without gradient, and handed to the probe in
probe.feature_dtype; with probe.cache_features both splits are encoded once up front instead and
the probe trains on the stored tokens (small datasets: vjepa_jax/feature_cache.py). Validation
runs after every epoch; the probe is saved with Orbax at DIR/probe_checkpoints/<step>/ every
epoch and a rerun with the same --workdir resumes.
Writes DIR/eval_metrics.jsonl (one row per epoch) and DIR/eval_summary.json.
"""
import functools
import json
import logging
import os
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import tqdm
from absl import flags
from ml_collections import config_flags

from vjepa_jax import checkpoint, config as config_lib, distributed, eval_configs, eval_data
from vjepa_jax import feature_cache, logger, optim
from vjepa_jax import sharding
from vjepa_jax.models import probe as probe_lib, vit

log = logging.getLogger("vjepa_jax.eval")


# Encoder geometry that must agree with the pretrained checkpoint; frames and resolution may differ
# (the sin-cos table is rebuilt for the eval grid, as the reference's eval loader does).
ARCHITECTURE = ("width", "depth", "num_heads", "mlp_hidden", "patch_size", "tubelet_size")


# ----------------------------------------------------------------------------- pretrained encoder
def load_pretrained(config):
    """(host encoder params, description, pretraining `config.model` dict) of config.pretrained.

    A pretraining workdir (latest checkpoint), an official .pth.tar or a .safetensors export;
    config.which picks the EMA target encoder ('target', what the reference evaluates) or the
    online one ('encoder').
    """
    from vjepa_jax.features import load_encoder  # imported here: it pulls in the torch converter

    encoder = load_encoder(config.pretrained, which=config.which)
    return jax.device_get(encoder.params), encoder.source, dict(encoder.model_config)


def check_architecture(saved_model, model_cfg, where):
    """Raise ValueError naming every geometry field where checkpoint and config.model differ."""
    saved_cfg = ml_collections.ConfigDict(model_cfg.to_dict())
    saved_cfg.update({k: v for k, v in saved_model.items() if k in saved_cfg})
    saved, want = vit.shape_from_config(saved_cfg), vit.shape_from_config(model_cfg)
    diffs = [f"  {k}: checkpoint {getattr(saved, k)} vs config {getattr(want, k)}"
             for k in ARCHITECTURE if getattr(saved, k) != getattr(want, k)]
    if saved_cfg.uniform_power != model_cfg.uniform_power:
        diffs.append(f"  uniform_power: checkpoint {saved_cfg.uniform_power} vs config "
                     f"{model_cfg.uniform_power}")
    if diffs:
        raise ValueError(f"{where} holds a different encoder than config.model:\n"
                         + "\n".join(diffs) + "\nSet config.model (variant, width, depth, "
                         "num_heads, patch_size, tubelet_size) to the pretraining model.")


def check_params(params, abstract, where):
    """Raise ValueError naming every missing, unexpected or wrongly shaped encoder parameter."""
    flat = {"/".join(map(str, k)): v for k, v in _flatten(params)}
    want = {"/".join(map(str, k)): v for k, v in _flatten(abstract)}
    problems = [f"  missing {k} {tuple(v.shape)}" for k, v in want.items() if k not in flat]
    problems += [f"  unexpected {k} {tuple(v.shape)}" for k, v in flat.items() if k not in want]
    problems += [f"  {k}: checkpoint {tuple(flat[k].shape)} vs model {tuple(v.shape)}"
                 for k, v in want.items() if k in flat and tuple(flat[k].shape) != tuple(v.shape)]
    if problems:
        raise ValueError(f"{where}: encoder parameters do not match config.model:\n"
                         + "\n".join(problems))


def _flatten(tree):
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return [(tuple(getattr(p, "key", getattr(p, "idx", p)) for p in path), v) for path, v in leaves]


# ----------------------------------------------------------------------------- optimizer
def schedule_config(optim_cfg, ipe):
    """The probe's optim section in the form optim.schedules reads (no ipe_scale, no EMA)."""
    return ml_collections.ConfigDict(dict(
        epochs=optim_cfg.epochs, ipe=ipe, ipe_scale=1.0, warmup=optim_cfg.warmup,
        start_lr=optim_cfg.start_lr, lr=optim_cfg.lr, final_lr=optim_cfg.final_lr,
        weight_decay=optim_cfg.weight_decay, final_weight_decay=optim_cfg.final_weight_decay,
        clip_grad=optim_cfg.clip_grad, ema=(1.0, 1.0), betas=tuple(optim_cfg.betas),
        eps=optim_cfg.eps))


# ----------------------------------------------------------------------------- steps
def batch_tokens(encoder, encoder_params, batch, probe_cfg):
    """The frozen tokens of a batch: cached ones (batch['tokens']) or encoded from batch['video']."""
    if "tokens" in batch:
        return batch["tokens"]
    return probe_lib.frozen_features(encoder, encoder_params, batch["video"],
                                     jnp.dtype(probe_cfg.feature_dtype), probe_cfg.encoder_batch)


def train_step(state, encoder_params, batch, *, encoder, probe, tx, sched_cfg, probe_cfg):
    """One probe update on frozen features; state = {'step', 'params', 'opt_state'}."""
    s = state["step"] + 1  # schedules advance before the update, as the reference's do
    tokens = batch_tokens(encoder, encoder_params, batch, probe_cfg)
    labels = batch["label"]

    def loss_fn(params):
        logits = probe_lib.view_logits(probe, params, tokens)
        return probe_lib.view_loss(logits, labels).mean(), logits

    (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
    sched = optim.schedules(sched_cfg)(s)
    clip = sched_cfg.clip_grad or None
    grads, norms = optim.clip_by_module({"probe": grads}, clip, jnp.asarray(True))
    opt_state = optim.set_hyperparams(state["opt_state"], sched["lr"], sched["wd"])
    updates, opt_state = tx.update(grads["probe"], opt_state, state["params"])
    params = optax.apply_updates(state["params"], updates)
    top1 = probe_lib.topk_correct(probe_lib.view_probs(logits), labels, 1).mean()
    metrics = {"loss": loss, "top1": top1, "lr": sched["lr"], "wd": sched["wd"],
               "grad_norm": norms["probe"]}
    return {"step": state["step"] + 1, "params": params, "opt_state": opt_state}, metrics


def factor_hits(probs, labels, factors):
    """{'top1_NAME': 1.0 where the top-1 class agrees with the label on factor NAME} ({} if None).

    factors maps class ids to named parts (eval_data.label_factors), e.g. the shape and the
    direction of a generated clip's class.
    """
    if factors is None:
        return {}
    pred, true = factors(jnp.argmax(probs, axis=-1)), factors(labels)
    return {f"top1_{name}": (pred[name] == true[name]).astype(jnp.float32) for name in pred}


def eval_step(params, encoder_params, batch, *, encoder, probe, probe_cfg, factors=None):
    """Sums over the valid examples of a batch: loss, top-1 (overall and per factor), top-5, count."""
    tokens = batch_tokens(encoder, encoder_params, batch, probe_cfg)
    logits = probe_lib.view_logits(probe, params, tokens)
    probs = probe_lib.view_probs(logits)
    valid = batch["valid"].astype(jnp.float32)
    hits = factor_hits(probs, batch["label"], factors)
    return {"loss": jnp.sum(probe_lib.view_loss(logits, batch["label"]) * valid),
            "top1": jnp.sum(probe_lib.topk_correct(probs, batch["label"], 1) * valid),
            "top5": jnp.sum(probe_lib.topk_correct(probs, batch["label"], 5) * valid),
            "count": jnp.sum(valid), **{k: jnp.sum(v * valid) for k, v in hits.items()}}


def _global(local, batch_sharding):
    return {k: jax.make_array_from_process_local_data(batch_sharding, np.asarray(local[k]))
            for k in local if k != "skipped"}


def validate_probe(eval_fn, params, encoder_params, val_ds, to_global):
    """Loss, top-1 (and per factor) and top-5 (percent) over the validation split, no padding."""
    sums = None
    for local in val_ds:
        out = eval_fn(params, encoder_params, to_global(local))
        sums = out if sums is None else jax.tree.map(jnp.add, sums, out)
    sums = jax.device_get(sums)
    n = max(float(sums["count"]), 1.0)
    out = {"val_loss": float(sums["loss"]) / n, "val_top1": 100.0 * float(sums["top1"]) / n,
           "val_top5": 100.0 * float(sums["top5"]) / n, "val_count": int(sums["count"])}
    out.update({f"val_{k}": 100.0 * float(v) / n for k, v in sums.items() if k.startswith("top1_")})
    return out


def run(config, workdir):
    """Train and validate the probe; returns the list of per-epoch metric rows."""
    # ---------------------------------------------------------------- setup
    eval_configs.validate(config)
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
    encoder = vit.encoder_from_config(config.model)
    shape = encoder.shape
    example = jnp.zeros((1, shape.num_frames, shape.crop_size, shape.crop_size, 3), jnp.float32)
    boxed = jax.eval_shape(encoder.init, jax.random.key(0), example)["params"]
    enc_shardings = sharding.param_shardings(boxed, mesh)
    if config.pretrained:
        host_params, source, saved_model = load_pretrained(config)
        check_architecture(saved_model, config.model, config.pretrained)
        check_params(host_params, nn.unbox(boxed), config.pretrained)
        encoder_params = jax.device_put(host_params, enc_shardings)
    else:
        source = f"random-init encoder (seed {config.seed}): a baseline, not a pretrained model"
        log.warning("config.pretrained is empty: evaluating a RANDOM-INIT encoder")
        encoder_params = vit.random_init_params(encoder, config.seed, enc_shardings)
    log.info("encoder: %s", source)

    # ---------------------------------------------------------------- train batches
    # Streamed through the Grain pipeline (augmented, encoded every step), or with
    # probe.cache_features both splits encoded once here and the probe trained on stored tokens.
    to_global = functools.partial(_global, batch_sharding=batch_sharding)
    if cached:
        encode_fn = jax.jit(lambda p, b: batch_tokens(encoder, p, b, config.probe),
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
    sched_cfg = schedule_config(config.optim, ipe)

    def init_state(rng):
        params = probe.init(rng, feats)["params"]
        return {"step": jnp.zeros((), jnp.int32), "params": params,
                "opt_state": tx.init(params)}

    tx = optim.make_optimizer(sched_cfg,
                              jax.eval_shape(probe.init, jax.random.key(0), feats)["params"])
    abstract_state = jax.eval_shape(init_state, jax.random.key(0))
    state_shardings = jax.tree.map(lambda _: repl, abstract_state)
    n_params = sum(x.size for x in jax.tree.leaves(abstract_state["params"]))
    log.info("probe: %s parameters, %d heads", f"{n_params:,}", probe.num_heads)

    # ---------------------------------------------------------------- compiled steps
    step_fn = jax.jit(
        functools.partial(train_step, encoder=encoder, probe=probe, tx=tx, sched_cfg=sched_cfg,
                          probe_cfg=config.probe),
        donate_argnums=(0,), in_shardings=(state_shardings, enc_shardings, batch_sharding),
        out_shardings=(state_shardings, repl))
    eval_fn = jax.jit(functools.partial(eval_step, encoder=encoder, probe=probe,
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
        checkpoint.check_meta(checkpoint.read_meta(mngr, latest), meta, workdir,
                              keys=("model", "probe", "pretrained", "which", "ipe"))
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
        val = validate_probe(eval_fn, state["params"], encoder_params, val_ds, to_global)
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


def define_flags():
    """Program flags; defined only when run as a program, so train and eval import side by side."""
    config_flags.DEFINE_config_file("config", None, "Config file (configs/evals/*.py).",
                                    lock_config=True)
    flags.DEFINE_string("workdir", None, "Directory for probe checkpoints and metrics.")
    distributed.define_flags()


if __name__ == "__main__":
    define_flags()
    config_lib.run_workdir_program(run, "vjepa_jax.eval")
