"""Attentive probes <-> official probe checkpoints (VJEPA_SPEC §7.1, §9.2), strictly both ways.

An official probe file is a torch.save dict. V-JEPA 1 (`evals/video_classification_frozen`)
stores one `classifier` state dict beside `opt`, `scaler`, `epoch`, `batch_size`, `world_size`
and `lr`; V-JEPA 2 stores a list `classifiers`, one state dict per head of its (lr, wd) sweep.
The state dicts come from DDP, so every key starts with `module.`:

    pooler.query_tokens                                   [1, 1, D]
    pooler.cross_attention_block.norm1.{weight,bias}      LayerNorm eps 1e-5
    pooler.cross_attention_block.xattn.q.{weight,bias}    [D, D]
    pooler.cross_attention_block.xattn.kv.{weight,bias}   [2D, D], rows k then v
    pooler.cross_attention_block.xattn.proj.*             V-JEPA 1 only; its forward never uses it
    pooler.cross_attention_block.norm2, .mlp.fc1, .mlp.fc2
    pooler.blocks.{i}.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}.*   V-JEPA 2 only
    linear.{weight,bias}                                  [C, D]: the class head

The probe here has no `xattn.proj` (models/probe.py), so an imported file's values are handed
back as `unused` and written again by an export, which makes file -> import -> export
bit-exact; a probe trained here exports zeros there, which no forward reads. The form is read
from the keys (`xattn.proj` present: 'vjepa'; absent: 'vjepa2' with one more block than
`pooler.blocks` holds). The head count is not in the file: it is the encoder's in every
official eval, and the caller passes it.
"""
import collections
import os

import jax
import numpy as np

from vjepa_jax import mismatch, trees
from vjepa_jax.interop import files
from vjepa_jax.interop.torch_names import (from_torch_layout, strip_prefixes, to_numpy,
                                           to_torch_layout, torch_name, torch_shape)

UNUSED_PROJ = ("pooler.cross_attention_block.xattn.proj.weight",
               "pooler.cross_attention_block.xattn.proj.bias")
_CROSS = ["norm1", "xattn.q", "xattn.kv", "xattn.proj", "norm2", "mlp.fc1", "mlp.fc2"]
_BLOCK = ["norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2"]


def official_name(path):
    """Flax probe param path -> official name without `module.`: everything but the head is in
    the pooler: ('cross_attention_block', 'fc1', 'kernel') ->
    'pooler.cross_attention_block.mlp.fc1.weight'."""
    name = torch_name(path)
    return name if path[0] == "linear" else "pooler." + name


def _rank(name):
    """Sort key of an official name in the reference's named_parameters() order."""
    parts = name.split(".")
    leaf = parts[-1] != "weight"
    if name == "pooler.query_tokens":
        return (0,)
    if parts[1] == "cross_attention_block":
        return (1, _CROSS.index(".".join(parts[2:-1])), leaf)
    if parts[1] == "blocks":
        return (2, int(parts[2]), _BLOCK.index(".".join(parts[3:-1])), leaf)
    return (3, leaf)  # linear


def expected_shapes(abstract, form):
    """{official name: torch shape} of a probe shaped like `abstract`, in the official order."""
    shapes = {official_name(p): torch_shape(p, x.shape) for p, x in trees.flatten(abstract).items()}
    if form == "vjepa":
        d = abstract["query_tokens"].shape[-1]
        shapes[UNUSED_PROJ[0]], shapes[UNUSED_PROJ[1]] = (d, d), (d,)
    return collections.OrderedDict((k, shapes[k]) for k in sorted(shapes, key=_rank))


def to_torch(params, form, unused=None):
    """Flax probe params -> official state dict {'module.' + name: float32 NumPy, torch layout}.

    form 'vjepa' also writes `xattn.proj`: the values in `unused` (from an import) or zeros.
    """
    out = {}
    for path, x in trees.flatten(params).items():
        x = np.asarray(jax.device_get(x), np.float32)
        out[official_name(path)] = np.array(to_torch_layout(path, x), np.float32, order="C")
    if form == "vjepa":
        d = out["pooler.query_tokens"].shape[-1]
        unused = unused or {}
        for name, shape in zip(UNUSED_PROJ, ((d, d), (d,))):
            value = unused.get(name)
            out[name] = (np.zeros(shape, np.float32) if value is None
                         else np.array(value, np.float32, order="C"))
    elif unused:
        raise ValueError(f"probe.form='vjepa2' has no {sorted(unused)}: nothing to write them to")
    return collections.OrderedDict(("module." + k, out[k]) for k in sorted(out, key=_rank))


def from_torch(state_dict, abstract, form, where):
    """Official probe state dict (`module.` optional) -> (Flax params like `abstract`, unused).

    Strict: StrictLoadError lists every missing, unexpected and wrongly shaped key. `unused`
    holds V-JEPA 1's `xattn.proj` tensors ({} for 'vjepa2').
    """
    sd = strip_prefixes(state_dict)
    want = expected_shapes(abstract, form)
    mismatch.check_shapes({k: tuple(v.shape) for k, v in sd.items()}, want, where)
    paths = {official_name(p): p for p in trees.flatten(abstract)}
    params = trees.unflatten({path: from_torch_layout(path, to_numpy(sd[name]))
                              for name, path in paths.items()})
    unused = {name: to_numpy(sd[name]) for name in UNUSED_PROJ if name in want}
    mismatch.check_finite(params, f"{where}: probe weights")
    return params, unused


def describe(state_dict, where):
    """What an official probe state dict holds: {'form', 'num_blocks', 'width', 'num_classes',
    'mlp_ratio'}, read from its keys and shapes; ValueError when it is no attentive probe."""
    sd = strip_prefixes(state_dict)
    for key in ("pooler.query_tokens", "linear.weight",
                "pooler.cross_attention_block.mlp.fc1.weight"):
        if key not in sd:
            raise ValueError(f"{where} is not an attentive-probe state dict: no {key!r} "
                             f"(keys: {sorted(sd)[:8]})")
    blocks = {int(k.split(".")[2]) for k in sd if k.startswith("pooler.blocks.")}
    width = int(sd["pooler.query_tokens"].shape[-1])
    if UNUSED_PROJ[0] in sd:
        if blocks:
            raise ValueError(f"{where} is a V-JEPA 1 probe with {len(blocks)} blocks after its "
                             "cross-attention (depth > 1), which this project does not build")
        form, num_blocks = "vjepa", 1
    else:
        form, num_blocks = "vjepa2", len(blocks) + 1
    return {"form": form, "num_blocks": num_blocks, "width": width,
            "num_classes": int(sd["linear.weight"].shape[0]),
            "mlp_ratio": int(sd["pooler.cross_attention_block.mlp.fc1.weight"].shape[0]) / width}


def pick_state_dict(ckpt, where, head=0):
    """The probe state dict of a loaded file: 'classifier' (V-JEPA 1), 'classifiers'[head]
    (V-JEPA 2, one per head of its sweep) or the file itself when it is a bare state dict."""
    if "classifier" in ckpt:
        return ckpt["classifier"]
    if "classifiers" in ckpt:
        heads = ckpt["classifiers"]
        if not 0 <= head < len(heads):
            raise ValueError(f"{where} holds {len(heads)} probes ('classifiers'); head={head} is "
                             f"not among 0..{len(heads) - 1}")
        return heads[head]
    if any(k.endswith("pooler.query_tokens") for k in ckpt):
        return ckpt
    raise ValueError(f"{where} is not a probe checkpoint: no 'classifier' or 'classifiers' entry "
                     f"(top-level keys: {sorted(ckpt)[:12]})")


def read_file(path, head=0, allow_pickle=False):
    """(state dict, describe()) of an official probe file (.pth.tar / .pt)."""
    path = os.fspath(path)
    ckpt = files.read_torch_file(path, allow_pickle)
    sd = pick_state_dict(ckpt, path, head)
    return sd, describe(sd, path)


def write_file(path, params, form, unused=None, epoch=0):
    """Write probe params as an official probe file; returns the state dict written.

    'vjepa' -> {'classifier': sd, 'epoch'}; 'vjepa2' -> {'classifiers': [sd], 'epoch'}. No
    optimizer state: the file is for evaluation and inference (the official eval, resumed from
    it, starts its optimizer afresh).
    """
    torch = files.import_torch()
    sd = collections.OrderedDict((k, torch.from_numpy(v))
                                 for k, v in to_torch(params, form, unused).items())
    ckpt = {"classifier": sd} if form == "vjepa" else {"classifiers": [sd]}
    ckpt["epoch"] = int(epoch)  # plain int: torch.load(weights_only=True) rejects NumPy scalars
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    torch.save(ckpt, path)
    return sd
