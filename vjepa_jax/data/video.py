"""Video decoding with PyAV and the reference's clip frame-index sampling (VJEPA_SPEC §5.2)."""
import contextlib
import logging
import math
import os

import numpy as np

_log = logging.getLogger(__name__)

MIN_BYTES = 1024  # the reference skips files smaller than 1 KiB
MAX_BYTES = 10**9  # ... and larger than 1e9 bytes


class VideoError(Exception):
    """A video that cannot be used (missing, too small or large, undecodable, no frames)."""


def frame_step_for(frames_per_clip, frame_step, duration=0.0, fps=0.0, sample_fps=0):
    """Frame step: `frame_step`; int(duration * fps / frames_per_clip) when duration > 0; or
    ceil(fps) // sample_fps (at least 1) when sample_fps > 0, V-JEPA 2's frames at a fixed rate."""
    if sample_fps and sample_fps > 0:
        if not fps or fps <= 0:
            raise VideoError(f"data.fps={sample_fps} needs the video frame rate, got fps={fps}")
        return max(1, math.ceil(fps) // int(sample_fps))
    if duration and duration > 0:
        if not fps or fps <= 0:
            raise VideoError(f"duration={duration} needs the video frame rate, got fps={fps}")
        return max(1, int(duration * fps / frames_per_clip))
    return frame_step


def clip_indices(num_frames_in_video, *, frames_per_clip, frame_step, num_clips=1, rng=None,
                 random_clip_sampling=True, allow_overlap=False):
    """Frame indices int64 [num_clips, frames_per_clip] chosen exactly as the reference does."""
    n, fpc, fstp = int(num_frames_in_video), int(frames_per_clip), int(frame_step)
    if fpc < 1 or fstp < 1 or num_clips < 1:
        raise ValueError(f"clip_indices: frames_per_clip={fpc}, frame_step={fstp}, "
                         f"num_clips={num_clips} must all be >= 1")
    clip_len = fpc * fstp
    partition_len = n // num_clips
    if partition_len < 1:
        raise VideoError(f"{n} frames cannot be split into {num_clips} clips")
    if random_clip_sampling and rng is None:
        raise ValueError("clip_indices: random_clip_sampling needs an np.random.Generator rng")
    clips = []
    for i in range(num_clips):
        if partition_len > clip_len:
            # Random window inside the partition; randint semantics: upper bound exclusive.
            end = int(rng.integers(clip_len, partition_len)) if random_clip_sampling else clip_len
            start = end - clip_len
            idx = np.clip(np.linspace(start, end, num=fpc), start, end - 1)
            idx = np.floor(idx).astype(np.int64) + i * partition_len
        elif not allow_overlap:
            # Short partition: spread what there is, then repeat the last frame up to fpc.
            m = partition_len // fstp
            idx = np.concatenate([np.linspace(0, partition_len, num=m),
                                  np.full(fpc - m, float(partition_len))])
            idx = np.floor(np.clip(idx, 0, partition_len - 1)).astype(np.int64)
            idx = idx + i * partition_len
        else:
            # Evals: each clip spans up to clip_len frames; clips are shifted evenly and overlap.
            sample_len = min(clip_len, n) - 1
            m = sample_len // fstp
            idx = np.concatenate([np.linspace(0, sample_len, num=m),
                                  np.full(fpc - m, float(sample_len))])
            idx = np.floor(np.clip(idx, 0, max(sample_len - 1, 0))).astype(np.int64)
            shift = (n - clip_len) // (num_clips - 1) if n > clip_len and num_clips > 1 else 0
            idx = idx + i * shift
        clips.append(idx)
    return np.stack(clips)


def _open(path):
    import av  # imported here so that index/transform users do not need PyAV

    if not os.path.exists(path):
        raise VideoError("missing file")
    size = os.path.getsize(path)
    if size < MIN_BYTES:
        raise VideoError(f"file too small ({size} bytes < {MIN_BYTES})")
    if size > MAX_BYTES:
        raise VideoError(f"file too large ({size} bytes > {MAX_BYTES})")
    try:
        container = av.open(path)
    except Exception as e:  # PyAV raises many FFmpeg error types
        raise VideoError(f"cannot open: {type(e).__name__}: {e}") from e
    if not container.streams.video:
        container.close()
        raise VideoError("no video stream")
    return container


@contextlib.contextmanager
def _as_video_error(what):
    """Re-raise any decoder error inside the block as VideoError('what: Type: message')."""
    try:
        yield
    except VideoError:
        raise
    except Exception as e:  # PyAV raises many FFmpeg error types
        raise VideoError(f"{what}: {type(e).__name__}: {e}") from e


def _fps(stream):
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return float(rate) if rate else 0.0


def count_frames(path):
    """(number of frames, frames per second) of a video; counts packets when the header has none."""
    container = _open(path)
    try:
        with _as_video_error("cannot read"):
            stream = container.streams.video[0]
            fps = _fps(stream)
            n = int(stream.frames or 0)
            if n <= 0:  # some containers (webm, some avi) store no frame count: demux and count
                n = sum(1 for packet in container.demux(stream) if packet.size > 0)
    finally:
        container.close()
    return n, fps


def decode_frames(path, indices, *, threads=0, seek=True):
    """Frames at `indices` (any order, repeats allowed) as uint8 [len(indices), H, W, 3] RGB.

    threads: FFmpeg decoding threads, 0 = FFmpeg's choice (all cores), 1 = no threading (best
    when every core already runs a Grain worker). seek: jump to the keyframe before the first
    wanted frame instead of decoding every frame from the start (the cost of a clip late in a
    long video no longer grows with its position). Frames are numbered from their timestamps;
    when a video's timestamps cannot be trusted for that (no frame rate, missing timestamps, a
    seek that lands past the wanted frame) the whole decode falls back to counting from the
    start, which is always correct.
    """
    indices = np.asarray(indices, np.int64).reshape(-1)
    wanted = set(indices.tolist())
    found = None
    if seek and min(wanted) > 0:
        found = _decode(path, wanted, threads, seek=True)
    if found is None:
        found = _decode(path, wanted, threads, seek=False)
    missing = wanted.difference(found)
    if missing:
        raise VideoError(f"video ended before frame {min(missing)} ({len(found)} of "
                         f"{len(wanted)} requested frames decoded)")
    return np.stack([found[i] for i in indices.tolist()])


def _decode(path, wanted, threads, seek):
    """{index: frame} for the wanted indices; None when seeking cannot number frames reliably."""
    first, last = min(wanted), max(wanted)
    found = {}
    container = _open(path)
    try:
        with _as_video_error("decode failed"):
            stream = container.streams.video[0]
            if threads != 1:
                stream.thread_type = "AUTO"  # frame + slice threading inside FFmpeg
                stream.thread_count = max(0, int(threads))
            if seek:
                fps, base = _fps(stream), stream.time_base
                if not fps or base is None:
                    return None
                start = stream.start_time or 0
                # Timestamp of the first wanted frame; the seek lands on the keyframe at or before it.
                container.seek(start + int(first / fps / base), stream=stream, backward=True)
                number = lambda frame: round(float((frame.pts - start) * base) * fps)
            else:
                counter = iter(range(1 << 62))
                number = lambda frame: next(counter)
            for frame in container.decode(stream):
                if seek and frame.pts is None:
                    return None
                i = number(frame)
                if seek and not found and i > first:
                    return None  # landed past the first wanted frame: timestamps are off
                if i in wanted:
                    found[i] = frame.to_ndarray(format="rgb24")
                if i >= last:
                    break
    finally:
        container.close()
    return found


def load_clips(path, rng, *, frames_per_clip, frame_step, duration=0.0, num_clips=1,
               random_clip_sampling=True, allow_overlap=False, threads=0, seek=True, sample_fps=0):
    """Decode `num_clips` clips of a video: uint8 [num_clips, T, H, W, 3]; raises VideoError."""
    n, fps = count_frames(path)
    if n < 1:
        raise VideoError("no frames")
    step = frame_step_for(frames_per_clip, frame_step, duration, fps, sample_fps)
    indices = clip_indices(n, frames_per_clip=frames_per_clip, frame_step=step,
                           num_clips=num_clips, rng=rng,
                           random_clip_sampling=random_clip_sampling, allow_overlap=allow_overlap)
    try:
        frames = decode_frames(path, indices, threads=threads, seek=seek)
    except VideoError as e:
        # The header overstated the frame count (truncated file): count by decoding, resample.
        n = _decoded_count(path)
        if n < 1:
            raise VideoError("no decodable frames") from e
        indices = clip_indices(n, frames_per_clip=frames_per_clip, frame_step=step,
                               num_clips=num_clips, rng=rng,
                               random_clip_sampling=random_clip_sampling,
                               allow_overlap=allow_overlap)
        frames = decode_frames(path, indices, threads=threads, seek=seek)
    return frames.reshape(num_clips, frames_per_clip, *frames.shape[1:])


def _decoded_count(path):
    container = _open(path)
    count = 0
    try:
        for _ in container.decode(container.streams.video[0]):
            count += 1
    except Exception as e:  # frames up to the first error count; a corrupt tail is tolerated
        _log.warning("%s: decoding stopped after %d frames (%s: %s); using those", path, count,
                     type(e).__name__, e)
    finally:
        container.close()
    return count
