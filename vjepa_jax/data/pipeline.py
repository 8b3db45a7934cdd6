"""Grain input pipeline: index -> shuffle -> repeat -> decode+sample+augment -> batch -> host slice.

Batches are LOCAL to this process and stay uint8 until the device:
  train: {'video': uint8 [B_local, T, S, S, 3], 'label': int32 [B_local],
          'skipped': int32 [B_local], 'source': int32 [B_local] (which index file; 0 for one)}
  eval:  {'video': uint8 [B_local, segments, views, T, S, S, 3], 'label', 'skipped',
          'valid': int32 [B_local]} (padding examples have valid 0, so every host gets as many
          batches of the same shape).
Unusable videos are skipped: the next entry of the same index file is taken instead (fixed order,
so runs are reproducible), `skipped` is 1 where an example's own index entry was unusable (so
one pass counts each bad file once; docs/DATA.md), and the path and reason are logged with
`logging.warning`. SkipCounts adds them up per source (index file) for the train loop.
"""
import logging
import math

import grain
import numpy as np

from vjepa_jax.data import imagefolder
from vjepa_jax.data import index as index_lib
from vjepa_jax.data import mixture
from vjepa_jax.data import transforms
from vjepa_jax.data import video as video_lib
from vjepa_jax.data.synthetic import SyntheticVideos

_log = logging.getLogger(__name__)

MAX_CONSECUTIVE_SKIPS = 64  # more unusable videos in a row than this means a broken dataset
MIN_VIDEOS_FOR_SKIP_CHECK = 1000  # too few videos for a meaningful fraction before this


class TooManySkippedVideos(ValueError):
    """More than data.max_skip_fraction of the index entries were unusable."""


def check_skip_fraction(total_skipped, total_seen, limit, *, min_videos=MIN_VIDEOS_FOR_SKIP_CHECK,
                        source=None):
    """Raise TooManySkippedVideos when total_skipped / total_seen > limit (after min_videos).

    total_seen: examples drawn; total_skipped: how many of them drew an unusable entry (the
    `skipped` field of the batches, load_skipping_unusable). Each pass over the index draws every
    entry once, so this is the fraction of distinct index entries that are unusable, however
    the bad ones cluster (docs/DATA.md, "Unusable videos"). `source` (an index file) is named
    in the error when the counts are that source's alone.
    """
    seen = int(total_seen)
    if seen < min_videos or seen == 0:
        return
    fraction = total_skipped / seen
    if fraction > limit:
        where = f"index file {source}: " if source is not None else ""
        raise TooManySkippedVideos(
            f"{where}{int(total_skipped)} of {seen} index entries drawn ({fraction:.2%}) were "
            f"unusable, more than data.max_skip_fraction={limit}; the warnings above name each "
            "file and reason. Run `python -m vjepa_jax.data.check INDEX...` to list every problem.")


class SkipCounts:
    """Examples drawn and unusable entries among them, in total and per source (index file).

    `add(batch)` counts a train batch by its 'skipped' and 'source' fields; `check(limit)` applies
    check_skip_fraction to the total and, in a mixture, to each source on its own (so a small
    source that is mostly missing stops the run even while the total looks fine); `metrics()`
    gives `bad_videos` and, in a mixture, `bad_videos/<name>` and `seen_videos/<name>`.
    """

    def __init__(self, sources):
        self.sources = tuple(str(s) for s in sources)
        self.names = mixture.source_names(self.sources)
        self.seen = np.zeros(len(self.sources), np.int64)
        self.bad = np.zeros(len(self.sources), np.int64)

    def add(self, batch):
        source = np.asarray(batch.get("source", np.zeros_like(batch["skipped"])), np.int64)
        self.seen += np.bincount(source, minlength=len(self.sources))
        self.bad += np.bincount(source, weights=batch["skipped"],
                                minlength=len(self.sources)).astype(np.int64)

    def check(self, limit, *, min_videos=MIN_VIDEOS_FOR_SKIP_CHECK):
        check_skip_fraction(self.bad.sum(), self.seen.sum(), limit, min_videos=min_videos)
        if len(self.sources) > 1:
            for source, bad, seen in zip(self.sources, self.bad, self.seen):
                check_skip_fraction(bad, seen, limit, min_videos=min_videos, source=source)

    def metrics(self):
        out = {"bad_videos": int(self.bad.sum())}
        if len(self.sources) > 1:
            for name, bad, seen in zip(self.names, self.bad, self.seen):
                out[f"bad_videos/{name}"] = int(bad)
                out[f"seen_videos/{name}"] = int(seen)
        return out

    def summary(self):
        """One line: per source, unusable of drawn (e.g. for the log at the end of a run)."""
        parts = [f"{name} {bad} of {seen}" + (f" ({bad / seen:.2%})" if seen else "")
                 for name, bad, seen in zip(self.names, self.bad, self.seen)]
        return "unusable videos drawn, per source: " + ", ".join(parts)


def source_labels(config):
    """What SkipCounts calls the sources of make_dataset(config): the index files for 'csv'
    (in order: batch field 'source' d is data.index[d]), else the one source's kind."""
    d = config.data
    if d.source == "csv":
        return (d.index,) if isinstance(d.index, str) else tuple(d.index)
    return (d.source,)


# ----------------------------------------------------------------------------- clip sources
# A clip source maps an entry number to (clips uint8 [num_clips, T, H, W, 3], label) and raises
# video_lib.VideoError for an unusable entry. `ranges` lists the [start, stop) entry ranges of its
# parts (index files), which is where a skipped entry's replacement is taken from.

class VideoFileClips:
    """Clips decoded from the video files of an index (CSV / npy)."""

    def __init__(self, video_index, *, frames_per_clip, frame_step, duration, num_clips,
                 allow_overlap, threads=0, seek=True, sample_fps=0):
        self.paths = video_index.paths
        self.labels = video_index.labels
        self.ranges = [video_index.file_range(d) for d in range(len(video_index.files))]
        self.weights = video_index.weights
        self.kwargs = dict(frames_per_clip=frames_per_clip, frame_step=frame_step,
                           duration=duration, num_clips=num_clips, allow_overlap=allow_overlap,
                           threads=threads, seek=seek, sample_fps=sample_fps)

    def __len__(self):
        return len(self.paths)

    def name(self, i):
        return self.paths[i]

    def load(self, i, rng):
        return video_lib.load_clips(self.paths[i], rng, **self.kwargs), int(self.labels[i])


class SyntheticClips:
    """Generated clips (no files): each video is num_clips * T frames at the crop size."""

    def __init__(self, num_videos, *, frames_per_clip, num_clips, size, seed):
        self.videos = SyntheticVideos(num_videos, frames_per_clip * num_clips, size, size, seed)
        self.num_clips = num_clips
        self.ranges = [(0, num_videos)]
        self.weights = ()

    def __len__(self):
        return len(self.videos)

    def name(self, i):
        return f"synthetic[{i}]"

    def load(self, i, rng):
        item = self.videos[i]
        v = item["video"]
        return v.reshape(self.num_clips, -1, *v.shape[1:]), int(item["label"])


# ----------------------------------------------------------------------------- per-example map
def load_skipping_unusable(source, entry, rng, start=0, stop=None):
    """source.load(entry, rng) -> (clips, label, 1 if `entry` itself was unusable else 0).

    An unusable entry (video_lib.VideoError) is logged with its name and reason and replaced by
    the next entry in [start, stop) (wrapping round), so a weighted index file keeps its share.
    Only the entry itself counts: a bad replacement is counted (and warned about) when it is
    drawn as an entry of its own, so a run of bad entries counts each file once per pass, not
    once per example that walked over it. MAX_CONSECUTIVE_SKIPS failures in a row (or the whole
    range) raise TooManySkippedVideos.
    """
    stop = len(source) if stop is None else stop
    i, skipped = entry, 0
    while True:
        try:
            clips, label = source.load(i, rng)
            return clips, label, int(skipped > 0)
        except video_lib.VideoError as e:
            (_log.warning if i == entry else _log.debug)("skipping unusable video %s: %s",
                                                         source.name(i), e)
            skipped += 1
            if skipped >= min(MAX_CONSECUTIVE_SKIPS, stop - start):
                raise TooManySkippedVideos(
                    f"{skipped} unusable videos in a row starting at {source.name(entry)}; "
                    f"last: {source.name(i)}: {e}") from e
            i = start + (i - start + 1) % (stop - start)


class LoadExample:
    """Grain random_map: entry number -> augmented example dict; skips unusable entries."""

    def __init__(self, source, *, train, frames, size, scale, ratio, hflip, num_clips, num_views):
        self.source = source
        self.train = train
        self.frames = frames
        self.size = size
        self.scale = tuple(scale)
        self.ratio = tuple(ratio)
        self.hflip = hflip
        self.num_clips = num_clips
        self.num_views = num_views
        self._range_of = np.zeros(len(source), np.int32)
        for d, (start, stop) in enumerate(source.ranges):
            self._range_of[start:stop] = d

    def __call__(self, entry, rng):
        entry = int(entry)
        if entry < 0:  # eval padding
            return self._padding()
        start, stop = self.source.ranges[self._range_of[entry]]
        clips, label, skipped = load_skipping_unusable(self.source, entry, rng, start, stop)
        if self.train:
            video = transforms.pretrain_transform(clips[0], rng, self.size, self.scale,
                                                  self.ratio, self.hflip)
            return {"video": video, "label": np.int32(label), "skipped": np.int32(skipped),
                    "source": np.int32(self._range_of[entry])}
        video = np.stack([transforms.eval_views(c, self.size, self.num_views) for c in clips])
        return {"video": video, "label": np.int32(label), "skipped": np.int32(skipped),
                "valid": np.int32(1)}

    def _padding(self):
        shape = (self.num_clips, self.num_views, self.frames, self.size, self.size, 3)
        return {"video": np.zeros(shape, np.uint8), "label": np.int32(0),
                "skipped": np.int32(0), "valid": np.int32(0)}


# ----------------------------------------------------------------------------- assembly
def make_source(config, *, train=True):
    """The clip source named by config.data.source ('csv' | 'synthetic' | 'tfds' | 'imagefolder')."""
    d = config.data
    num_clips = int(d.num_clips)
    if d.source == "csv":
        # FFmpeg threads only help when no worker processes already use the cores.
        threads = int(d.decode_threads) or (1 if d.num_workers > 0 else 0)
        return VideoFileClips(index_lib.read_index(d.index, d.weights),
                              frames_per_clip=config.model.num_frames, frame_step=d.frame_step,
                              duration=d.duration, num_clips=num_clips, allow_overlap=not train,
                              threads=threads, seek=bool(d.seek), sample_fps=d.fps)
    if d.source == "synthetic":
        return SyntheticClips(d.synthetic_size, frames_per_clip=config.model.num_frames,
                              num_clips=num_clips, size=config.model.crop_size, seed=config.seed)
    if d.source == "tfds":
        from vjepa_jax.data import tfds as tfds_lib

        return tfds_lib.TfdsClips(d.tfds_name, d.tfds_split, data_dir=d.tfds_data_dir,
                                  frames_per_clip=config.model.num_frames,
                                  frame_step=d.frame_step, num_clips=num_clips,
                                  allow_overlap=not train,
                                  video_key=d.tfds_video_key, label_key=d.tfds_label_key)
    if d.source == "imagefolder":  # images: one-frame clips (config.model.num_frames == 1)
        return imagefolder.ImageFolder(d.root, d.split)
    raise ValueError(f"config.data.source={d.source!r}: expected 'csv', 'synthetic', 'tfds' or "
                     "'imagefolder'")


def example_loader(config, source):
    """The pretraining per-example function (entry number, rng) -> example dict."""
    d = config.data
    return LoadExample(source, train=True, frames=int(config.model.num_frames),
                       size=int(config.model.crop_size), scale=d.random_resize_scale,
                       ratio=d.random_resize_aspect_ratio, hflip=bool(d.hflip),
                       num_clips=int(d.num_clips), num_views=1)


def _shuffled_entries(source, seed):
    """Infinite MapDataset of entry numbers: reshuffled every epoch, weighted across parts."""
    if not source.weights:
        return grain.MapDataset.range(len(source)).seed(seed).shuffle().repeat()
    # A weighted mixture: file d gets the share w_d / sum(w) (per-sample weight w_d / n_d).
    return mixture.entries(source.ranges, source.weights, seed)


def _check_hosts(batch_size, process_index, process_count, key):
    if batch_size % process_count:
        raise ValueError(f"config.{key}={batch_size} is not divisible by the process count "
                         f"{process_count}")
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index={process_index} outside [0, {process_count})")


def make_dataset(config, *, process_index=0, process_count=1, source=None):
    """Pretraining: infinite grain.IterDataset of this host's LOCAL train batches (see above)."""
    d = config.data
    _check_hosts(d.batch_size, process_index, process_count, "data.batch_size")
    if d.num_clips != 1:
        raise ValueError(f"config.data.num_clips={d.num_clips}: pretraining supports 1 clip "
                         "per video")
    source = make_source(config) if source is None else source
    # random_map before the host slice: each example's randomness depends on its global position.
    ds = _shuffled_entries(source, config.seed).random_map(example_loader(config, source))
    return batched(ds, d.batch_size // process_count, process_index, process_count,
                   num_workers=d.num_workers, prefetch=d.prefetch, read_threads=d.read_threads)


def eval_dataset(source, *, frames, size, num_clips, num_views, batch_size, seed, num_workers,
                 prefetch, read_threads=0, process_index=0, process_count=1):
    """One pass over `source` in index order: this host's LOCAL eval batches, padded (valid=0)
    so every host gets the same number of full batches of `batch_size` (global) examples."""
    _check_hosts(batch_size, process_index, process_count, "data.batch_size")
    load = LoadExample(source, train=False, frames=frames, size=size, scale=(1.0, 1.0),
                       ratio=(1.0, 1.0), hflip=False, num_clips=num_clips, num_views=num_views)
    total = math.ceil(len(source) / batch_size) * batch_size
    ds = grain.MapDataset.range(total).map(_PadTo(len(source))).seed(seed).random_map(load)
    return batched(ds, batch_size // process_count, process_index, process_count,
                   num_workers=num_workers, prefetch=prefetch, read_threads=read_threads)


def batched(ds, local_batch, process_index, process_count, *, num_workers, prefetch,
            read_threads=0):
    """MapDataset of examples (in global order) -> this host's IterDataset of LOCAL batches.

    num_workers worker processes (0: in this process), `prefetch` batches read ahead,
    read_threads Grain read threads (0: one with workers, four without).
    """
    # Batch before the workers: whole batches are the unit of work, so batches are the same for
    # any number of workers (0 in a notebook, 16 on a GPU host).
    ds = ds.batch(local_batch, drop_remainder=True)
    # Host p takes local batch p of every P: the rows its devices hold of the global batch, so
    # any process count forms the same global batches (and masks pair with the same examples).
    ds = ds[process_index::process_count]
    # Grain's defaults (16 threads, 500 elements read ahead) would hold 500 batches; read ahead
    # `prefetch` batches, with threads only where there are no worker processes.
    threads = int(read_threads) or (1 if num_workers > 0 else 4)
    # Grain warns (and may later refuse) when fewer batches are buffered than threads read.
    ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=threads,
                                              prefetch_buffer_size=max(threads, int(prefetch))))
    if num_workers > 0:
        _ensure_flags_parsed()
        ds = ds.mp_prefetch(grain.MultiprocessingOptions(
            num_workers=int(num_workers), per_worker_buffer_size=max(1, int(prefetch))))
    return ds


def _ensure_flags_parsed():
    # Grain's worker processes read absl flags; outside an absl app (notebooks, pytest) nothing
    # has parsed them, so accept the defaults as the reference Grain examples do.
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


class _PadTo:
    """Entry numbers >= n become -1 (padding)."""

    def __init__(self, n):
        self.n = n

    def __call__(self, i):
        return i if i < self.n else -1
