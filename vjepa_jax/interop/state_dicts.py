"""Flax params <-> an official state dict of one module (encoder or predictor), strictly.

A method's layout describes each module with a `ModuleNames`: its frozen table's key, its block
prefix and the modules before and after the blocks, in the official module's order. From that
these functions build the state dict in named_parameters() order, read one back checking every
key, shape and the frozen table, and list the (name, torch shape) order the AdamW state uses.
"""
import collections
import dataclasses

import jax
import numpy as np

from vjepa_jax import mismatch, trees
from vjepa_jax.interop.torch_names import (from_torch_layout, strip_prefixes, to_numpy,
                                           to_torch_layout, torch_name, torch_shape)

# Top-level entries of an official JEPA pretraining checkpoint (VJEPA_SPEC §6.1, IJEPA_SPEC §6.1).
TOP_LEVEL_KEYS = ("encoder", "predictor", "target_encoder", "opt", "scaler", "epoch", "loss",
                  "batch_size", "world_size", "lr")
# What torch.cuda.amp.GradScaler() starts from; the official bf16 runs load it on resume.
FRESH_SCALER = {"scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5,
                "growth_interval": 2000, "_growth_tracker": 0}
# A file's frozen table may have drifted by float32 rounding of the EMA (pos_embed is averaged
# with itself every step in the reference); anything larger is not the sin-cos table.
TABLE_ATOL = 1e-3
_IN_BLOCK = ["norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2"]


@dataclasses.dataclass(frozen=True)
class ModuleNames:
    """Official parameter names of one module, in named_parameters() order:
    `first` (own parameters before the table), the table, `heads`, blocks, `tails`.
    pos_key None: the module has no frozen table (V-JEPA 2's RoPE)."""
    pos_key: str | None
    blocks: str
    heads: tuple
    tails: tuple
    first: tuple = ()


def official_order(spec, names):
    """`names` sorted as the official module's named_parameters()."""
    def rank(name):
        if name in spec.first:
            return (-1, spec.first.index(name))
        if name == spec.pos_key:
            return (0,)
        if name.startswith(spec.blocks + "."):
            _, i, rest = name.split(".", 2)
            module, leaf = rest.rsplit(".", 1)
            return (2, int(i), _IN_BLOCK.index(module), leaf != "weight")
        for j, head in enumerate(spec.heads):
            if name.startswith(head + "."):
                tail = name[len(head) + 1:]
                return (1, j, int(tail) if tail.isdigit() else tail != "weight")
        module, leaf = name.rsplit(".", 1)
        return (3, spec.tails.index(module), leaf != "weight")
    return sorted(names, key=rank)


def module_to_torch(params, spec, pos_table):
    """Flax params of one module -> OrderedDict {official name: float32 NumPy, torch layout}.

    `pos_table` [N, width] is written as the frozen `spec.pos_key` [1, N, width] (None: no table).
    """
    out = {} if spec.pos_key is None else {spec.pos_key: np.asarray(pos_table, np.float32)[None]}
    for path, x in trees.flatten(params).items():
        x = np.asarray(jax.device_get(x), np.float32)
        # A writable C-ordered copy: torch.from_numpy shares memory and warns on read-only arrays.
        out[torch_name(path)] = np.array(to_torch_layout(path, x), np.float32, order="C")
    return collections.OrderedDict((k, out[k]) for k in official_order(spec, out))


def module_from_torch(state_dict, abstract, spec, pos_table, where):
    """Official state dict (prefixes optional) -> Flax params shaped like `abstract`, strictly.

    Raises StrictLoadError listing every missing, unexpected and wrongly shaped key; the frozen
    table must equal `pos_table` (the model computes it, so a different table is an error).
    """
    sd = strip_prefixes(state_dict)
    expected = {torch_name(path): (path, torch_shape(path, x.shape))
                for path, x in trees.flatten(abstract).items()}
    if spec.pos_key is not None:
        expected[spec.pos_key] = (None, (1,) + tuple(pos_table.shape))
    mismatch.check_shapes({k: tuple(v.shape) for k, v in sd.items()},
                          {k: expected[k][1] for k in official_order(spec, expected)}, where)
    if spec.pos_key is not None:
        check_table(sd[spec.pos_key], pos_table, f"{where}: {spec.pos_key}")
    return trees.unflatten({path: from_torch_layout(path, to_numpy(sd[name]))
                            for name, (path, _) in expected.items() if path is not None})


def check_table(stored, table, where):
    """Raise ValueError unless a file's frozen table [1, N, D] equals the model's [N, D]."""
    error = float(np.max(np.abs(to_numpy(stored)[0] - table))) if table.size else 0.0
    if error > TABLE_ATOL:
        raise ValueError(f"{where} differs from the sin-cos table of this model by {error:.3g}; "
                         "only the reference's fixed sin-cos positions are supported")


def torch_order(params, specs, tables):
    """{'encoder'|'predictor': [(official name, torch shape)]} in named_parameters() order."""
    out = {}
    for module, table in zip(("encoder", "predictor"), tables):
        spec = specs[module]
        shapes = {torch_name(p): torch_shape(p, x.shape)
                  for p, x in trees.flatten(params[module]).items()}
        if spec.pos_key is not None:
            shapes[spec.pos_key] = (1,) + table.shape
        out[module] = [(n, shapes[n]) for n in official_order(spec, shapes)]
    return out
