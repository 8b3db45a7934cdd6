"""Convert between vjepa_jax workdirs and the official PyTorch checkpoint layout (VJEPA_SPEC §6).

    python -m vjepa_jax.convert to-torch --workdir DIR [--step N] --out FILE.pth.tar
    python -m vjepa_jax.convert to-torch --workdir DIR --out FILE.safetensors --format safetensors
    python -m vjepa_jax.convert to-torch --workdir DIR --out HF_DIR --format hf      # V-JEPA 2
    python -m vjepa_jax.convert from-torch --checkpoint FILE.pth.tar|HF_DIR --workdir DIR [--config F[:ARG]]

`to-torch` writes the dict that the official `save_checkpoint` writes: `encoder`, `predictor`,
`target_encoder` state dicts under `module.backbone.` names in PyTorch layouts (with the frozen
sin-cos tables), the AdamW state under `opt`, a fresh GradScaler state, `epoch` and the scalars.
`from-torch` reads such a file (prefixes optional), infers the model from its shapes and tables
and writes an Orbax checkpoint that `vjepa_jax.train` resumes from. Loading is strict: every
missing, unexpected or wrongly shaped key is listed in one error. The names and geometry are the
method's layout (vjepa_jax/methods/<method>/layout.py); the files and the AdamW mapping are in
vjepa_jax/interop/. V-JEPA 2 files hold no position table, so the clip shape is not in them:
from-torch takes --num_frames / --crop_size (default 16 x 256). `--format hf` writes a V-JEPA 2
run as a Hugging Face `transformers` VJEPA2Model directory (interop/hf.py), which from-torch
reads back (the encoder as both online and target, AdamW moments from zero).
"""
import collections
import json
import logging
import os

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

from vjepa_jax import checkpoint, cli, config as config_lib, logger, methods, mismatch, optim
from vjepa_jax import train_state
from vjepa_jax import workdir as workdir_lib
from vjepa_jax.interop import adamw, files, hf, state_dicts

log = logging.getLogger("vjepa_jax.convert")


def _last_loss(workdir, step):
    rows = logger.read_rows(os.path.join(workdir, "metrics.jsonl"))
    losses = [r["loss"] for r in rows if "loss" in r and r["step"] <= step]
    return float(losses[-1]) if losses else float("nan")


# ---------------------------------------------------------------------------------------------
# The two directions


FORMATS = ("torch", "safetensors", "hf")


def to_torch(workdir, out, step=None, fmt="torch", which="target"):
    """Write checkpoint `step` of a workdir as an official .pth.tar, the encoder as safetensors,
    or (V-JEPA 2) encoder + predictor as a transformers VJEPA2Model directory `out`."""
    if fmt not in FORMATS:
        raise ValueError(f"--format {fmt!r}: use one of {', '.join(FORMATS)}")
    if which not in ("target", "encoder"):
        raise ValueError(f"--which {which!r}: use 'target' or 'encoder'")
    if fmt == "torch":
        torch = files.import_torch()
    parts = ("step", "params", "target_params") + (("opt_state",) if fmt == "torch" else ())
    tree, config, _, step = workdir_lib.read_workdir(workdir, step, parts)
    layout = methods.get(config.method).layout
    model = methods.get(config.method).build(config)
    enc_table, pred_table = layout.tables(model.encoder, model.predictor)
    specs = layout.SPECS
    target = state_dicts.module_to_torch(tree["target_params"], specs["encoder"], enc_table)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    meta = {"vjepa_jax.which": which, "vjepa_jax.step": step, "vjepa_jax.method": config.method,
            "vjepa_jax.model": json.dumps(config.model.to_dict())}
    weights = target if which == "target" else state_dicts.module_to_torch(
        tree["params"]["encoder"], specs["encoder"], enc_table)
    if fmt == "safetensors":
        files.write_safetensors(out, weights, {"format": "pt", **meta})
        return out
    if fmt == "hf":
        if config.method != hf.METHOD:
            raise ValueError(f"--format hf: transformers' VJEPA2 layout is V-JEPA 2's; {workdir} "
                             f"is a config.method={config.method!r} run")
        hf_config = hf.config_json(config.model, model.encoder.shape, model.predictor)
        predictor = state_dicts.module_to_torch(tree["params"]["predictor"], specs["predictor"],
                                                pred_table)
        return hf.write_model_dir(out, weights, predictor, hf_config, meta)
    if config.model.get("rope", "none") == "interleaved":
        log.warning("model.rope='interleaved' (V-JEPA 2.1) is not recorded in an official file: "
                    "import %s with a config that sets it (the default is 'tiled')", out)
    with_prefix = lambda sd: collections.OrderedDict(
        (layout.PREFIX + k, torch.from_numpy(v)) for k, v in sd.items())
    ipe = int(config.optim.ipe)
    ckpt = {
        "encoder": with_prefix(state_dicts.module_to_torch(tree["params"]["encoder"],
                                                           specs["encoder"], enc_table)),
        "predictor": with_prefix(state_dicts.module_to_torch(tree["params"]["predictor"],
                                                             specs["predictor"], pred_table)),
        "target_encoder": with_prefix(target),
        "opt": adamw.adamw_to_torch(tree["opt_state"],
                                    state_dicts.torch_order(tree["params"], specs,
                                                            (enc_table, pred_table)),
                                    config.optim, step),
        "scaler": dict(state_dicts.FRESH_SCALER),
        "epoch": int(step) // ipe,
        "loss": _last_loss(workdir, step),
        "batch_size": int(config.data.batch_size),  # global batch, with world_size 1
        "world_size": 1,
        "lr": float(config.optim.lr),
    }
    if step % ipe:
        log.warning("step %d is not a multiple of optim.ipe=%d: the file says epoch %d, and "
                        "the official code resumes its schedules at step %d", step, ipe,
                        step // ipe, (step // ipe) * ipe)
    tmp = out + ".tmp"
    torch.save(ckpt, tmp)
    os.replace(tmp, out)
    return out


def from_torch(path, workdir, config=None, num_frames=None, crop_size=None, step=None,
               fresh_optimizer=False, allow_pickle=False):
    """Official .pth.tar (or a transformers VJEPA2 directory) -> Orbax checkpoint in `workdir`
    that `vjepa_jax.train` resumes; returns its step.

    config: a ConfigDict (or 'file.py[:ARG]') the run will use; default base_config() with the
    inferred model. The step is `epoch * optim.ipe` of the file unless `step` is given.
    num_frames / crop_size: the clip a V-JEPA 2 file was trained on (default 16 x 256).
    """
    explicit = config is not None
    if isinstance(config, str):
        config = config_lib.load_config_file(config)
    ckpt_dir = os.path.join(workdir, "checkpoints")
    if os.path.isdir(ckpt_dir) and os.listdir(ckpt_dir):
        raise ValueError(f"--workdir {workdir} already holds checkpoints; use a new directory")
    hf_geometry = None
    if hf.is_model_dir(path):  # a transformers directory: one encoder, no optimizer, no epoch
        encoder_sd, predictor_sd, hf_config, _ = hf.read_model_dir(path)
        ckpt = {"target_encoder": encoder_sd, **({"predictor": predictor_sd} if predictor_sd else {})}
        hf_geometry = hf.geometry(hf_config, os.path.join(path, hf.CONFIG))
    else:
        ckpt = files.read_torch_file(path, allow_pickle)
    if "predictor" not in ckpt:
        raise ValueError(f"{path} has no 'predictor': a training checkpoint needs one "
                         "(for features only, use vjepa_jax.load_encoder)")
    online_sd = ckpt.get("encoder")
    target_sd = ckpt.get("target_encoder")
    if online_sd is None and target_sd is None:
        raise ValueError(f"{path} has neither 'encoder' nor 'target_encoder'")
    if online_sd is None or target_sd is None:
        log.warning("%s has only %s: using it for both the online and the target encoder",
                        path, "target_encoder" if online_sd is None else "encoder")
    online_sd = online_sd if online_sd is not None else target_sd
    target_sd = target_sd if target_sd is not None else online_sd
    if explicit:
        num_frames = num_frames or config.model.num_frames
        crop_size = crop_size or config.model.crop_size
    if not explicit:
        config = config_lib.base_config(hf.METHOD if hf_geometry else methods.detect(online_sd))
    layout = methods.get(config.method).layout
    if hf_geometry is not None:
        if config.method != hf.METHOD:
            raise ValueError(f"{path} is a transformers VJEPA2 directory; --config has "
                             f"config.method={config.method!r}, not {hf.METHOD!r}")
        geometry = dict(hf_geometry, num_frames=num_frames or hf_geometry["num_frames"],
                        crop_size=crop_size or hf_geometry["crop_size"])
        model_cfg = hf.model_config(geometry, config.model if explicit else None, path)
    else:
        geometry = layout.infer_model(online_sd, ckpt["predictor"], num_frames, crop_size)
        # with an explicit config this only checks that the file fits it
        model_cfg = layout.model_config(geometry, config.model if explicit else None)
    if not explicit:
        config.model = model_cfg
    layout.check_config(geometry, config)

    model = methods.get(config.method).build(config)
    abstract = workdir_lib.abstract_params(model)
    enc_table, pred_table = layout.tables(model.encoder, model.predictor)
    specs = layout.SPECS
    params = {"encoder": state_dicts.module_from_torch(online_sd, abstract["encoder"],
                                                       specs["encoder"], enc_table,
                                                       f"{path} encoder"),
              "predictor": state_dicts.module_from_torch(ckpt["predictor"], abstract["predictor"],
                                                         specs["predictor"], pred_table,
                                                         f"{path} predictor")}
    target = state_dicts.module_from_torch(target_sd, abstract["encoder"], specs["encoder"],
                                           enc_table, f"{path} target_encoder")
    if step is None:
        epoch = ckpt.get("epoch")
        step = int(epoch) * int(config.optim.ipe) if isinstance(epoch, (int, np.integer)) else 0
        if not isinstance(epoch, (int, np.integer)):
            log.warning("%s has no integer 'epoch' (%r): storing step 0", path, epoch)
    tx = optim.make_optimizer(config.optim, abstract)
    params = jax.tree.map(jnp.asarray, params)
    opt_state = tx.init(params)
    if not fresh_optimizer and isinstance(ckpt.get("opt"), dict) and ckpt["opt"].get("state"):
        order = state_dicts.torch_order(params, specs, (enc_table, pred_table))
        opt_state = adamw.adamw_from_torch(ckpt["opt"], opt_state, params, order, f"{path} opt")
    else:
        log.warning("optimizer moments start from zero (%s)", "--fresh_optimizer"
                        if fresh_optimizer else f"{path} has no AdamW state")
    state = train_state.TrainState(step=jnp.asarray(step, jnp.int32), apply_fn=None, params=params,
                                   tx=tx, opt_state=opt_state,
                                   target_params=jax.tree.map(jnp.asarray, target),
                                   skipped=jnp.zeros((), jnp.int32))

    # Refuse NaN/Inf weights before anything is written (training would resume on them).
    mismatch.check_finite({"encoder": params["encoder"], "predictor": params["predictor"],
                           "target_encoder": state.target_params}, f"{path}")
    meta = workdir_lib.model_meta(config, model)
    workdir_lib.prepare_workdir(workdir)
    mngr = checkpoint.manager(workdir, config.train.keep_checkpoints)
    checkpoint.save(mngr, state, None, meta, force=True)
    mngr.wait_until_finished()
    mngr.close()
    return step


# ---------------------------------------------------------------------------------------------
# CLI

COMMANDS = ("to-torch", "from-torch")
USAGE_HINT = "python -m vjepa_jax.convert --helpfull lists the flags; docs/INTEROP.md has examples"


def define_flags():
    """Program flags; defined only when run as a program so modules can be imported together."""
    flags.DEFINE_string("workdir", None, "to-torch: training directory with checkpoints/; "
                        "from-torch: new directory for the Orbax checkpoint.")
    flags.DEFINE_integer("step", None, "to-torch: checkpoint step (default: latest); "
                         "from-torch: step to store (default: epoch * ipe).")
    flags.DEFINE_string("out", None, "to-torch: output file (.pth.tar or .safetensors) or, with "
                        "--format hf, directory.")
    flags.DEFINE_enum("format", "torch", list(FORMATS),
                      "to-torch: torch = full official checkpoint; safetensors = one encoder, no "
                      "torch needed; hf = V-JEPA 2 encoder + predictor as a transformers "
                      "VJEPA2Model directory (model.safetensors + config.json).")
    flags.DEFINE_enum("which", "target", ["target", "encoder"],
                      "to-torch: encoder written by --format safetensors|hf (default: EMA target).")
    flags.DEFINE_string("checkpoint", None, "from-torch: official pretraining .pth.tar, or a "
                        "transformers VJEPA2 directory.")
    flags.DEFINE_string("config", None, "from-torch: config file[:ARG] the run will use "
                        "(default: base config + inferred model).")
    flags.DEFINE_integer("num_frames", None, "from-torch: clip frames (default: from pos_embed; "
                         "V-JEPA 2 has none: 16, or config.json's).")
    flags.DEFINE_integer("crop_size", None, "from-torch: crop size (default: from pos_embed; "
                         "V-JEPA 2: 256, or config.json's).")
    flags.DEFINE_bool("fresh_optimizer", False, "from-torch: start AdamW moments from zero "
                      "instead of importing the file's `opt`.")
    flags.DEFINE_bool("allow_pickle", False, "from-torch: torch.load with weights_only=False "
                      "(only for files you trust).")


def main(argv):
    f = flags.FLAGS
    if len(argv) != 2 or argv[1] not in COMMANDS:
        raise cli.UsageError(f"expected one command, {' or '.join(COMMANDS)} ({USAGE_HINT})")
    required = ("workdir", "out") if argv[1] == "to-torch" else ("checkpoint", "workdir")
    missing = [f"--{k}" for k in required if not f[k].value]
    if missing:
        raise cli.UsageError(f"{argv[1]} needs {' and '.join(missing)} ({USAGE_HINT})")
    if argv[1] == "to-torch":
        print(f"wrote {to_torch(f.workdir, f.out, f.step, f.format, f.which)}")
    else:
        step = from_torch(f.checkpoint, f.workdir, f.config, f.num_frames, f.crop_size, f.step,
                          f.fresh_optimizer, f.allow_pickle)
        print(f"wrote {f.workdir}/checkpoints/{step}; continue with "
              f"python -m vjepa_jax.train --config CONFIG --workdir {f.workdir}")


if __name__ == "__main__":
    define_flags()
    cli.run_program(main, "vjepa_jax.convert")
