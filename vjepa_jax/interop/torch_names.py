"""Official PyTorch names and layouts of Flax params: 'blocks_3/qkv/kernel' <-> 'blocks.3.attn.qkv.weight'.

The naming convention and the kernel transposes the official JEPA code bases share; which names
a checkpoint holds and in what order is each method's layout (methods/<method>/layout.py).
"""
import re

import numpy as np

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
    """Flax -> torch layout: Dense kernel [in,out] -> [out,in]; Conv3d [t,h,w,in,out] ->
    [out,in,t,h,w]; Conv2d [h,w,in,out] -> [out,in,h,w]."""
    if path[-1] == "kernel" and x.ndim == 2:
        return x.T
    if path[-1] == "kernel" and x.ndim == 5:
        return x.transpose(4, 3, 0, 1, 2)
    if path[-1] == "kernel" and x.ndim == 4:
        return x.transpose(3, 2, 0, 1)
    return x


def from_torch_layout(path, x):
    """Inverse of to_torch_layout."""
    if path[-1] == "kernel" and x.ndim == 2:
        return x.T
    if path[-1] == "kernel" and x.ndim == 5:
        return x.transpose(2, 3, 4, 1, 0)
    if path[-1] == "kernel" and x.ndim == 4:
        return x.transpose(2, 3, 1, 0)
    return x


def torch_shape(path, shape):
    """The torch shape of a Flax param of `shape` at `path`."""
    return tuple(to_torch_layout(path, np.empty(shape, np.bool_)).shape)


def to_numpy(x):
    """A torch tensor or array-like -> float32 NumPy array (a copy only when needed)."""
    if hasattr(x, "detach"):  # torch tensor; bf16/fp16 go through float32
        x = x.detach().cpu().float().numpy()
    return np.asarray(x, np.float32)


def strip_prefixes(state_dict):
    """Drop leading `module.` / `backbone.` from every key, as the official eval loader does."""
    out = {}
    for key, value in state_dict.items():
        name = key
        while name.startswith(("module.", "backbone.")):
            name = name.split(".", 1)[1]
        out[name] = value
    return out
