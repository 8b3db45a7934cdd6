"""Labelled data for frozen evaluation: video CSVs, generated videos, TFDS and ImageFolder images.

Every source maps an entry number to (clips uint8 [segments, T, H, W, 3], label), images being
one segment of one frame, and raises video_lib.VideoError for an unusable entry (the pipeline
skips it). Batches reaching the device are uint8 [B, segments, views, T, S, S, 3] plus int32
labels; the device repeats image frames to the clip length (models/probe.py: as_clips).

Train examples (VJEPA_SPEC §7.3, §7.4, simplified): every segment gets its own random resized
crop (scale data.train_scale, ratio data.train_ratio), images also a horizontal flip; RandAugment
and random erasing of the reference are not applied. Validation uses the data pipeline's eval
views: 3 spatial crops after a short-side resize, or one centre crop after resizing to S*256/224.
"""
import logging

import grain
import numpy as np

from vjepa_jax.data import imagefolder
from vjepa_jax.data import index as index_lib
from vjepa_jax.data import pipeline
from vjepa_jax.data import synthetic
from vjepa_jax.data import transforms

_log = logging.getLogger(__name__)

def check_labels(labels, num_classes, where, require_all=False):
    """Raise ValueError when a label is outside [0, num_classes) or (require_all) a class is absent."""
    labels = np.asarray(labels).reshape(-1)
    if labels.size == 0:
        raise ValueError(f"{where}: no labelled entries")
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if bad.size:
        raise ValueError(f"{where}: {bad.size} labels outside [0, {num_classes}) "
                         f"(data.num_classes={num_classes}), e.g. entry {int(bad[0])} has label "
                         f"{int(labels[bad[0]])}")
    present = np.unique(labels).size
    if require_all and present != num_classes:
        raise ValueError(f"{where}: labels cover {present} of data.num_classes={num_classes} "
                         "classes; set data.require_all_classes=False for a subset")
    if present != num_classes:
        _log.warning("%s: labels cover %d of %d classes", where, present, num_classes)
    return present


# ----------------------------------------------------------------------------- image sources
# ----------------------------------------------------------------------------- image sources
def tfds_images(name, split, data_dir="", num_classes=0):
    """A TFDS image-classification split (data/tfds.py, no TensorFlow): single-frame clips."""
    from vjepa_jax.data import tfds as tfds_lib

    try:
        source = tfds_lib.TfdsClips(name, split, data_dir=data_dir, frames_per_clip=1,
                                    frame_step=1, num_clips=1)
    except Exception as e:  # tfds raises many types for a missing or unprepared dataset
        raise ValueError(f"TFDS dataset {name!r} split {split!r} (data.tfds_data_dir="
                         f"{data_dir!r}) cannot be opened: {type(e).__name__}: {e}. Prepare it "
                         "with `tfds build` (ArrayRecord format) or use data.source='imagefolder'."
                         ) from e
    info = getattr(source._data(), "dataset_info", None)
    label = info.features["label"] if info is not None and "label" in info.features else None
    found = getattr(label, "num_classes", None)
    if num_classes and found is not None and found != num_classes:
        raise ValueError(f"TFDS {name!r} has {found} classes, config data.num_classes={num_classes}")
    return source


# ----------------------------------------------------------------------------- sources by config
def label_factors(config):
    """Function splitting class ids into named parts scored on their own, or None.

    Generated videos: shape and motion direction, so the eval reports which half of the label
    an encoder gets right.
    """
    return synthetic.label_factors if config.data.source == "synthetic" else None


def make_source(config, train):
    """The labelled source of the train or validation split named by config.data."""
    d = config.data
    split = "train" if train else "val"
    if d.source == "csv":
        files = list(d.train_index if train else d.val_index)
        if not files:
            raise ValueError(f"data.{split}_index: no index file given for data.source='csv'")
        idx = index_lib.read_index(files)
        check_labels(idx.labels, d.num_classes, f"data.{split}_index {files}",
                     require_all=train and d.require_all_classes)
        # Evals sample overlapping, evenly shifted clips in short videos (VJEPA_SPEC §5.2).
        return pipeline.VideoFileClips(idx, frames_per_clip=config.model.num_frames,
                                       frame_step=d.frame_step, duration=d.duration,
                                       num_clips=d.num_segments, allow_overlap=True)
    if d.source == "synthetic":
        size = d.synthetic_train_size if train else d.synthetic_val_size
        # Distinct seeds: validation videos are never the probe's training videos.
        return pipeline.SyntheticClips(size, frames_per_clip=config.model.num_frames,
                                       num_clips=d.num_segments, size=config.model.crop_size,
                                       seed=d.synthetic_seed + (0 if train else 1))
    if d.source == "tfds":
        return tfds_images(d.tfds_name, d.train_split if train else d.val_split, d.tfds_data_dir,
                           d.num_classes)
    if d.source == "imagefolder":
        source = imagefolder.ImageFolder(d.root, d.train_split if train else d.val_split,
                                         d.num_classes, d.train_subset if train else "")
        check_labels(source.labels, d.num_classes, f"{d.root}/{split}")
        return source
    raise ValueError(f"data.source={d.source!r}: expected 'csv', 'synthetic', 'tfds' or "
                     "'imagefolder'")


def is_image_source(config):
    """Image datasets come as single frames; the device repeats them to a clip."""
    return config.data.source in ("tfds", "imagefolder")


# ----------------------------------------------------------------------------- train examples
class TrainExample:
    """Grain random_map: entry -> {'video': uint8 [segments, 1, T, S, S, 3], 'label', 'skipped'}."""

    def __init__(self, source, size, scale, ratio, hflip):
        self.source = source
        self.size = size
        self.scale = tuple(scale)
        self.ratio = tuple(ratio)
        self.hflip = hflip

    def __call__(self, entry, rng):
        clips, label, skipped = pipeline.load_skipping_unusable(self.source, int(entry), rng)
        views = []
        for clip in clips:
            clip = transforms.random_resized_crop(clip, rng, self.size, self.scale, self.ratio)
            if self.hflip and rng.uniform() < 0.5:
                clip = clip[:, :, ::-1]
            views.append(np.ascontiguousarray(clip)[None])
        return {"video": np.stack(views), "label": np.int32(label), "skipped": np.int32(skipped)}


def make_train_dataset(config, source, *, process_index=0, process_count=1):
    """Infinite IterDataset of LOCAL train batches, reshuffled every epoch, resumable by Grain.

    Hosts take whole batches of the global order, like the pretraining pipeline, so any process
    count sees the same global batches.
    """
    d = config.data
    if d.batch_size % process_count:
        raise ValueError(f"data.batch_size={d.batch_size} is not divisible by the process count "
                         f"{process_count}")
    ds = grain.MapDataset.range(len(source)).seed(config.seed).shuffle().repeat()
    ds = ds.random_map(TrainExample(source, config.model.crop_size, d.train_scale, d.train_ratio,
                                    d.train_hflip))
    return pipeline.batched(ds, d.batch_size // process_count, process_index, process_count,
                            num_workers=d.num_workers, prefetch=d.prefetch)


def make_val_dataset(config, source, *, process_index=0, process_count=1):
    """One pass over the validation split in index order, LOCAL batches padded with valid=0."""
    d = config.data
    return pipeline.eval_dataset(
        source, frames=1 if is_image_source(config) else config.model.num_frames,
        size=config.model.crop_size, num_clips=d.num_segments, num_views=d.num_views,
        batch_size=d.val_batch_size or d.batch_size, seed=config.seed, num_workers=d.num_workers,
        prefetch=d.prefetch, process_index=process_index, process_count=process_count)
