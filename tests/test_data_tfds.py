"""TFDS datasets through tfds.data_source feed make_dataset (mocked: no download, no TensorFlow)."""
import numpy as np
import pytest

from vjepa_jax.config import base_config
from vjepa_jax.data import pipeline

tfds = pytest.importorskip("tensorflow_datasets")


def _config():
    c = base_config()
    c.model.num_frames = 4
    c.model.crop_size = 16
    c.data.update(source="tfds", tfds_name="mnist", tfds_split="train", batch_size=4,
                  num_workers=0, frame_step=2)
    return c


def test_image_dataset_becomes_still_rgb_clips():
    with tfds.testing.mock_data(num_examples=20):
        batch = next(iter(pipeline.make_dataset(_config())))
    video = batch["video"]
    assert video.shape == (4, 4, 16, 16, 3) and video.dtype == np.uint8
    np.testing.assert_array_equal(video[:, 1:], video[:, :1].repeat(3, axis=1))  # still image
    np.testing.assert_array_equal(video[..., 1:], video[..., :1].repeat(2, axis=-1))  # grey
    assert batch["label"].min() >= 0 and batch["label"].max() < 10


def test_video_records_are_sampled_like_video_files():
    # TFDS Video features need TensorFlow to construct, so a video dataset name cannot be
    # mocked here; instead the mnist builder serves video records through as_data_source_fn.
    def video_records(builder, split, *args, **kwargs):
        return [{"video": np.full((30, 20, 24, 3), i, np.uint8)
                 + np.arange(30, dtype=np.uint8)[:, None, None, None] * 8,
                 "label": i} for i in range(12)]

    with tfds.testing.mock_data(as_data_source_fn=video_records):
        batch = next(iter(pipeline.make_dataset(_config())))
    video = batch["video"].astype(np.int32)
    assert video.shape == (4, 4, 16, 16, 3)
    # Constant frames survive the crop exactly: pixel = label + 8 * frame number.
    frame = (video[:, :, 0, 0, 0] - batch["label"][:, None]) // 8
    # 30 frames, clip of 4 x 2 = 8 frames: linspace(start, start + 8, 4) -> +0, +2, +5, +7.
    np.testing.assert_array_equal(frame - frame[:, :1], [[0, 2, 5, 7]] * 4)
    assert np.all((frame[:, 0] >= 0) & (frame[:, 0] <= 21))  # end ~ randint(8, 30)
