"""Any TFDS dataset as a clip source, through `tfds.data_source` (ArrayRecord, random access).

Video records (`[N, H, W, C]` frames) are sampled with the same clip indices as video files;
image records (`[H, W, C]`) become clips by repeating the image `frames_per_clip` times, as the
reference image evaluation does (VJEPA_SPEC §7.4), so every batch is `[B, T, S, S, 3]`. Grey
images/videos are repeated to 3 channels.

Note: image datasets (mnist, imagenet2012, ...) read without TensorFlow. TFDS video features
(`tfds.features.Video`, e.g. ucf101) call TensorFlow when the dataset info is loaded, so video
datasets need `tensorflow` installed (not in requirements.txt) until TFDS changes that.
"""
import numpy as np

from vjepa_jax.data import video as video_lib


class TfdsClips:
    """Clip source over `tfds.data_source(name, split=split)`; picklable for Grain workers."""

    def __init__(self, name, split="train", *, data_dir="", frames_per_clip, frame_step,
                 num_clips=1, allow_overlap=False, video_key="", label_key="label"):
        if not name:
            raise ValueError("config.data.tfds_name is empty: name a TFDS dataset, e.g. 'mnist'")
        self.dataset_name, self.split, self.data_dir = name, split, data_dir or None
        self.frames_per_clip, self.frame_step = int(frames_per_clip), int(frame_step)
        self.num_clips, self.allow_overlap = int(num_clips), bool(allow_overlap)
        self.video_key, self.label_key = video_key, label_key
        self._source = None
        self._length = len(self._data())
        self.ranges = [(0, self._length)]
        self.weights = ()

    def _data(self):
        if self._source is None:  # opened lazily: worker processes reopen after unpickling
            import tensorflow_datasets as tfds

            self._source = tfds.data_source(self.dataset_name, split=self.split,
                                            data_dir=self.data_dir)
        return self._source

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_source"] = None
        return state

    def __len__(self):
        return self._length

    def name(self, i):
        return f"tfds:{self.dataset_name}/{self.split}[{i}]"

    def _key(self, record):
        if self.video_key:
            return self.video_key
        for key in ("video", "image"):
            if key in record:
                return key
        raise ValueError(f"{self.name(0)}: no 'video' or 'image' feature in {sorted(record)}; "
                         "set config.data.tfds_video_key")

    def load(self, i, rng):
        """(clips uint8 [num_clips, T, H, W, 3], label) of record i."""
        try:
            record = self._data()[i]
        except Exception as e:  # a damaged shard shows up as an unusable example
            raise video_lib.VideoError(f"cannot read record: {type(e).__name__}: {e}") from e
        frames = np.asarray(record[self._key(record)])
        label = int(record[self.label_key]) if self.label_key in record else 0
        if frames.dtype != np.uint8:
            raise video_lib.VideoError(f"expected uint8 pixels, got {frames.dtype}")
        if frames.ndim == 3:  # image -> a still clip
            clips = np.broadcast_to(frames, (self.num_clips, self.frames_per_clip, *frames.shape))
        elif frames.ndim == 4:
            if len(frames) < 1:
                raise video_lib.VideoError("no frames")
            idx = video_lib.clip_indices(len(frames), frames_per_clip=self.frames_per_clip,
                                         frame_step=self.frame_step, num_clips=self.num_clips,
                                         rng=rng, allow_overlap=self.allow_overlap)
            clips = frames[idx]
        else:
            raise video_lib.VideoError(f"pixels of shape {frames.shape}, expected [H,W,C] or "
                                       "[N,H,W,C]")
        if clips.shape[-1] == 1:
            clips = np.broadcast_to(clips, (*clips.shape[:-1], 3))
        if clips.shape[-1] != 3:
            raise video_lib.VideoError(f"{clips.shape[-1]} channels, expected 1 or 3")
        return np.ascontiguousarray(clips), label
