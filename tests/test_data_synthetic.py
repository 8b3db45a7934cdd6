"""Generated demo videos: determinism, shapes, labels that carry motion, and mp4 writing."""
import os

import av
import numpy as np
import pytest

from vjepa_jax.data import synthetic
from vjepa_jax.data.synthetic import SyntheticVideos, write_dataset, write_mp4

# Unit vector (x right, y down) of each motion direction, in the order of synthetic.DIRECTIONS.
_DIRECTION_VECTORS = {"right": (1, 0), "down": (0, 1), "left": (-1, 0), "up": (0, -1)}


def test_shapes_dtype_and_label_range():
    ds = SyntheticVideos(50, 24, 32, 48, seed=0)
    assert len(ds) == 50
    labels = []
    for i in range(len(ds)):
        item = ds[i]
        assert item["video"].shape == (24, 32, 48, 3)
        assert item["video"].dtype == np.uint8
        assert item["label"].dtype == np.int32
        labels.append(int(item["label"]))
    assert ds.num_classes == len(synthetic.SHAPES) * len(synthetic.DIRECTIONS) == 16
    assert min(labels) >= 0 and max(labels) < ds.num_classes
    assert len(set(labels)) >= 10  # 50 draws of 16 classes cover most of them


def test_deterministic_per_index_and_seed():
    a = SyntheticVideos(10, 16, 32, 32, seed=7)
    b = SyntheticVideos(10, 16, 32, 32, seed=7)
    # Same item regardless of access order or instance.
    for i in (3, 0, 9, 3):
        np.testing.assert_array_equal(a[i]["video"], b[i]["video"])
        assert a[i]["label"] == b[i]["label"]
    assert not np.array_equal(a[3]["video"], a[4]["video"])
    c = SyntheticVideos(10, 16, 32, 32, seed=8)
    assert not np.array_equal(a[3]["video"], c[3]["video"])
    np.testing.assert_array_equal(a[-1]["video"], a[9]["video"])


def test_index_and_argument_errors():
    ds = SyntheticVideos(4, 8, 16, 16)
    with pytest.raises(IndexError):
        ds[4]
    with pytest.raises(ValueError, match="num_frames"):
        SyntheticVideos(4, 0, 16, 16)
    with pytest.raises(ValueError, match="label"):
        synthetic.describe(16)


def test_label_factors_name_the_shape_and_direction_of_every_class():
    labels = np.arange(synthetic.NUM_CLASSES)
    parts = synthetic.label_factors(labels)
    for label, shape, direction in zip(labels, parts["shape"], parts["direction"]):
        assert synthetic.describe(int(label)) == (
            f"{synthetic.SHAPES[shape]} moving {synthetic.DIRECTIONS[direction]}")


def test_frames_change_over_time():
    item = SyntheticVideos(1, 16, 32, 32, seed=1)[0]
    v = item["video"].astype(np.int32)
    assert np.abs(v[-1] - v[0]).mean() > 1.0  # something moves
    assert v.std() > 10  # not a flat colour


def _moving_centroid(video, t):
    """Centroid (x, y) of the pixels that differ from frame 0 at frame t."""
    diff = np.abs(video[t].astype(np.int32) - video[0].astype(np.int32)).sum(-1)
    ys, xs = np.nonzero(diff > 30)
    return np.array([xs.mean(), ys.mean()])


def test_label_direction_matches_visible_motion():
    # The background is static, so the changed region drifts the way the shape moves.
    ds = SyntheticVideos(60, 16, 32, 32, seed=3)
    agree = 0
    for i in range(len(ds)):
        item = ds[i]
        name = synthetic.describe(int(item["label"])).split(" moving ")[1]
        expected = np.array(_DIRECTION_VECTORS[name], np.float64)
        shift = _moving_centroid(item["video"], 15) - _moving_centroid(item["video"], 8)
        agree += shift @ expected > 0.7 * np.linalg.norm(shift)
    assert agree >= 57  # measured 200/200 at seed 3; allow a few ambiguous clips


def test_write_mp4_and_dataset_roundtrip(tmp_path):
    csv_path = write_dataset(tmp_path / "vids", 3, num_frames=12, height=32, width=32, seed=5)
    lines = open(csv_path).read().splitlines()
    assert len(lines) == 3
    ref = SyntheticVideos(3, 12, 32, 32, seed=5)
    for i, line in enumerate(lines):
        path, label = line.rsplit(" ", 1)
        assert os.path.isabs(path) and os.path.exists(path)
        assert int(label) == int(ref[i]["label"])
        with av.open(path) as container:
            frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
        assert frames.shape == (12, 32, 32, 3)
        # Lossy codec: close to the generated frames, not identical.
        assert np.abs(frames.astype(np.int32) - ref[i]["video"]).mean() < 8


def test_write_mp4_rejects_bad_frames(tmp_path):
    with pytest.raises(ValueError, match="uint8"):
        write_mp4(tmp_path / "a.mp4", np.zeros((4, 16, 16, 3), np.float32))
    with pytest.raises(ValueError, match="even"):
        write_mp4(tmp_path / "b.mp4", np.zeros((4, 15, 16, 3), np.uint8))

