"""Device mesh ('data', 'fsdp'), logical-axis rules, and shardings for the state and the batch."""
import logging

import flax.linen as nn
import jax
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

_log = logging.getLogger(__name__)

AXES = ("data", "fsdp")
# Logical parameter axes (named in models/) -> mesh axes. The embedding axis of every matrix is
# split over 'fsdp' (ZeRO-3 style); everything else is replicated.
RULES = (("embed", "fsdp"), ("mlp", None), ("qkv", None), ("pred", None), ("norm", None))


def make_mesh(mesh_cfg, devices=None):
    """Mesh of shape (data, fsdp) from config; one size may be -1 to absorb the remaining devices."""
    devices = list(jax.devices() if devices is None else devices)
    sizes = [mesh_cfg.data, mesh_cfg.fsdp]
    if sizes.count(-1) > 1 or any(s == 0 or s < -1 for s in sizes):
        raise ValueError(f"mesh.data={sizes[0]}, mesh.fsdp={sizes[1]}: use positive sizes, "
                         "at most one of them -1")
    known = int(np.prod([s for s in sizes if s != -1]))
    if -1 in sizes:
        if len(devices) % known:
            raise ValueError(f"{len(devices)} devices cannot be split into mesh {sizes}")
        sizes[sizes.index(-1)] = len(devices) // known
    total = sizes[0] * sizes[1]
    if total > len(devices):
        raise ValueError(f"mesh {sizes} needs {total} devices, only {len(devices)} available")
    if total < len(devices):
        _log.warning("mesh %s uses %d of %d devices", sizes, total, len(devices))
    return Mesh(np.asarray(devices[:total]).reshape(sizes), AXES)


def batch_sharding(mesh):
    """Leading (batch) axis split over both mesh axes."""
    return NamedSharding(mesh, P(AXES))


def replicated(mesh):
    """Every device holds the whole array."""
    return NamedSharding(mesh, P())


def param_shardings(boxed_abstract, mesh):
    """Shardings for a tree of nn.LogicallyPartitioned abstract params (from jax.eval_shape(init))."""
    specs = nn.get_partition_spec(boxed_abstract)
    shardings = nn.logical_to_mesh_sharding(specs, mesh, RULES)
    check_shardable(nn.unbox(boxed_abstract), shardings)
    return shardings


def check_shardable(abstract, shardings):
    """Raise ValueError naming the first array whose split dimension does not divide evenly.

    JAX would only say "IndivisibleError" deep inside jit, without the parameter's name.
    """
    def check(path, x, s):
        for dim, axes in zip(x.shape, s.spec):
            axes = () if axes is None else (axes if isinstance(axes, tuple) else (axes,))
            n = int(np.prod([s.mesh.shape[a] for a in axes]))
            if dim % n:
                raise ValueError(
                    f"{jax.tree_util.keystr(path)} of shape {tuple(x.shape)}: dimension {dim} "
                    f"cannot be split over mesh axes {axes} of size {n}; choose mesh sizes "
                    f"(mesh.fsdp) that divide the model widths")
    jax.tree_util.tree_map_with_path(check, abstract, shardings)


def bytes_per_device(abstract, shardings):
    """Bytes one device holds of a tree of arrays/shapes placed with `shardings` (the largest shard)."""
    def shard_bytes(x, s):
        return int(np.prod(s.shard_shape(x.shape))) * np.dtype(x.dtype).itemsize
    return sum(jax.tree.leaves(jax.tree.map(shard_bytes, abstract, shardings)))


def opt_state_shardings(tx, opt_abstract, params_sharding, mesh):
    """Optimizer-state leaves that mirror params take the params' sharding; the rest replicate."""
    return optax.tree_map_params(tx, lambda _, s: s, opt_abstract, params_sharding,
                                 transform_non_params=lambda _: replicated(mesh))


def check_divisible(name, size, mesh):
    """Raise a clear error when a global batch cannot be split evenly over the mesh."""
    n = mesh.devices.size
    if size % n:
        raise ValueError(f"{name}={size} is not divisible by the {n} devices of mesh {dict(mesh.shape)}")
