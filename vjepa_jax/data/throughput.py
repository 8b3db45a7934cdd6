"""Measure input-pipeline throughput: decode + clip sampling + augmentation, clips per second.

    python -m vjepa_jax.data.throughput --videos /data/k400_train.csv --workers 16
    python -m vjepa_jax.data.throughput --workers 2     # generates test mp4s first

Reports clips/s of one process doing the per-example work in a loop (what one Grain worker
can deliver) and of the full pipeline (`make_dataset`) with `--workers` worker processes.
"""
import argparse
import glob
import json
import os
import shutil
import tempfile
import time

import numpy as np

from vjepa_jax.config import base_config
from vjepa_jax.data import pipeline
from vjepa_jax.data import transforms
from vjepa_jax.data.synthetic import SyntheticVideos, write_mp4


def generate_videos(directory, num_videos, num_frames, height, width, fps=30, seed=0,
                    keyframe_interval=60):
    """Write generated mp4s [num_frames, height, width] and a CSV index; returns the CSV path."""
    os.makedirs(directory, exist_ok=True)
    # Generate in chunks of 32 frames: one long SyntheticVideos clip would need a lot of memory.
    lines = []
    for i in range(num_videos):
        chunks = SyntheticVideos(num_frames // 32 + 1, 32, height, width, seed + i)
        frames = np.concatenate([chunks[k]["video"] for k in range(len(chunks))])[:num_frames]
        path = os.path.join(directory, f"bench_{i:04d}.mp4")
        # Like typical web videos: FFmpeg's default quality, B-frames, a keyframe every 2 s.
        write_mp4(path, frames, fps=fps, crf=23, preset="medium",
                  keyframe_interval=keyframe_interval)
        lines.append(f"{path} {i}\n")
    csv = os.path.join(directory, "bench.csv")
    with open(csv, "w") as f:
        f.writelines(lines)
    return csv


def _index_path(videos):
    if os.path.isdir(videos):
        paths = sorted(glob.glob(os.path.join(videos, "*.mp4")))
        if not paths:
            raise ValueError(f"--videos {videos}: no .mp4 files in this directory")
        csv = os.path.join(tempfile.mkdtemp(prefix="vjepa_bench_"), "index.csv")
        with open(csv, "w") as f:
            f.writelines(f"{os.path.abspath(p)} 0\n" for p in paths)
        return csv
    if not os.path.exists(videos):
        raise ValueError(f"--videos {videos}: no such file or directory")
    return videos


def measure(index, *, workers, batch_size, batches, frames, frame_step, crop, seed=0, seek=True):
    """Clips/s: 'per_worker' (one process, wall clock), 'per_cpu_second' (the same per CPU
    second of that process), 'total' (make_dataset with `workers` worker processes)."""
    c = base_config()
    c.seed = seed
    c.model.num_frames, c.model.crop_size = frames, crop
    c.data.update(source="csv", index=(index,), batch_size=batch_size, frame_step=frame_step,
                  num_workers=0, read_threads=1, decode_threads=1,  # as inside one worker
                  seek=seek)
    source = pipeline.make_source(c, train=True)
    load = pipeline.example_loader(c, source)
    n = batch_size * batches
    rng = np.random.default_rng(seed)
    order = rng.integers(0, len(source), n)
    load(int(order[0]), np.random.default_rng(0))  # warm-up (imports, first open)
    start, cpu_start = time.perf_counter(), time.process_time()
    for k, i in enumerate(order):
        load(int(i), np.random.default_rng(k))
    per_worker = n / (time.perf_counter() - start)
    # CPU time is what one dedicated core would need; wall time suffers on a busy machine.
    per_cpu_second = n / (time.process_time() - cpu_start)

    # Where the time goes: decoding + clip sampling vs crop/resize/flip, CPU ms per clip.
    cpu_start = time.process_time()
    clips = [source.load(int(i), np.random.default_rng(k))[0] for k, i in enumerate(order[:8])]
    decode_ms = (time.process_time() - cpu_start) / len(clips) * 1e3
    cpu_start = time.process_time()
    for k, clip in enumerate(clips):
        transforms.pretrain_transform(clip[0], np.random.default_rng(k), crop)
    augment_ms = (time.process_time() - cpu_start) / len(clips) * 1e3

    c.data.num_workers = workers
    c.data.update(read_threads=0, decode_threads=0)  # the pipeline's own choices
    it = iter(pipeline.make_dataset(c))
    next(it)  # worker start-up is not throughput
    start = time.perf_counter()
    for _ in range(batches):
        next(it)
    total = n / (time.perf_counter() - start)
    executor = getattr(it, "_executor", None)  # Grain's read-ahead threads (workers=0)
    it.close()
    if executor is not None:  # let in-flight reads finish before the caller deletes the videos
        executor.shutdown(wait=True)
    return {"per_worker": per_worker, "per_cpu_second": per_cpu_second, "total": total,
            "decode_cpu_ms": decode_ms, "augment_cpu_ms": augment_ms}


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m vjepa_jax.data.throughput",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--videos", default="", help="CSV/npy index or a directory of .mp4 files; "
                        "empty: generate --num_videos test videos")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--frame_step", type=int, default=4)
    parser.add_argument("--crop", type=int, default=224)
    parser.add_argument("--num_videos", type=int, default=16)
    parser.add_argument("--gen_frames", type=int, default=300, help="generated video length")
    parser.add_argument("--gen_size", default="256x340", help="generated video HxW")
    parser.add_argument("--keyframe_interval", type=int, default=60,
                        help="generated videos: frames between keyframes (web videos: 2-5 s)")
    parser.add_argument("--no_seek", action="store_true",
                        help="decode every clip from the video's start (data.seek=False)")
    parser.add_argument("--keep", action="store_true", help="keep the generated videos")
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    args = parser.parse_args(argv)

    directory = None
    if args.videos:
        index = _index_path(args.videos)
    else:
        h, w = (int(x) for x in args.gen_size.split("x"))
        directory = tempfile.mkdtemp(prefix="vjepa_bench_")
        start = time.perf_counter()
        index = generate_videos(directory, args.num_videos, args.gen_frames, h, w,
                                keyframe_interval=args.keyframe_interval)
        print(f"generated {args.num_videos} videos of {args.gen_frames} frames at {h}x{w} in "
              f"{directory} ({time.perf_counter() - start:.0f} s)")
    try:
        result = measure(index, workers=args.workers, batch_size=args.batch_size,
                         batches=args.batches, frames=args.frames, frame_step=args.frame_step,
                         crop=args.crop, seek=not args.no_seek)
    finally:
        if directory and not args.keep:
            shutil.rmtree(directory, ignore_errors=True)
    result.update(workers=args.workers, cpus=os.cpu_count(), index=index)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"one process: {result['per_worker']:.1f} clips/s wall clock, "
              f"{result['per_cpu_second']:.1f} clips per CPU second "
              f"({args.frames}x{args.crop}x{args.crop}, frame_step {args.frame_step})")
        print(f"per clip: decode + sample {result['decode_cpu_ms']:.0f} ms, crop + resize + "
              f"flip {result['augment_cpu_ms']:.0f} ms (CPU time)")
        print(f"{args.workers} workers: {result['total']:.1f} clips/s total, "
              f"{result['total'] / max(args.workers, 1):.1f} per worker ({os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()
