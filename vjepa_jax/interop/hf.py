"""The Hugging Face `transformers` VJEPA2 layout: a directory with model.safetensors + config.json.

`transformers.VJEPA2Model` holds the encoder and the predictor under other names than the
official V-JEPA 2 files (methods/vjepa2/layout.py), and splits each fused `qkv` Linear into
`query` / `key` / `value`:

    official (module.backbone. stripped)       transformers VJEPA2Model
    patch_embed.proj.*                          encoder.embeddings.patch_embeddings.proj.*
    blocks.{i}.norm1 / norm2 / mlp.fc1 / fc2    encoder.layer.{i}.norm1 / norm2 / mlp.fc1 / fc2
    blocks.{i}.attn.qkv  [3D, D] (q | k | v)     encoder.layer.{i}.attention.query / key / value
    blocks.{i}.attn.proj                        encoder.layer.{i}.attention.proj
    norm                                        encoder.layernorm
    predictor_embed                             predictor.embeddings.predictor_embeddings
    mask_tokens.{j}  [1, 1, Dp] each            predictor.embeddings.mask_tokens [M, 1, 1, Dp]
    predictor_blocks.{i}.*                      predictor.layer.{i}.* (as the encoder's)
    predictor_norm / predictor_proj             predictor.layernorm / predictor.proj

config.json carries what an official file does not: the clip (frames_per_clip, crop_size) and
both head counts. transformers' RoPE is the reference's 'tiled' layout and finds a token's row
and column from config.crop_size, so only 'tiled' models are written, at their training crop.
This module maps names and configs; the tensors keep their bits (the split is exact).
"""
import json
import logging
import os
import re

import numpy as np

from vjepa_jax import methods, mismatch
from vjepa_jax.interop import files
from vjepa_jax.models import vit

_log = logging.getLogger(__name__)

METHOD = "vjepa2"  # the method whose model transformers' VJEPA2Model is
WEIGHTS = "model.safetensors"
CONFIG = "config.json"
# VJEPA2ForVideoClassification files hold the model under this prefix, beside its probe.
MODEL_PREFIX = "vjepa2."
PROBE_PREFIXES = ("pooler.", "classifier.")
_BLOCK = {"norm1": "norm1", "attn.proj": "attention.proj", "norm2": "norm2",
          "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2"}
_QKV = ("query", "key", "value")
_RENAMES = (("patch_embed.proj.", "encoder.embeddings.patch_embeddings.proj."),
            ("norm.", "encoder.layernorm."),
            ("predictor_embed.", "predictor.embeddings.predictor_embeddings."),
            ("predictor_norm.", "predictor.layernorm."),
            ("predictor_proj.", "predictor.proj."))
_BLOCK_PREFIXES = (("blocks.", "encoder.layer."), ("predictor_blocks.", "predictor.layer."))
MASK_TOKENS = "predictor.embeddings.mask_tokens"


def is_model_dir(path):
    """True for a directory holding config.json and model.safetensors."""
    return (os.path.isdir(path) and os.path.isfile(os.path.join(path, CONFIG))
            and os.path.isfile(os.path.join(path, WEIGHTS)))


# ---------------------------------------------------------------------------------------------
# Names


def _block_to_hf(rest):
    """'3.attn.qkv.weight' -> ('3', 'qkv', 'weight'), other block names renamed."""
    i, module_leaf = rest.split(".", 1)
    module, leaf = module_leaf.rsplit(".", 1)
    if module == "attn.qkv":
        return i, None, leaf
    if module not in _BLOCK:
        raise KeyError(module)
    return i, _BLOCK[module], leaf


def to_hf(encoder_sd, predictor_sd=None):
    """Official V-JEPA 2 state dicts (module.backbone. stripped) -> {transformers name: array}."""
    out, mask_tokens, unknown = {}, {}, []
    for sd in (encoder_sd, predictor_sd or {}):
        for name, x in sd.items():
            x = np.asarray(x)
            token = re.fullmatch(r"mask_tokens\.(\d+)", name)
            if token:
                mask_tokens[int(token[1])] = x
                continue
            block = next(((o, h) for o, h in _BLOCK_PREFIXES if name.startswith(o)), None)
            rename = next(((o, h) for o, h in _RENAMES if name.startswith(o)), None)
            if block:
                try:
                    i, module, leaf = _block_to_hf(name[len(block[0]):])
                except (KeyError, ValueError):
                    unknown.append(name)
                    continue
                if module is None:  # fused rows (q | k | v), each head-major: three equal slices
                    for part, rows in zip(_QKV, np.split(x, 3, axis=0)):
                        out[f"{block[1]}{i}.attention.{part}.{leaf}"] = rows
                else:
                    out[f"{block[1]}{i}.{module}.{leaf}"] = x
            elif rename:
                out[rename[1] + name[len(rename[0]):]] = x
            else:
                unknown.append(name)
    if unknown:
        raise ValueError(f"no transformers VJEPA2 name for {sorted(unknown)}")
    if mask_tokens:
        if sorted(mask_tokens) != list(range(len(mask_tokens))):
            raise ValueError(f"mask_tokens.* are not numbered 0..M-1: {sorted(mask_tokens)}")
        out[MASK_TOKENS] = np.stack([mask_tokens[j] for j in range(len(mask_tokens))])
    return {k: np.ascontiguousarray(v) for k, v in out.items()}


def _split_block(rest):
    """'3.attention.query.weight' -> ('3', 'attention.query', 'weight'); None if not of that form."""
    parts = rest.split(".")
    if len(parts) < 3 or not parts[0].isdigit():
        return None
    return parts[0], ".".join(parts[1:-1]), parts[-1]


def from_hf(state_dict, where):
    """{transformers name: array} -> (official encoder state dict, predictor state dict or None).

    A `vjepa2.` prefix is dropped and a classification model's pooler./classifier. entries are
    skipped (logged); any other name that is not VJEPA2Model's raises StrictLoadError naming it,
    as does a query without its key or value.
    """
    sd = {k[len(MODEL_PREFIX):] if k.startswith(MODEL_PREFIX) else k: v for k, v in state_dict.items()}
    probe = sorted(k for k in sd if k.startswith(PROBE_PREFIXES))
    if probe:
        _log.info("%s: skipping %d probe entries (%s ...)", where, len(probe), probe[0])
    renames = {hf_name: name for name, hf_name in _RENAMES}
    block_modules = {hf_name: name for name, hf_name in _BLOCK.items()}
    enc, pred, unexpected = {}, {}, []
    qkv = {}  # official qkv name -> (its state dict, transformers prefix, {'query': x, ...})
    for name, x in sd.items():
        if name in probe:
            continue
        if name == MASK_TOKENS:
            x = np.asarray(x)
            if x.ndim != 4:
                raise mismatch.StrictLoadError(where, wrong_shape=[(name, x.shape, ("M", 1, 1, "Dp"))])
            pred.update({f"mask_tokens.{j}": x[j] for j in range(x.shape[0])})
            continue
        out = enc if name.startswith("encoder.") else pred
        block = next(((o, h) for o, h in _BLOCK_PREFIXES if name.startswith(h)), None)
        rename = next((h for h in renames if name.startswith(h)), None)
        split = block and _split_block(name[len(block[1]):])
        if split:
            i, module, leaf = split
            part = module[len("attention."):] if module.startswith("attention.") else None
            if part in _QKV:
                entry = qkv.setdefault(f"{block[0]}{i}.attn.qkv.{leaf}",
                                       (out, f"{block[1]}{i}.attention.", {}))
                entry[2][part] = x
            elif module in block_modules:
                out[f"{block[0]}{i}.{block_modules[module]}.{leaf}"] = x
            else:
                unexpected.append(name)
        elif rename and not block:
            out[renames[rename] + name[len(rename):]] = x
        else:
            unexpected.append(name)
    missing = []
    for official, (out, hf_prefix, parts) in qkv.items():
        leaf = official.rsplit(".", 1)[1]
        absent = [f"{hf_prefix}{p}.{leaf}" for p in _QKV if p not in parts]
        missing += absent
        if not absent:  # rows q | k | v of the fused Linear
            out[official] = np.concatenate([np.asarray(parts[p]) for p in _QKV], axis=0)
    if missing or unexpected:
        raise mismatch.StrictLoadError(where, missing=sorted(missing), unexpected=sorted(unexpected))
    return enc, (pred or None)


# ---------------------------------------------------------------------------------------------
# config.json


def _ratio(hidden, width):
    """An mlp_ratio float for which int(width * ratio) == hidden, as transformers computes it."""
    ratio = hidden / width
    while int(width * ratio) < hidden:
        ratio = float(np.nextafter(ratio, np.inf))
    return ratio


def config_json(model_cfg, shape, predictor):
    """The transformers VJEPA2Config fields of a model (config.model, encoder Shape, Predictor)."""
    if model_cfg.get("rope", "none") != "tiled":
        raise ValueError(f"model.rope={model_cfg.get('rope', 'none')!r}: transformers' VJEPA2 "
                         "implements only the reference's 'tiled' RoPE layout")
    if predictor is None:
        raise ValueError("transformers' VJEPA2Model holds a predictor; the workdir has none")
    return {
        "architectures": ["VJEPA2Model"], "model_type": "vjepa2", "torch_dtype": "float32",
        "patch_size": shape.patch_size, "crop_size": shape.crop_size,
        "frames_per_clip": shape.num_frames, "tubelet_size": shape.tubelet_size,
        "hidden_size": shape.width, "in_chans": 3, "num_attention_heads": shape.num_heads,
        "num_hidden_layers": shape.depth, "drop_path_rate": 0.0,
        "mlp_ratio": _ratio(shape.mlp_hidden, shape.width), "layer_norm_eps": 1e-6,
        "qkv_bias": True, "attention_probs_dropout_prob": 0.0, "hidden_act": "gelu",
        "initializer_range": 0.02, "attention_dropout": 0.0, "num_pooler_layers": 3,
        "pred_hidden_size": predictor.width, "pred_num_attention_heads": predictor.num_heads,
        "pred_num_hidden_layers": predictor.depth,
        "pred_num_mask_tokens": predictor.num_mask_tokens, "pred_zero_init_mask_tokens": True,
        "pred_mlp_ratio": 4.0,
    }


def geometry(cfg, where):
    """config.json -> {'width', 'depth', 'mlp_hidden', 'num_heads', 'patch_size', 'tubelet_size',
    'num_frames', 'crop_size'} plus 'pred_*' and 'num_mask_tokens' when it has a predictor."""
    fixed = {"model_type": "vjepa2", "hidden_act": "gelu", "layer_norm_eps": 1e-6,
             "qkv_bias": True, "in_chans": 3}
    for key, want in fixed.items():
        if cfg.get(key, want) != want:
            raise ValueError(f"{where}: {key}={cfg[key]!r}; only {want!r} is supported")
    try:
        width, patch = int(cfg["hidden_size"]), cfg.get("patch_size", 16)
        if not isinstance(patch, int):
            raise ValueError(f"{where}: patch_size={patch!r}; only a square patch (an int) is supported")
        out = dict(width=width, depth=int(cfg["num_hidden_layers"]),
                   mlp_hidden=int(width * float(cfg.get("mlp_ratio", 4.0))),
                   num_heads=int(cfg["num_attention_heads"]), patch_size=patch,
                   tubelet_size=int(cfg.get("tubelet_size", 2)),
                   num_frames=int(cfg.get("frames_per_clip", 64)),
                   crop_size=int(cfg.get("crop_size", 256)))
        pred_width = int(cfg.get("pred_hidden_size", 384))
        if int(pred_width * float(cfg.get("pred_mlp_ratio", 4.0))) != 4 * pred_width:
            raise ValueError(f"{where}: pred_mlp_ratio={cfg['pred_mlp_ratio']!r}; the predictor's "
                             "MLP is 4x its width here")
        out.update(pred_width=pred_width, pred_depth=int(cfg.get("pred_num_hidden_layers", 12)),
                   pred_num_heads=int(cfg.get("pred_num_attention_heads", 12)),
                   num_mask_tokens=int(cfg.get("pred_num_mask_tokens", 10)))
    except KeyError as e:
        raise ValueError(f"{where} has no {e.args[0]!r}") from e
    return out


def model_config(geo, base=None, where="config.json"):
    """`config.model` (method vjepa2) of a config.json geometry, or `base` checked against it.

    Heads the size table does not give are set (model.num_heads), the predictor's always.
    """
    heads = {"num_heads": geo["num_heads"], "pred_num_heads": geo.get("pred_num_heads")}
    layout = methods.get(METHOD).layout
    m = layout.model_config({k: v for k, v in geo.items() if k not in heads}, base)
    if base is None:
        m.rope = "tiled"
        if vit.shape_from_config(m).num_heads != geo["num_heads"]:
            m.num_heads = geo["num_heads"]
        if heads["pred_num_heads"] is not None:
            m.pred_num_heads = heads["pred_num_heads"]
        return m
    have = {"num_heads": vit.shape_from_config(m).num_heads,
            "pred_num_heads": m.pred_num_heads or vit.shape_from_config(m).num_heads,
            "rope": m.get("rope", "none")}
    mismatch.check_agrees({**heads, "rope": "tiled"},
                          {k: v for k, v in have.items() if k == "rope" or heads[k] is not None},
                          where, what="holds a different model than --config",
                          hint="Pass a --config whose model matches the directory.")
    return m


# ---------------------------------------------------------------------------------------------
# The directory


def write_model_dir(path, encoder_sd, predictor_sd, config, metadata):
    """Write `path`/model.safetensors (transformers names) and `path`/config.json."""
    os.makedirs(path, exist_ok=True)
    files.write_safetensors(os.path.join(path, WEIGHTS), to_hf(encoder_sd, predictor_sd),
                            {"format": "pt", **metadata})
    tmp = os.path.join(path, CONFIG + ".tmp")
    with open(tmp, "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)
    os.replace(tmp, os.path.join(path, CONFIG))
    return path


def read_model_dir(path):
    """A transformers VJEPA2 directory -> (encoder sd, predictor sd or None, config.json dict,
    safetensors metadata); the state dicts under official V-JEPA 2 names."""
    where = os.path.join(path, WEIGHTS)
    try:
        with open(os.path.join(path, CONFIG)) as f:
            cfg = json.load(f)
    except (OSError, ValueError) as e:
        raise ValueError(f"{os.path.join(path, CONFIG)} is not a readable JSON file: {e}") from e
    tensors, meta = files.read_safetensors(where)
    encoder_sd, predictor_sd = from_hf(tensors, where)
    return encoder_sd, predictor_sd, cfg, meta
