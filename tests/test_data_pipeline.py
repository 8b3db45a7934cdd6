"""Grain pipeline on real mp4 files: batch shapes, skipped videos, resume, host slicing, eval."""
import logging

import numpy as np
import pytest

from vjepa_jax.config import base_config
from vjepa_jax.data import pipeline
from vjepa_jax.data.synthetic import write_dataset

NUM_GOOD = 8


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """8 good 24-frame 32x32 mp4s labelled 0..7, plus a CSV with corrupt/empty/missing files."""
    root = tmp_path_factory.mktemp("videos")
    csv = write_dataset(root / "good", NUM_GOOD, num_frames=24, height=32, width=32, seed=1)
    good = open(csv).read().splitlines()
    # Unique labels make every example identifiable.
    lines = [f"{line.rsplit(' ', 1)[0]} {i}" for i, line in enumerate(good)]
    clean = root / "clean.csv"
    clean.write_text("\n".join(lines) + "\n")
    corrupt = root / "corrupt.mp4"
    corrupt.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, np.uint8).tobytes())
    empty = root / "empty.mp4"
    empty.write_bytes(b"")
    bad = [f"{corrupt} 100", f"{empty} 101", f"{root / 'missing.mp4'} 102"]
    mixed = root / "mixed.csv"
    mixed.write_text("\n".join(lines[:3] + bad + lines[3:]) + "\n")
    return {"clean": str(clean), "mixed": str(mixed), "bad": bad}


def _config(csv, batch_size=4):
    c = base_config()
    c.seed = 3
    c.model.num_frames = 4
    c.model.crop_size = 16
    c.data.update(source="csv", index=(csv,), batch_size=batch_size, num_workers=0, frame_step=2)
    return c


def test_batches_have_local_shapes(videos):
    it = iter(pipeline.make_dataset(_config(videos["clean"]), process_index=0, process_count=2))
    batch = next(it)
    assert batch["video"].shape == (2, 4, 16, 16, 3) and batch["video"].dtype == np.uint8
    assert batch["label"].dtype == np.int32 and batch["label"].shape == (2,)
    assert batch["skipped"].tolist() == [0, 0]
    assert batch["source"].tolist() == [0, 0]  # one index file: source 0 (data.index[0])
    assert batch["video"].std() > 5  # real pixels, not padding


def test_unusable_videos_are_skipped_counted_and_logged(videos, caplog):
    it = iter(pipeline.make_dataset(_config(videos["mixed"])))
    with caplog.at_level(logging.WARNING):
        batches = [next(it) for _ in range(6)]  # 24 examples: over two epochs of 11 entries
    labels = np.concatenate([b["label"] for b in batches])
    skipped = np.concatenate([b["skipped"] for b in batches])
    assert set(labels.tolist()) <= set(range(NUM_GOOD))  # bad entries never come out
    # Each epoch visits the 3 bad entries once; a run of 3 bad entries can be passed over
    # several times (starting at each of them), so at least 3 skips per 11 examples.
    assert skipped.sum() >= 6
    text = caplog.text
    for reason in ("cannot open", "too small", "missing file"):
        assert reason in text
    assert "corrupt.mp4" in text and "empty.mp4" in text and "missing.mp4" in text


def test_check_skip_fraction():
    pipeline.check_skip_fraction(5, 995, 0.01)  # 0.5 %
    pipeline.check_skip_fraction(50, 50, 0.01)  # too few videos to judge yet
    with pytest.raises(pipeline.TooManySkippedVideos, match=r"20 of 1000 .*\(2\.00%\).*max_skip_fraction=0.01"):
        pipeline.check_skip_fraction(20, 1000, 0.01)  # 20 of 1000 examples drew a bad entry


def test_all_videos_unusable_raises(tmp_path):
    csv = tmp_path / "bad.csv"
    csv.write_text(f"{tmp_path / 'a.mp4'} 0\n{tmp_path / 'b.mp4'} 1\n")
    it = iter(pipeline.make_dataset(_config(str(csv), batch_size=2)))
    with pytest.raises(pipeline.TooManySkippedVideos, match="unusable videos in a row"):
        next(it)


def test_resume_from_state_gives_identical_next_batch(videos):
    config = _config(videos["mixed"])
    it = iter(pipeline.make_dataset(config))
    next(it), next(it)
    state = it.get_state()
    expected = next(it)
    fresh = iter(pipeline.make_dataset(config))
    fresh.set_state(state)
    got = next(fresh)
    for key in expected:
        np.testing.assert_array_equal(got[key], expected[key])


def test_two_hosts_see_disjoint_examples_of_one_global_order(videos):
    config = _config(videos["clean"], batch_size=4)
    seen = []
    for host in range(2):
        it = iter(pipeline.make_dataset(config, process_index=host, process_count=2))
        seen.append(np.concatenate([next(it)["label"] for _ in range(2)]).tolist())
    assert not set(seen[0]) & set(seen[1])
    assert sorted(seen[0] + seen[1]) == list(range(NUM_GOOD))  # one epoch between them
    # Host h takes local batch h of every 2: its rows of each global batch, in device order.
    single = iter(pipeline.make_dataset(_config(videos["clean"], batch_size=2)))
    order = np.concatenate([next(single)["label"] for _ in range(4)]).tolist()
    assert seen[0] == order[0:2] + order[4:6] and seen[1] == order[2:4] + order[6:8]


def test_batch_not_divisible_by_hosts(videos):
    with pytest.raises(ValueError, match="batch_size=4 is not divisible by the process count 3"):
        pipeline.make_dataset(_config(videos["clean"]), process_count=3)


def test_eval_batches_segments_views_and_padding(videos):
    config = _config(videos["clean"], batch_size=3)
    config.data.num_clips = 2
    source = pipeline.make_source(config, train=False)
    batches = list(pipeline.eval_dataset(source, frames=4, size=16, num_clips=2, num_views=3,
                                         batch_size=3, seed=config.seed, num_workers=0,
                                         prefetch=2))
    assert len(batches) == 3  # 8 videos padded to 9
    video = batches[0]["video"]
    assert video.shape == (3, 2, 3, 4, 16, 16, 3)
    valid = np.concatenate([b["valid"] for b in batches])
    assert valid.tolist() == [1] * 8 + [0]
    labels = np.concatenate([b["label"] for b in batches])
    assert labels[:8].tolist() == list(range(NUM_GOOD))  # index order
    assert not batches[-1]["video"][-1].any()


def test_synthetic_source(tmp_path):
    c = _config("unused")
    c.data.update(source="synthetic", synthetic_size=10, index=())
    batch = next(iter(pipeline.make_dataset(c)))
    assert batch["video"].shape == (4, 4, 16, 16, 3)
    assert batch["label"].max() < 16


class TwoFileSource:
    """In-memory clip source standing for two index files: entries 0-199 and 200-999.

    (Not smaller: Grain's index shuffle costs milliseconds per element on tiny ranges.)
    """
    ranges = [(0, 200), (200, 1000)]
    weights = (3.0, 1.0)

    def __len__(self):
        return 1000

    def name(self, i):
        return f"fake[{i}]"

    def load(self, i, rng):
        if i in (199, 201):
            raise pipeline.video_lib.VideoError("broken on purpose")
        return np.full((1, 4, 20, 20, 3), i % 256, np.uint8), i


def test_weighted_files_share_samples_by_weight_and_skip_within_file():
    c = _config("unused", batch_size=40)
    it = iter(pipeline.make_dataset(c, source=TwoFileSource()))
    batches = [next(it) for _ in range(20)]
    labels = np.concatenate([b["label"] for b in batches])
    skipped = np.concatenate([b["skipped"] for b in batches])
    assert abs((labels < 200).mean() - 0.75) < 0.02  # weights 3 : 1 between the files
    assert 199 not in labels and 201 not in labels
    # A broken entry is replaced by the next entry of its own file, wrapping around.
    assert np.all(skipped[labels == 0] <= 1) and np.all(skipped[labels == 202] <= 1)
    assert set(labels[skipped == 1].tolist()) <= {0, 202}
    assert skipped.sum() >= 1


@pytest.mark.slow
def test_worker_processes_give_the_same_batches_and_resume(videos):
    config = _config(videos["mixed"])
    plain = iter(pipeline.make_dataset(config))
    expected = [next(plain) for _ in range(4)]
    config.data.num_workers = 2
    it = iter(pipeline.make_dataset(config))
    for want in expected[:2]:
        np.testing.assert_array_equal(next(it)["video"], want["video"])
    state = it.get_state()
    it.close()
    resumed = iter(pipeline.make_dataset(config))
    resumed.set_state(state)
    for want in expected[2:]:
        got = next(resumed)
        np.testing.assert_array_equal(got["video"], want["video"])
        np.testing.assert_array_equal(got["skipped"], want["skipped"])
    resumed.close()


def test_check_command_reports_problems_with_counts(videos, capsys):
    from vjepa_jax.data import check

    # 24-frame videos are short for 16 x 4 frames, usable for 4 x 2.
    assert check.main([videos["mixed"], "--frames_per_clip", "4", "--frame_step", "2"]) == 1
    out = capsys.readouterr().out
    assert "11 videos: 8 ok, 0 short (< 8 frames), 1 missing, 2 unreadable" in out
    assert "labels: 11 distinct in [0, 102]" in out
    assert "missing.mp4: missing file" in out and "empty.mp4: file too small" in out
    assert check.main([videos["clean"]]) == 1  # short by default settings
    assert "0 ok, 8 short (< 64 frames)" in capsys.readouterr().out
    assert check.main([videos["clean"], "--allow_short"]) == 0
    assert check.main([videos["clean"], "--frames_per_clip", "4", "--frame_step", "6"]) == 0
