"""Validate video index files before training: missing, unreadable and too-short videos, labels.

    python -m vjepa_jax.data.check /data/k400_train.csv /data/ssv2.csv --frames_per_clip 16 \
        --frame_step 4 --threads 8

`--decode first` (the default) decodes the first frame of each video, `--decode all` every frame
(slow: a full pass over the data, but the only way to find a stream damaged in the middle),
`--decode none` reads headers only. Exit status 0 when every video is usable, 1 when problems
were found, 2 when an index file itself is malformed. Too-short videos (fewer than frames_per_clip * frame_step frames) are
usable (the last frame is repeated) but reported; `--allow_short` does not count them as problems.
"""
import argparse
import collections
import concurrent.futures
import sys

from vjepa_jax.data import index as index_lib
from vjepa_jax.data import video as video_lib


DECODE = ("none", "first", "all")


def _decode_mode(decode):
    """'none' | 'first' | 'all' from a mode or a bool (True: 'first', as before)."""
    mode = {True: "first", False: "none"}.get(decode, decode)
    if mode not in DECODE:
        raise ValueError(f"--decode {decode!r}: use one of {', '.join(DECODE)}")
    return mode


def decode_all(path, expected):
    """Decode every frame of a video; VideoError at the first frame the decoder rejects, or when
    fewer than `expected` (the count training samples clip indices from) come out."""
    import av  # imported here like video.py: index users need no PyAV

    count = 0
    with av.open(path) as container:
        try:
            for _ in container.decode(container.streams.video[0]):
                count += 1
        except Exception as e:  # PyAV raises many FFmpeg error types
            raise video_lib.VideoError(f"decoding fails after {count} of {expected} frames: "
                                       f"{type(e).__name__}: {e}") from e
    if count < expected:
        raise video_lib.VideoError(f"only {count} of {expected} frames decode")


def check_video(path, min_frames, decode="first"):
    """(status, detail) of one video: status is 'ok', 'missing', 'unreadable' or 'short'.

    decode: 'none' (headers only), 'first' (the first frame) or 'all' (every frame).
    """
    decode = _decode_mode(decode)
    try:
        n, _ = video_lib.count_frames(path)
        if n < 1:
            raise video_lib.VideoError("no frames")
        if decode == "first":  # the header can be fine while the stream is not
            video_lib.decode_frames(path, [0], threads=1)
        elif decode == "all":  # a stream garbled in the middle decodes its first frame fine
            decode_all(path, n)
    except video_lib.VideoError as e:
        return ("missing" if str(e) == "missing file" else "unreadable"), str(e)
    if n < min_frames:
        return "short", f"{n} frames < {min_frames}"
    return "ok", f"{n} frames"


def check_index(files, *, frames_per_clip=16, frame_step=4, threads=4, decode="first"):
    """Check every video of the index files; returns a dict of counts, problem lists and labels.

    decode: 'none', 'first' or 'all' (check_video)."""
    decode = _decode_mode(decode)
    idx = index_lib.read_index(files)
    min_frames = frames_per_clip * frame_step
    with concurrent.futures.ThreadPoolExecutor(max(1, threads)) as pool:  # PyAV releases the GIL
        results = list(pool.map(lambda p: check_video(p, min_frames, decode), idx.paths))
    problems = collections.defaultdict(list)
    for path, (status, detail) in zip(idx.paths, results):
        if status != "ok":
            problems[status].append((path, detail))
    counts = collections.Counter(status for status, _ in results)
    return {
        "total": len(idx),
        "counts": {k: counts.get(k, 0) for k in ("ok", "short", "missing", "unreadable")},
        "problems": dict(problems),
        "label_min": int(idx.labels.min()),
        "label_max": int(idx.labels.max()),
        "num_labels": int(len(set(idx.labels.tolist()))),
        "min_frames": min_frames,
    }


def format_report(report, max_listed=20):
    """Human-readable multi-line summary of check_index's result."""
    c = report["counts"]
    lines = [f"{report['total']} videos: {c['ok']} ok, {c['short']} short "
             f"(< {report['min_frames']} frames), {c['missing']} missing, "
             f"{c['unreadable']} unreadable",
             f"labels: {report['num_labels']} distinct in [{report['label_min']}, "
             f"{report['label_max']}]"]
    for status in ("missing", "unreadable", "short"):
        entries = report["problems"].get(status, [])
        if entries:
            lines.append(f"{status} ({len(entries)}):")
            lines += [f"  {path}: {detail}" for path, detail in entries[:max_listed]]
            if len(entries) > max_listed:
                lines.append(f"  ... and {len(entries) - max_listed} more")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m vjepa_jax.data.check",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("index", nargs="+", help="CSV (`path label`) or .npy index files")
    parser.add_argument("--frames_per_clip", type=int, default=16)
    parser.add_argument("--frame_step", type=int, default=4)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--decode", choices=DECODE, default="first",
                        help="none: headers only; first: decode the first frame (default); "
                             "all: decode every frame (finds streams damaged in the middle)")
    parser.add_argument("--no_decode", action="store_true", help="same as --decode none")
    parser.add_argument("--allow_short", action="store_true",
                        help="short videos are not problems (exit 0 if only those)")
    parser.add_argument("--max_listed", type=int, default=20)
    args = parser.parse_args(argv)
    try:
        report = check_index(args.index, frames_per_clip=args.frames_per_clip,
                             frame_step=args.frame_step, threads=args.threads,
                             decode="none" if args.no_decode else args.decode)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_report(report, args.max_listed))
    c = report["counts"]
    bad = c["missing"] + c["unreadable"] + (0 if args.allow_short else c["short"])
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
