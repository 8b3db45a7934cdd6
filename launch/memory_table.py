"""What model.remat and mesh.fsdp cost and save, per device: the numbers in docs/SCALING.md.

    python launch/memory_table.py --config configs/pretrain/vitl16.py
    python launch/memory_table.py --config configs/pretrain/demo.py --set model.depth=2 \
        --compile --meshes 1x1,8x1,1x8 --devices 8

Three tables, none of which runs a step:
1. train state (params, EMA target, Adam moments) per device for several fsdp sizes: exact,
   from the shapes and the sharding rules;
2. activations saved for the backward pass, per clip, for each remat policy: JAX's own list of
   residuals (`jax.ad_checkpoint.print_saved_residuals`), before XLA fuses or drops any, so an
   upper bound that does not depend on the backend; and the extra FLOPs each policy recomputes;
3. with --compile: XLA's compiled memory (state, temporaries) of the whole step for each mesh
   and policy on this backend. `--devices N` fakes N CPU devices. On XLA's CPU backend remat
   does not lower the compiled memory (also reported in jax-ml/jax#19822): on CPU use table 2
   for remat and table 3 for meshes, or run table 3 on the GPU.
"""
import argparse
import contextlib
import io
import os
import re
import sys

REMATS = ("none", "full", "dots")
MIB = 2 ** 20


def parse():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="configs/pretrain/vitl16.py", help="config file[:arg]")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="config override, e.g. --set model.depth=6 (repeatable)")
    p.add_argument("--fsdp", default="1,8,64", help="fsdp sizes for the state table")
    p.add_argument("--compile", action="store_true", help="also compile the step (table 3)")
    p.add_argument("--meshes", default="1x1", help="DATAxFSDP meshes for table 3")
    p.add_argument("--devices", type=int, default=0, help="fake this many CPU devices")
    return p.parse_args()


def load_config(spec, overrides):
    """config_lib.load_config_file(`path[:arg]`), with KEY=VALUE overrides (Python literals)."""
    import ast

    from vjepa_jax import config as config_lib

    config = config_lib.load_config_file(spec)
    for item in overrides:
        key, _, value = item.partition("=")
        try:
            value = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            pass  # a bare string such as bfloat16
        *parents, leaf = key.split(".")
        node = config
        for name in parents:
            node = node[name]
        node[leaf] = value
    return config


def create(config, mesh):
    """(vjepa, abstract TrainState, state shardings) without creating any array."""
    import jax

    from vjepa_jax import methods, train_state

    vjepa = methods.get(config.method).build(config)
    abstract, shardings, _ = train_state.create(vjepa.init, config.optim, mesh, jax.random.key(0))
    return vjepa, abstract, shardings


def state_table(config, fsdp_sizes):
    """Bytes per device of the train state for each fsdp size (leaves split over 'fsdp' / n)."""
    import jax
    import numpy as np

    from vjepa_jax import sharding

    config.mesh.update(data=1, fsdp=1)
    _, abstract, shardings = create(config, sharding.make_mesh(config.mesh, jax.devices()[:1]))
    split = replicated = 0
    for x, s in zip(jax.tree.leaves(abstract), jax.tree.leaves(shardings)):
        nbytes = int(np.prod(x.shape)) * np.dtype(x.dtype).itemsize
        if any(a == "fsdp" or (isinstance(a, tuple) and "fsdp" in a) for a in s.spec):
            split += nbytes
        else:
            replicated += nbytes
    print(f"\n1. train state per device (params + EMA target + Adam moments, float32); "
          f"replicated part {replicated / MIB:.1f} MiB")
    for n in fsdp_sizes:
        print(f"   fsdp={n:<4} {(split / n + replicated) / MIB:10.1f} MiB")


def residuals_per_clip(config, remat):
    """(bytes of all residuals, bytes of [B, heads, L, L] attention matrices) for one clip."""
    import flax.linen as nn
    import jax
    import jax.numpy as jnp
    from jax.ad_checkpoint import print_saved_residuals

    from vjepa_jax import methods

    config.model.remat = remat
    vjepa = methods.get(config.method).build(config)
    s = vjepa.encoder.shape
    heads = {s.num_heads, vjepa.predictor.num_heads}
    params = nn.unbox(jax.eval_shape(vjepa.init, jax.random.key(0)))

    def loss(p):
        # The target encoder is not differentiated in the train step: stop_gradient here too.
        frozen = jax.tree.map(jax.lax.stop_gradient, p["encoder"])
        masks = vjepa.sample_masks(jax.random.key(0), 1)
        clip = jnp.zeros(s.clip(1), jnp.float32)
        return vjepa.loss(p, frozen, clip, masks)[0]

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        print_saved_residuals(loss, params)
    total = attn = 0
    for line in out.getvalue().splitlines():
        m = re.match(r"(\w+)\[([\d,]*)\] (.*)", line)
        if not m or m.group(3).startswith("from the argument"):
            continue  # parameters are in memory anyway
        shape = [int(d) for d in m.group(2).split(",") if d]
        bits = re.search(r"\d+$", m.group(1))  # f32, bf16, i32, u8 ...; bool has none
        nbytes = int(bits.group()) // 8 if bits else 1
        for d in shape:
            nbytes *= d
        total += nbytes
        if len(shape) == 4 and shape[1] in heads and shape[2] == shape[3]:
            attn += nbytes
    return total, attn


def recompute_flops(vjepa, remat):
    """FLOPs per clip that a remat policy recomputes in the backward pass."""
    from vjepa_jax import flops

    if remat == "none":
        return 0
    s, p = vjepa.encoder.shape, vjepa.predictor
    extra = 0
    for g in vjepa.generators:
        lc, lp = g.num_context, g.num_context + g.num_target
        if remat == "full":  # every block's forward, again
            extra += (flops.vit_forward(lc, s.width, s.depth, s.mlp_hidden)
                      + flops.vit_forward(lp, p.width, p.depth, 4 * p.width))
        else:  # 'dots' keeps the weight matmuls; attention's batched matmuls are recomputed
            extra += 4 * (s.depth * lc * lc * s.width + p.depth * lp * lp * p.width)
    return extra


def residual_table(config_fn):
    from vjepa_jax import methods

    step = None
    print("\n2. activations saved for backward, per clip (JAX residuals, before XLA; "
          "XLA attention), and recomputed FLOPs")
    print(f"   {'remat':>6} {'saved MiB':>10} {'of which attention':>19} {'extra FLOPs':>12}")
    for remat in REMATS:
        config = config_fn()
        total, attn = residuals_per_clip(config, remat)
        vjepa = methods.get(config.method).build(config)
        step = step or vjepa.flops(1)
        extra = recompute_flops(vjepa, remat)
        print(f"   {remat:>6} {total / MIB:10.1f} {attn / MIB:19.1f} {extra / step:11.0%}", flush=True)


def compiled_table(config_fn, meshes):
    """XLA's compiled memory of the whole step per device for each mesh and remat policy."""
    import jax
    import jax.numpy as jnp

    from vjepa_jax import sharding, train_step

    print(f"\n3. compiled step on {jax.devices()[0].platform}, per device "
          "(XLA memory_analysis; global batch data.batch_size)")
    print(f"   {'mesh':>6} {'remat':>6} {'state MiB':>10} {'temp MiB':>9} {'peak MiB':>9}")
    # On CPU skip LLVM optimisation: buffer sizes are fixed before it runs, and it is most of
    # the compile time.
    fast = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}
    options = fast if jax.devices()[0].platform == "cpu" else {}
    for mesh_name in meshes:
        data, fsdp = (int(n) for n in mesh_name.split("x"))
        for remat in REMATS:
            config = config_fn()
            config.model.remat = remat
            config.mesh.update(data=data, fsdp=fsdp)
            mesh = sharding.make_mesh(config.mesh)
            vjepa, abstract, shardings = create(config, mesh)
            batch_sharding, repl = sharding.batch_sharding(mesh), sharding.replicated(mesh)
            step = train_step.jit_train_step(vjepa, config.optim, shardings,
                                             {"video": batch_sharding}, repl)
            place = lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s)
            video = jax.ShapeDtypeStruct(vjepa.encoder.shape.clip(config.data.batch_size),
                                         jnp.uint8)
            m = step.lower(jax.tree.map(place, abstract, shardings),
                           {"video": place(video, batch_sharding)},
                           place(jax.random.key(0), repl)).compile(options).memory_analysis()
            peak = (m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes
                    + m.temp_size_in_bytes)
            state = sharding.bytes_per_device(abstract, shardings)
            print(f"   {mesh_name:>6} {remat:>6} {state / MIB:10.1f} {m.temp_size_in_bytes / MIB:9.1f} "
                  f"{peak / MIB:9.1f}", flush=True)


def main():
    args = parse()
    if args.devices:
        os.environ["JAX_PLATFORMS"] = "cpu"
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                                   f" --xla_force_host_platform_device_count={args.devices}")
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import jax
    import logging

    logging.getLogger().setLevel(logging.ERROR)  # "mesh uses 1 of 8 devices" is intended here
    config_fn = lambda: load_config(args.config, args.set)
    c = config_fn()
    print(f"{args.config} {' '.join(args.set)}: {c.model.variant}, depth {c.model.depth or 'table'}, "
          f"{c.model.num_frames}x{c.model.crop_size}x{c.model.crop_size}, {c.model.dtype}; "
          f"jax {jax.__version__}")
    state_table(config_fn(), [int(n) for n in args.fsdp.split(",")])
    residual_table(config_fn)
    if args.compile:
        compiled_table(config_fn, args.meshes.split(","))


if __name__ == "__main__":
    main()
