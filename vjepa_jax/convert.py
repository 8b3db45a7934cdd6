"""PyTorch interop: the official V-JEPA checkpoint layout (VJEPA_SPEC §6) <-> Flax params.

    python -m vjepa_jax.convert to-torch --workdir DIR [--step N] --out FILE.pth.tar
    python -m vjepa_jax.convert to-torch --workdir DIR --out FILE.safetensors --format safetensors
    python -m vjepa_jax.convert from-torch --checkpoint FILE.pth.tar --workdir DIR [--config F[:ARG]]

`to-torch` writes the dict that the official `save_checkpoint` writes: `encoder`, `predictor`,
`target_encoder` state dicts under `module.backbone.` names in PyTorch layouts (with the frozen
sin-cos tables), the AdamW state under `opt`, a fresh GradScaler state, `epoch` and the scalars.
`from-torch` reads such a file (prefixes optional), infers the model from its shapes and tables
and writes an Orbax checkpoint that `vjepa_jax.train` resumes from. Loading is strict: every
missing, unexpected or wrongly shaped key is listed in one StrictLoadError.
torch is imported only to read or write `.pth.tar` files; safetensors needs no torch.
"""
import argparse
import collections
import json
import logging
import math
import os
import re
import struct
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp

from vjepa_jax import checkpoint, config as config_lib, logger, optim
from vjepa_jax.models import pos_embed, predictor as predictor_lib, vit

PREFIX = "module.backbone."
# Top-level entries of the official pretraining checkpoint (VJEPA_SPEC §6.1).
TOP_LEVEL_KEYS = ("encoder", "predictor", "target_encoder", "opt", "scaler", "epoch", "loss",
                  "batch_size", "world_size", "lr")
# What torch.cuda.amp.GradScaler() starts from; the official bf16 run loads it on resume.
FRESH_SCALER = {"scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5,
                "growth_interval": 2000, "_growth_tracker": 0}
# A file's frozen table may have drifted by float32 rounding of the EMA (pos_embed is averaged
# with itself every step in the reference); anything larger is not the sin-cos table.
TABLE_ATOL = 1e-3


class StrictLoadError(ValueError):
    """A state dict does not match the model: lists every missing, unexpected and misshaped key."""

    def __init__(self, where, missing=(), unexpected=(), wrong_shape=()):
        lines = [f"{where} does not match the model:"]
        if missing:
            lines.append(f"  missing ({len(missing)}): " + ", ".join(missing))
        if unexpected:
            lines.append(f"  unexpected ({len(unexpected)}): " + ", ".join(unexpected))
        for name, got, want in wrong_shape:
            lines.append(f"  wrong shape: {name}: file {tuple(got)}, model {tuple(want)}")
        super().__init__("\n".join(lines))
        self.missing, self.unexpected, self.wrong_shape = list(missing), list(unexpected), list(wrong_shape)


# ---------------------------------------------------------------------------------------------
# Names and layouts

_SUBMODULES = {"patch_embed": "patch_embed.proj", "qkv": "attn.qkv", "proj": "attn.proj",
               "fc1": "mlp.fc1", "fc2": "mlp.fc2"}
_LEAVES = {"kernel": "weight", "scale": "weight", "bias": "bias"}
_INDEXED = re.compile(r"(blocks|predictor_blocks|mask_tokens)_(\d+)")


def torch_name(path):
    """Flax param path ('blocks_3', 'qkv', 'kernel') -> official name 'blocks.3.attn.qkv.weight'."""
    parts = []
    for i, part in enumerate(path):
        indexed = _INDEXED.fullmatch(part)
        if indexed:
            parts += [indexed[1], indexed[2]]
        elif i == len(path) - 1 and len(path) > 1:
            parts.append(_LEAVES[part])
        else:
            parts.append(_SUBMODULES.get(part, part))
    return ".".join(parts)


def to_torch_layout(path, x):
    """Flax -> torch layout: Dense kernel [in,out] -> [out,in]; Conv [t,h,w,in,out] -> [out,in,t,h,w]."""
    if path[-1] == "kernel" and x.ndim == 2:
        return x.T
    if path[-1] == "kernel" and x.ndim == 5:
        return x.transpose(4, 3, 0, 1, 2)
    return x


def from_torch_layout(path, x):
    """Inverse of to_torch_layout."""
    if path[-1] == "kernel" and x.ndim == 2:
        return x.T
    if path[-1] == "kernel" and x.ndim == 5:
        return x.transpose(2, 3, 4, 1, 0)
    return x


def _torch_shape(path, shape):
    return tuple(to_torch_layout(path, np.empty(shape, np.bool_)).shape)


def _flatten(tree):
    """{path tuple of str: leaf} of a nested dict of params."""
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {tuple(str(k.key) for k in path): leaf for path, leaf in flat}


def _unflatten(flat):
    tree = {}
    for path, leaf in flat.items():
        node = tree
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = leaf
    return tree


def _numpy(x):
    """A torch tensor or array-like -> float32 NumPy array (a copy only when needed)."""
    if hasattr(x, "detach"):  # torch tensor; bf16/fp16 go through float32
        x = x.detach().cpu().float().numpy()
    return np.asarray(x, np.float32)


def official_order(kind, names):
    """`names` sorted as the official module's named_parameters() (pos table first, then modules)."""
    pos_key = "pos_embed" if kind == "encoder" else "predictor_pos_embed"
    blocks = "blocks" if kind == "encoder" else "predictor_blocks"
    heads = (["patch_embed.proj"] if kind == "encoder" else ["predictor_embed", "mask_tokens"])
    tails = (["norm"] if kind == "encoder" else ["predictor_norm", "predictor_proj"])
    in_block = ["norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2"]

    def rank(name):
        if name == pos_key:
            return (0,)
        if name.startswith(blocks + "."):
            _, i, rest = name.split(".", 2)
            module, leaf = rest.rsplit(".", 1)
            return (2, int(i), in_block.index(module), leaf != "weight")
        for j, head in enumerate(heads):
            if name.startswith(head + "."):
                tail = name[len(head) + 1:]
                return (1, j, int(tail) if tail.isdigit() else tail != "weight")
        module, leaf = name.rsplit(".", 1)
        return (3, tails.index(module), leaf != "weight")
    return sorted(names, key=rank)


def module_to_torch(params, kind, pos_table):
    """Flax params of the encoder or predictor -> OrderedDict {official name: float32 NumPy, torch layout}.

    `pos_table` [N, width] is written as the frozen `pos_embed` / `predictor_pos_embed` [1, N, width].
    """
    out = {"pos_embed" if kind == "encoder" else "predictor_pos_embed":
           np.asarray(pos_table, np.float32)[None]}
    for path, x in _flatten(params).items():
        x = np.asarray(jax.device_get(x), np.float32)
        # A writable C-ordered copy: torch.from_numpy shares memory and warns on read-only arrays.
        out[torch_name(path)] = np.array(to_torch_layout(path, x), np.float32, order="C")
    return collections.OrderedDict((k, out[k]) for k in official_order(kind, out))


def strip_prefixes(state_dict):
    """Drop leading `module.` / `backbone.` from every key, as the official eval loader does."""
    out = {}
    for key, value in state_dict.items():
        name = key
        while name.startswith(("module.", "backbone.")):
            name = name.split(".", 1)[1]
        out[name] = value
    return out


def module_from_torch(state_dict, abstract, kind, pos_table, where):
    """Official state dict (prefixes optional) -> Flax params shaped like `abstract`, strictly.

    Raises StrictLoadError listing every missing, unexpected and wrongly shaped key; the frozen
    table must equal `pos_table` (the model computes it, so a different table is an error).
    """
    sd = strip_prefixes(state_dict)
    pos_key = "pos_embed" if kind == "encoder" else "predictor_pos_embed"
    expected = {torch_name(path): (path, _torch_shape(path, x.shape))
                for path, x in _flatten(abstract).items()}
    expected[pos_key] = (None, (1,) + tuple(pos_table.shape))
    missing = [k for k in official_order(kind, expected) if k not in sd]
    unexpected = sorted(k for k in sd if k not in expected)
    wrong = [(k, tuple(sd[k].shape), shape) for k, (_, shape) in expected.items()
             if k in sd and tuple(sd[k].shape) != shape]
    if missing or unexpected or wrong:
        raise StrictLoadError(where, missing, unexpected, wrong)
    error = float(np.max(np.abs(_numpy(sd[pos_key])[0] - pos_table))) if pos_table.size else 0.0
    if error > TABLE_ATOL:
        raise ValueError(f"{where}: {pos_key} differs from the 3-D sin-cos table of this model by "
                         f"{error:.3g}; only the reference's fixed sin-cos positions are supported")
    return _unflatten({path: from_torch_layout(path, _numpy(sd[name]))
                       for name, (path, _) in expected.items() if path is not None})


# ---------------------------------------------------------------------------------------------
# Model geometry from a state dict


def _match_grid(table, width, tubelet, patch, num_frames, crop_size, key):
    """(num_frames, crop_size, uniform_power) whose sin-cos table equals `table` [N, width]."""
    n = table.shape[0]
    candidates = []
    for side in range(1, math.isqrt(n) + 1):
        if n % (side * side) == 0:
            frames, crop = (n // (side * side)) * tubelet, side * patch
            if num_frames in (None, frames) and crop_size in (None, crop):
                candidates.append((frames, crop))
    if not candidates:
        raise ValueError(f"{key} has {n} tokens, which no clip of num_frames={num_frames} and "
                         f"crop_size={crop_size} gives with tubelet {tubelet} and patch {patch}")
    for frames, crop in candidates:
        grid = (frames // tubelet, crop // patch, crop // patch)
        for uniform in (True, False):
            if np.max(np.abs(pos_embed.sincos_3d(width, grid, uniform) - table)) <= TABLE_ATOL:
                return frames, crop, uniform
    raise ValueError(f"{key} [1, {n}, {width}] is not the 3-D sin-cos table of any clip "
                     f"(frames, crop) in {candidates}; pass --num_frames and --crop_size, and "
                     "note that only the reference's fixed sin-cos positions are supported")


def infer_model(encoder_sd, predictor_sd=None, num_frames=None, crop_size=None):
    """Model geometry from an encoder (and predictor) state dict's shapes and frozen tables.

    Returns {'width', 'depth', 'mlp_hidden', 'patch_size', 'tubelet_size', 'num_frames',
    'crop_size', 'uniform_power'} plus 'pred_width', 'pred_depth', 'num_mask_tokens' when a
    predictor is given. num_frames / crop_size, when given, are checked against the table.
    """
    sd = strip_prefixes(encoder_sd)
    for key in ("patch_embed.proj.weight", "pos_embed", "blocks.0.mlp.fc1.weight"):
        if key not in sd:
            raise StrictLoadError("encoder state dict", missing=[key])
    conv = tuple(sd["patch_embed.proj.weight"].shape)
    if len(conv) != 5 or conv[1] != 3 or conv[3] != conv[4]:
        raise ValueError(f"patch_embed.proj.weight has shape {conv}; expected a Conv3d "
                         "[width, 3, tubelet, patch, patch] (image checkpoints are not supported)")
    width, _, tubelet, patch, _ = conv
    table = _numpy(sd["pos_embed"])
    if table.ndim != 3 or table.shape[0] != 1 or table.shape[2] != width:
        raise ValueError(f"pos_embed has shape {tuple(table.shape)}; expected [1, N, {width}]")
    frames, crop, uniform = _match_grid(table[0], width, tubelet, patch, num_frames, crop_size,
                                        "pos_embed")
    depth = 1 + max(int(m[1]) for k in sd if (m := re.match(r"blocks\.(\d+)\.", k)))
    model = dict(width=width, depth=depth, mlp_hidden=int(sd["blocks.0.mlp.fc1.weight"].shape[0]),
                 patch_size=patch, tubelet_size=tubelet, num_frames=frames, crop_size=crop,
                 uniform_power=uniform)
    if predictor_sd is None:
        return model
    sd = strip_prefixes(predictor_sd)
    for key in ("predictor_embed.weight", "predictor_pos_embed"):
        if key not in sd:
            raise StrictLoadError("predictor state dict", missing=[key])
    pred_width = int(sd["predictor_embed.weight"].shape[0])
    blocks = [int(m[1]) for k in sd if (m := re.match(r"predictor_blocks\.(\d+)\.", k))]
    tokens = [int(m[1]) for k in sd if (m := re.fullmatch(r"mask_tokens\.(\d+)", k))]
    if not blocks or not tokens:
        raise ValueError("predictor state dict has no predictor_blocks.* or no mask_tokens.*; "
                         "only the mask-token predictor of the reference is supported")
    model.update(pred_width=pred_width, pred_depth=1 + max(blocks), num_mask_tokens=1 + max(tokens))
    return model


def model_config(geometry, base=None):
    """`config.model` for an inferred geometry: base (default base_config().model) updated or checked.

    Without `base`, variant is chosen by width from the size table (0 = table value for depth
    and heads, so the result equals the official configs' model). With `base` (a user's config),
    every inferred value must agree with it; disagreements are listed in one ValueError.
    """
    if base is None:
        by_width = {w: name for name, (w, *_) in vit.SIZES.items()}
        if geometry["width"] not in by_width:
            raise ValueError(f"encoder width {geometry['width']} is not in the size table "
                             f"{ {n: s[0] for n, s in vit.SIZES.items()} }; pass --config with "
                             "model.variant/width/num_heads set")
        m = config_lib.base_config().model
        variant = by_width[geometry["width"]]
        table_depth = vit.SIZES[variant][1]
        m.update(variant=variant, depth=0 if geometry["depth"] == table_depth else geometry["depth"],
                 **{k: geometry[k] for k in ("patch_size", "tubelet_size", "num_frames",
                                             "crop_size", "uniform_power")})
        if "pred_width" in geometry:
            m.update(pred_width=geometry["pred_width"], pred_depth=geometry["pred_depth"])
        return m
    m = ml_collections.ConfigDict(base.to_dict())
    shape = vit.shape_from_config(m)
    have = dict(width=shape.width, depth=shape.depth, mlp_hidden=shape.mlp_hidden,
                patch_size=m.patch_size, tubelet_size=m.tubelet_size, num_frames=m.num_frames,
                crop_size=m.crop_size, uniform_power=m.uniform_power, pred_width=m.pred_width,
                pred_depth=m.pred_depth)
    diffs = [f"  {k}: checkpoint {geometry[k]!r} vs config {v!r}"
             for k, v in have.items() if k in geometry and geometry[k] != v]
    if diffs:
        raise ValueError("the checkpoint's model differs from --config:\n" + "\n".join(diffs))
    return m


# ---------------------------------------------------------------------------------------------
# Models and abstract params


def build_models(model_cfg, num_mask_tokens):
    """(encoder, predictor) modules for a `config.model` (ConfigDict or dict)."""
    m = ml_collections.ConfigDict(model_cfg.to_dict() if hasattr(model_cfg, "to_dict") else model_cfg)
    encoder = vit.encoder_from_config(m)
    return encoder, predictor_lib.predictor_from_config(m, encoder.shape, num_mask_tokens)


def abstract_params(encoder, predictor=None):
    """{'encoder': ..., 'predictor': ...} of jax.ShapeDtypeStruct (unboxed), no arrays created."""
    s = encoder.shape
    video = jnp.zeros((1, s.num_frames, s.crop_size, s.crop_size, 3), jnp.float32)
    idx = jnp.zeros((1, 1), jnp.int32)
    z = jnp.zeros((1, 1, s.width), jnp.float32)
    key = jax.random.key(0)
    out = {"encoder": jax.eval_shape(encoder.init, key, video)["params"]}
    if predictor is not None:
        out["predictor"] = jax.eval_shape(lambda k: predictor.init(k, z, idx, idx, 0), key)["params"]
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), nn.unbox(out))


def tables(encoder, predictor=None):
    """Frozen sin-cos tables (encoder [N, D], predictor [N, Dp]) the official files carry."""
    s = encoder.shape
    enc = pos_embed.sincos_3d(s.width, s.grid, encoder.uniform_power)
    if predictor is None:
        return enc, None
    return enc, pos_embed.sincos_3d(predictor.width, predictor.grid, predictor.uniform_power)


# ---------------------------------------------------------------------------------------------
# AdamW state <-> torch optimizer state_dict


def _adam_state(opt_state):
    """The optax ScaleByAdamState inside `make_optimizer`'s state."""
    found = [x for x in jax.tree.leaves(opt_state, is_leaf=lambda x: isinstance(x, optax.ScaleByAdamState))
             if isinstance(x, optax.ScaleByAdamState)]
    if len(found) != 1:
        raise ValueError(f"expected one Adam state in the optimizer state, found {len(found)}")
    return found[0]


def _param_groups(order):
    """The reference's 4 AdamW groups: [(module, name, shape)] lists, decayed enc/pred, then excluded."""
    groups = [[], [], [], []]
    for m, module in enumerate(("encoder", "predictor")):
        for name, shape in order[module]:
            excluded = "bias" in name or len(shape) == 1
            groups[m + 2 * excluded].append((module, name, shape))
    return groups


def _torch_order(params, tables_):
    """{'encoder'|'predictor': [(official name, torch shape)]} in named_parameters() order."""
    out = {}
    for module, table in zip(("encoder", "predictor"), tables_):
        shapes = {torch_name(p): _torch_shape(p, x.shape) for p, x in _flatten(params[module]).items()}
        shapes["pos_embed" if module == "encoder" else "predictor_pos_embed"] = (1,) + table.shape
        out[module] = [(n, shapes[n]) for n in official_order(module, shapes)]
    return out


def adamw_to_torch(opt_state, params, tables_, optim_cfg, step):
    """optax AdamW state -> the official torch AdamW state_dict (4 param groups, VJEPA_SPEC §6.3)."""
    import torch  # noqa: PLC0415 - torch is optional
    adam = _adam_state(opt_state)
    count = int(jax.device_get(adam.count))
    mu, nu = ({m: {torch_name(p): np.array(to_torch_layout(p, np.asarray(jax.device_get(x))),
                                           np.float32, order="C")
                   for p, x in _flatten(tree[m]).items()} for m in ("encoder", "predictor")}
              for tree in (adam.mu, adam.nu))
    sched = {k: float(v) for k, v in optim.schedules(optim_cfg)(max(int(step), 1)).items()}
    b1, b2 = (float(b) for b in optim_cfg.betas)
    state, groups, index = {}, [], 0
    for g, members in enumerate(_param_groups(_torch_order(params, tables_))):
        group = {"lr": sched["lr"], "betas": (b1, b2), "eps": float(optim_cfg.eps),
                 "weight_decay": sched["wd"] if g < 2 else 0.0, "amsgrad": False,
                 "maximize": False, "foreach": None, "capturable": False, "differentiable": False,
                 "fused": None, "decoupled_weight_decay": True, "params": []}
        if g >= 2:
            group["WD_exclude"] = True
        for module, name, _ in members:
            group["params"].append(index)
            # Frozen tables get no gradient, hence no state, as in the reference; nothing is
            # stored before the first update either.
            if count > 0 and name in mu[module]:
                state[index] = {"step": torch.tensor(float(count)),
                                "exp_avg": torch.from_numpy(mu[module][name]),
                                "exp_avg_sq": torch.from_numpy(nu[module][name])}
            index += 1
        groups.append(group)
    return {"state": state, "param_groups": groups}


def adamw_from_torch(opt_sd, opt_state, params, tables_, where="opt"):
    """Official torch AdamW state_dict -> `opt_state` with mu, nu and counts replaced, strictly."""
    groups = _param_groups(_torch_order(params, tables_))
    saved = opt_sd.get("param_groups") if isinstance(opt_sd, dict) else None
    if not isinstance(saved, list) or [len(g.get("params", ())) for g in saved] != [len(g) for g in groups]:
        got = None if not isinstance(saved, list) else [len(g.get("params", ())) for g in saved]
        raise ValueError(f"{where}: param groups of sizes {got} do not match the reference "
                         f"AdamW groups of this model {[len(g) for g in groups]} "
                         "(pass --fresh_optimizer to start the moments from zero)")
    by_name = {}
    for members, group in zip(groups, saved):
        for (module, name, shape), idx in zip(members, group["params"]):
            by_name[(module, name)] = (idx, shape)
    states = opt_sd.get("state", {})
    adam = _adam_state(opt_state)
    missing, wrong, steps, new = [], [], set(), {"mu": {}, "nu": {}}
    for module in ("encoder", "predictor"):
        for kind in new:
            new[kind][module] = {}
        for path, _ in _flatten(params[module]).items():
            name = torch_name(path)
            idx, shape = by_name[(module, name)]
            entry = states.get(idx)
            if not entry:  # never updated: zero moments, as a fresh optimizer has
                entry = {"step": 0.0, "exp_avg": np.zeros(shape, np.float32),
                         "exp_avg_sq": np.zeros(shape, np.float32)}
            if "exp_avg" not in entry or "exp_avg_sq" not in entry:
                missing.append(f"{module}.{name}")
                continue
            for kind, key in (("mu", "exp_avg"), ("nu", "exp_avg_sq")):
                if tuple(entry[key].shape) != tuple(shape):
                    wrong.append((f"{module}.{name}.{key}", entry[key].shape, shape))
                    continue
                new[kind][module][path] = from_torch_layout(path, _numpy(entry[key]))
            steps.add(int(float(entry["step"])))
    if missing or wrong:
        raise StrictLoadError(where, missing=missing, wrong_shape=wrong)
    steps.discard(0)
    if len(steps) > 1:
        raise ValueError(f"{where}: parameters have different AdamW step counts {sorted(steps)}")
    count = jnp.asarray(steps.pop() if steps else 0, jnp.int32)
    mu = {m: _unflatten(t) for m, t in new["mu"].items()}
    nu = {m: _unflatten(t) for m, t in new["nu"].items()}
    as_like = lambda tree, like: jax.tree.map(lambda x, l: jnp.asarray(x, l.dtype), tree, like)
    adam_new = adam._replace(count=count.astype(adam.count.dtype), mu=as_like(mu, adam.mu),
                             nu=as_like(nu, adam.nu))
    replaced = jax.tree.map(lambda x: adam_new if isinstance(x, optax.ScaleByAdamState) else x,
                            opt_state, is_leaf=lambda x: isinstance(x, optax.ScaleByAdamState))
    if hasattr(replaced, "count"):  # inject_hyperparams counts the same applied updates
        replaced = replaced._replace(count=count.astype(replaced.count.dtype))
    return replaced


# ---------------------------------------------------------------------------------------------
# Files: Orbax workdirs, torch .pth.tar, safetensors


def config_from_meta(meta):
    """The full config stored with a checkpoint (or base_config() + its model for older ones)."""
    if "config" in meta:
        c = ml_collections.ConfigDict(json.loads(meta["config"]))
        c.masks = [ml_collections.ConfigDict(m) for m in c.masks]
        return c
    c = config_lib.base_config()
    c.model.update(meta["model"])
    return c


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
        steps = sorted(mngr.all_steps())
        if not steps:
            raise FileNotFoundError(f"--workdir {workdir}: {ckpt_dir} holds no complete checkpoint")
        if step is None:
            step = steps[-1]
        if step not in steps:
            raise ValueError(f"--step {step}: {workdir} has checkpoints at steps {steps}")
        try:
            meta = checkpoint.read_meta(mngr, step)
        except Exception as e:  # orbax raises various types for a damaged item
            raise ValueError(f"{ckpt_dir}/{step}: unreadable model description (meta): {e}") from None
        item_dir = os.path.join(str(mngr.directory), str(step), "state")
    finally:
        mngr.close()
    config = config_from_meta(meta)
    encoder, predictor = build_models(config.model, len(meta["masks"]))
    params = abstract_params(encoder, predictor)
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
        raise ValueError(f"{item_dir}: cannot restore {list(parts)}: {type(e).__name__}: {e}") from None
    return tree, config, meta, step


def _import_torch():
    try:
        import torch  # noqa: PLC0415 - optional dependency
    except ImportError:
        raise ImportError("reading or writing .pth.tar files needs PyTorch: pip install torch "
                          "(or use --format safetensors)") from None
    return torch


def read_torch_file(path, allow_pickle=False):
    """torch.load a .pth.tar onto the CPU (weights only unless allow_pickle); clear errors."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such file")
    torch = _import_torch()
    try:
        obj = torch.load(path, map_location="cpu", weights_only=not allow_pickle)
    except Exception as e:  # zip, pickle and weights-only errors all mean "cannot read this file"
        hint = "" if allow_pickle else (" (if the file holds Python objects beyond tensors and "
                                        "you trust it, pass --allow_pickle)")
        raise ValueError(f"{path} is not a readable PyTorch checkpoint: "
                         f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}{hint}") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{path} holds a {type(obj).__name__}, not a checkpoint dict")
    return obj


def pick_encoder(ckpt, which, where):
    """The encoder state dict of a checkpoint dict: 'target' (target_encoder) or 'encoder'.

    A bare state dict (parameter names at the top level) is taken as the encoder itself. A file
    without a target encoder falls back to 'encoder', as the official eval loader does (logged).
    """
    if which not in ("target", "encoder"):
        raise ValueError(f"which={which!r}: use 'target' (EMA target encoder) or 'encoder'")
    if any(k.endswith("patch_embed.proj.weight") for k in ckpt):
        return ckpt
    key = "target_encoder" if which == "target" else "encoder"
    if key in ckpt:
        return ckpt[key]
    if which == "target" and "encoder" in ckpt:
        logging.warning("%s has no 'target_encoder'; using 'encoder'", where)
        return ckpt["encoder"]
    raise ValueError(f"{where} has no {key!r} entry (top-level keys: {sorted(ckpt)[:12]})")


_ST_DTYPES = {"F32": np.float32, "F16": np.float16, "F64": np.float64}


def write_safetensors(path, tensors, metadata):
    """{name: float32 array} + {str: str} metadata -> a .safetensors file (no torch needed)."""
    header, offset, blobs = {}, 0, []
    for name, x in tensors.items():
        blob = np.ascontiguousarray(x, dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(np.shape(x)),
                        "data_offsets": [offset, offset + len(blob)]}
        offset += len(blob)
        blobs.append(blob)
    header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the data starts 8-byte aligned
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for blob in blobs:
            f.write(blob)
    os.replace(tmp, path)


def read_safetensors(path):
    """A .safetensors file -> ({name: float32 array}, metadata dict)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such file")
    try:
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(n))
            data = f.read()
        metadata = header.pop("__metadata__", {}) or {}
        out = {}
        for name, info in header.items():
            if info["dtype"] == "BF16":
                raw = np.frombuffer(data, "<u2", offset=info["data_offsets"][0],
                                    count=(info["data_offsets"][1] - info["data_offsets"][0]) // 2)
                x = (raw.astype(np.uint32) << 16).view(np.float32)
            else:
                dtype = np.dtype(_ST_DTYPES[info["dtype"]]).newbyteorder("<")
                start, end = info["data_offsets"]
                x = np.frombuffer(data[start:end], dtype)
            out[name] = x.reshape(info["shape"]).astype(np.float32)
    except (struct.error, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path} is not a readable float safetensors file: "
                         f"{type(e).__name__}: {e}") from None
    return out, metadata


def _last_loss(workdir, step):
    rows = logger.read_rows(os.path.join(workdir, "metrics.jsonl"))
    losses = [r["loss"] for r in rows if "loss" in r and r["step"] <= step]
    return float(losses[-1]) if losses else float("nan")


# ---------------------------------------------------------------------------------------------
# The two directions


def to_torch(workdir, out, step=None, fmt="torch", which="target"):
    """Write checkpoint `step` of a workdir as an official .pth.tar (or the encoder as safetensors)."""
    if fmt not in ("torch", "safetensors"):
        raise ValueError(f"--format {fmt!r}: use 'torch' or 'safetensors'")
    if which not in ("target", "encoder"):
        raise ValueError(f"--which {which!r}: use 'target' or 'encoder'")
    if fmt == "torch":
        torch = _import_torch()
    parts = ("step", "params", "target_params") + (("opt_state",) if fmt == "torch" else ())
    tree, config, meta, step = read_workdir(workdir, step, parts)
    encoder, predictor = build_models(config.model, len(meta["masks"]))
    enc_table, pred_table = tables(encoder, predictor)
    target = module_to_torch(tree["target_params"], "encoder", enc_table)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    if fmt == "safetensors":
        weights = target if which == "target" else module_to_torch(
            tree["params"]["encoder"], "encoder", enc_table)
        write_safetensors(out, weights, {
            "format": "pt", "vjepa_jax.which": which, "vjepa_jax.step": step,
            "vjepa_jax.model": json.dumps(config.model.to_dict())})
        return out
    with_prefix = lambda sd: collections.OrderedDict(
        (PREFIX + k, torch.from_numpy(v)) for k, v in sd.items())
    ipe = int(config.optim.ipe)
    ckpt = {
        "encoder": with_prefix(module_to_torch(tree["params"]["encoder"], "encoder", enc_table)),
        "predictor": with_prefix(module_to_torch(tree["params"]["predictor"], "predictor", pred_table)),
        "target_encoder": with_prefix(target),
        "opt": adamw_to_torch(tree["opt_state"], tree["params"], (enc_table, pred_table),
                              config.optim, step),
        "scaler": dict(FRESH_SCALER),
        "epoch": int(step) // ipe,
        "loss": _last_loss(workdir, step),
        "batch_size": int(config.data.batch_size),  # global batch, with world_size 1
        "world_size": 1,
        "lr": float(config.optim.lr),
    }
    if step % ipe:
        logging.warning("step %d is not a multiple of optim.ipe=%d: the file says epoch %d, and "
                        "the official code resumes its schedules at step %d", step, ipe,
                        step // ipe, (step // ipe) * ipe)
    tmp = out + ".tmp"
    torch.save(ckpt, tmp)
    os.replace(tmp, out)
    return out


def from_torch(path, workdir, config=None, num_frames=None, crop_size=None, step=None,
               fresh_optimizer=False, allow_pickle=False):
    """Official .pth.tar -> Orbax checkpoint in `workdir` that `vjepa_jax.train` resumes; returns its step.

    config: a ConfigDict (or 'file.py[:ARG]') the run will use; default base_config() with the
    inferred model. The step is `epoch * optim.ipe` of the file unless `step` is given.
    """
    from vjepa_jax import masks, train, train_state  # noqa: PLC0415 - the training stack
    explicit = config is not None
    if isinstance(config, str):
        config = config_lib.load_config_file(config)
    ckpt_dir = os.path.join(workdir, "checkpoints")
    if os.path.isdir(ckpt_dir) and os.listdir(ckpt_dir):
        raise ValueError(f"--workdir {workdir} already holds checkpoints; use a new directory")
    ckpt = read_torch_file(path, allow_pickle)
    if "predictor" not in ckpt:
        raise ValueError(f"{path} has no 'predictor': a training checkpoint needs one "
                         "(for features only, use vjepa_jax.load_encoder)")
    online_sd = ckpt.get("encoder")
    target_sd = ckpt.get("target_encoder")
    if online_sd is None and target_sd is None:
        raise ValueError(f"{path} has neither 'encoder' nor 'target_encoder'")
    if online_sd is None or target_sd is None:
        logging.warning("%s has only %s: using it for both the online and the target encoder",
                        path, "target_encoder" if online_sd is None else "encoder")
    online_sd = online_sd if online_sd is not None else target_sd
    target_sd = target_sd if target_sd is not None else online_sd
    if explicit:
        num_frames = num_frames or config.model.num_frames
        crop_size = crop_size or config.model.crop_size
    geometry = infer_model(online_sd, ckpt["predictor"], num_frames, crop_size)
    if explicit:
        model_config(geometry, config.model)  # only checks that the file fits the given config
    else:
        config = config_lib.base_config()
        config.model = model_config(geometry)
    if len(config.masks) != geometry["num_mask_tokens"]:
        raise ValueError(f"the predictor has {geometry['num_mask_tokens']} mask tokens but the "
                         f"config has {len(config.masks)} mask generators (config.masks)")

    encoder, predictor = build_models(config.model, geometry["num_mask_tokens"])
    abstract = abstract_params(encoder, predictor)
    enc_table, pred_table = tables(encoder, predictor)
    params = {"encoder": module_from_torch(online_sd, abstract["encoder"], "encoder", enc_table,
                                           f"{path} encoder"),
              "predictor": module_from_torch(ckpt["predictor"], abstract["predictor"], "predictor",
                                             pred_table, f"{path} predictor")}
    target = module_from_torch(target_sd, abstract["encoder"], "encoder", enc_table,
                               f"{path} target_encoder")
    if step is None:
        epoch = ckpt.get("epoch")
        step = int(epoch) * int(config.optim.ipe) if isinstance(epoch, (int, np.integer)) else 0
        if not isinstance(epoch, (int, np.integer)):
            logging.warning("%s has no integer 'epoch' (%r): storing step 0", path, epoch)
    tx = optim.make_optimizer(config.optim, abstract)
    params = jax.tree.map(jnp.asarray, params)
    opt_state = tx.init(params)
    if not fresh_optimizer and isinstance(ckpt.get("opt"), dict) and ckpt["opt"].get("state"):
        opt_state = adamw_from_torch(ckpt["opt"], opt_state, params, (enc_table, pred_table),
                                     f"{path} opt")
    else:
        logging.warning("optimizer moments start from zero (%s)", "--fresh_optimizer"
                        if fresh_optimizer else f"{path} has no AdamW state")
    state = train_state.TrainState(step=jnp.asarray(step, jnp.int32), apply_fn=None, params=params,
                                   tx=tx, opt_state=opt_state,
                                   target_params=jax.tree.map(jnp.asarray, target),
                                   skipped=jnp.zeros((), jnp.int32))

    meta = train.model_meta(config, masks.generators_from_config(config))
    train.prepare_workdir(workdir)
    mngr = checkpoint.manager(workdir, config.train.keep_checkpoints)
    checkpoint.save(mngr, state, None, meta, force=True)
    mngr.wait_until_finished()
    mngr.close()
    return step


# ---------------------------------------------------------------------------------------------
# CLI


def _parser():
    p = argparse.ArgumentParser(prog="python -m vjepa_jax.convert",
                                description="Convert between vjepa_jax workdirs and the official "
                                            "V-JEPA PyTorch checkpoint format.")
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("to-torch", help="workdir checkpoint -> official .pth.tar (or safetensors)")
    t.add_argument("--workdir", required=True, help="training directory with checkpoints/")
    t.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")
    t.add_argument("--out", required=True, help="output file (.pth.tar or .safetensors)")
    t.add_argument("--format", default="torch", choices=("torch", "safetensors"),
                   help="torch: full official checkpoint; safetensors: one encoder, no torch needed")
    t.add_argument("--which", default="target", choices=("target", "encoder"),
                   help="encoder written by --format safetensors (default: EMA target)")
    f = sub.add_parser("from-torch", help="official .pth.tar -> Orbax checkpoint in a new workdir")
    f.add_argument("--checkpoint", required=True, help="official pretraining .pth.tar")
    f.add_argument("--workdir", required=True, help="new directory for the Orbax checkpoint")
    f.add_argument("--config", default=None,
                   help="config file[:ARG] the run will use (default: base config + inferred model)")
    f.add_argument("--num_frames", type=int, default=None, help="clip frames (default: from pos_embed)")
    f.add_argument("--crop_size", type=int, default=None, help="crop size (default: from pos_embed)")
    f.add_argument("--step", type=int, default=None, help="step to store (default: epoch * ipe)")
    f.add_argument("--fresh_optimizer", action="store_true",
                   help="start AdamW moments from zero instead of importing the file's `opt`")
    f.add_argument("--allow_pickle", action="store_true",
                   help="torch.load with weights_only=False (only for files you trust)")
    return p


def main(argv=None):
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    try:
        if args.command == "to-torch":
            out = to_torch(args.workdir, args.out, args.step, args.format, args.which)
            print(f"wrote {out}")
        else:
            step = from_torch(args.checkpoint, args.workdir, args.config, args.num_frames,
                              args.crop_size, args.step, args.fresh_optimizer, args.allow_pickle)
            print(f"wrote {args.workdir}/checkpoints/{step}; continue with "
                  f"python -m vjepa_jax.train --config CONFIG --workdir {args.workdir}")
    except (ValueError, FileNotFoundError, ImportError, OSError) as e:
        sys.exit(f"vjepa_jax.convert: error: {e}")


if __name__ == "__main__":
    main()
