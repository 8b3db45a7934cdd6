"""Benchmark the train step: step time, clips/s, model TFLOP/step, MFU, peak memory, compile time
(run it twice: the second run's compile time is a cache hit, what a restarted run pays).

    python -m vjepa_jax.bench --config configs/pretrain/vitl16.py --config.data.batch_size=24
    python -m vjepa_jax.bench --config configs/pretrain/demo.py:smoke --steps 3   # CPU check

Batches are synthetic and device-resident (the input pipeline is benchmarked separately by
`python -m vjepa_jax.data.throughput`); `data.batch_size` is the global batch over all devices.
The first (compiling) step and `--warmup` steps are excluded; the median of `--steps` is reported.
"""
import json
import logging
import os
import time

import jax
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from vjepa_jax import cli, compilation_cache, config as config_lib, methods, sharding
from vjepa_jax import train_state, train_step

FLAGS = flags.FLAGS
log = logging.getLogger("vjepa_jax.bench")


def peak_memory_bytes(compiled):
    """Peak device memory: the allocator's high-water mark where the backend reports one,
    else the compiled program's own estimate (arguments + outputs + temporaries)."""
    stats = jax.local_devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        return stats["peak_bytes_in_use"], "allocator peak"
    m = compiled.memory_analysis()
    total = m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
    return total - m.alias_size_in_bytes, "compiled estimate"


def bench(config, steps, warmup, peak_tflops):
    """Run the benchmark; returns a dict of results."""
    # The batches are generated on the device: the config's data source is never read, so a
    # pretraining config is benched as it is, without its index files.
    config = config.copy_and_resolve_references()
    config.data.source = "synthetic"
    config_lib.validate(config)
    cache = compilation_cache.enable(config.train.compilation_cache)
    warm = bool(cache) and os.path.isdir(cache) and bool(os.listdir(cache))
    mesh = sharding.make_mesh(config.mesh)
    b = config.data.batch_size
    sharding.check_divisible("data.batch_size", b, mesh)
    model = methods.get(config.method).build(config)
    _, shardings, init = train_state.create(model.init, config.optim, mesh, jax.random.key(0))
    state = init(jax.random.key(config.seed))
    batch_sharding, repl = sharding.batch_sharding(mesh), sharding.replicated(mesh)
    step = train_step.jit_train_step(model, config.optim, shardings, {"video": batch_sharding},
                                     repl)
    video_shape = model.encoder.shape.clip(b)
    video = jax.jit(lambda k: jax.random.randint(k, video_shape, 0, 256).astype(np.uint8),
                    out_shardings=batch_sharding)(jax.random.key(1))
    rng = jax.random.key(2)

    log.info("compiling the train step (minutes for ViT-L/H on a GPU)")
    t0 = time.perf_counter()
    compiled = step.lower(state, {"video": video}, rng).compile()
    compile_s = time.perf_counter() - t0
    log.info("compiled in %.1f s; %d warm-up and %d timed steps", compile_s, warmup + 1, steps)
    for _ in range(1 + warmup):
        state, metrics = compiled(state, {"video": video}, rng)
    jax.block_until_ready(metrics)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        state, metrics = compiled(state, {"video": video}, rng)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - t0)
    step_s = float(np.median(times))
    tflop = model.flops(b) / 1e12
    mem, mem_kind = peak_memory_bytes(compiled)
    return {
        "device": f"{mesh.devices.size} x {jax.devices()[0].device_kind}",
        "jax": jax.__version__,
        "model": config.model.variant,
        "clip": f"{config.model.num_frames}x{config.model.crop_size}x{config.model.crop_size}",
        "global_batch": b,
        "attention": config.model.attention,
        "dtype": config.model.dtype,
        "remat": config.model.remat,
        "step_s": step_s,
        "clips_per_s": b / step_s,
        "model_tflop_per_step": tflop,
        "mfu": tflop / step_s / (peak_tflops * mesh.devices.size),
        "peak_memory_gb": mem / 1e9,
        "memory_kind": mem_kind,
        "compile_s": compile_s,
        # A second run with a warm cache reports what a restarted training run pays to compile.
        "compilation_cache": cache,
        "cache_was_warm": warm,
        "loss": float(metrics["loss"]),
    }


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if FLAGS.config is None:
        raise app.UsageError("--config is required")
    result = bench(FLAGS.config, FLAGS.steps, FLAGS.warmup, FLAGS.peak_tflops)
    for k, v in result.items():
        print(f"{k:>22}: {v:.4g}" if isinstance(v, float) else f"{k:>22}: {v}")
    if FLAGS.json:
        with open(FLAGS.json, "w") as f:
            json.dump(result, f, indent=1)


def define_flags():
    """Program flags; defined only when run as a program so modules can be imported together."""
    config_flags.DEFINE_config_file("config", None, "Config file (configs/pretrain/*.py).",
                                    lock_config=True)
    flags.DEFINE_integer("steps", 10, "Timed steps (the median is reported).")
    flags.DEFINE_integer("warmup", 2, "Untimed steps after compilation.")
    flags.DEFINE_float("peak_tflops", 989.0, "Peak dense bf16 TFLOP/s per device (H100 SXM: 989).")
    flags.DEFINE_string("json", None, "Also write the results to this JSON file.")


if __name__ == "__main__":
    define_flags()
    cli.run_program(main, "vjepa_jax.bench")
