"""Weighted mixtures of index files (V-JEPA 2: K710 0.335 / SSv2 0.100 / HowTo100M 0.565):
shares by weight, one pass per file, resume from a checkpoint, per-source bad-video counts,
clear errors, and a single index unchanged."""
import grain
import numpy as np
import pytest

from vjepa_jax import checkpoint, config as config_lib
from vjepa_jax.config import base_config
from vjepa_jax.data import index as index_lib
from vjepa_jax.data import mixture, pipeline
from vjepa_jax.data.synthetic import write_dataset

VJEPA2_WEIGHTS = (0.335, 0.100, 0.565)  # K710 / SSv2 / HowTo100M (VJEPA_SPEC §9.3)


def _config(index, weights=VJEPA2_WEIGHTS, batch_size=4):
    c = base_config()
    c.seed = 5
    c.model.num_frames = 4
    c.model.crop_size = 16
    c.data.update(source="csv", index=tuple(index), weights=tuple(weights),
                  batch_size=batch_size, num_workers=0, frame_step=2)
    return c


class FakeClips(pipeline.VideoFileClips):
    """The clips of a real index whose files are never opened: entry i is a constant clip
    labelled i, and a path containing 'bad' is unusable (VideoError), as a corrupt file is."""

    def __init__(self, video_index):
        super().__init__(video_index, frames_per_clip=4, frame_step=2, duration=0.0,
                         num_clips=1, allow_overlap=False)

    def load(self, i, rng):
        if "bad" in self.paths[i]:
            raise pipeline.video_lib.VideoError("broken on purpose")
        return np.full((1, 4, 20, 20, 3), i % 256, np.uint8), i


def _fake_index(tmp_path, sizes, bad=()):
    """One CSV per source (k710, ssv2, howto) of sizes[d] fake paths; entries listed in
    bad[d] are named 'bad'. Returns the CSV paths."""
    files = []
    for d, (name, n) in enumerate(zip(("k710", "ssv2", "howto"), sizes)):
        bad_here = bad[d] if d < len(bad) else ()
        lines = [f"/fake/{name}/{'bad' if i in bad_here else 'ok'}_{i}.mp4 {d}\n"
                 for i in range(n)]
        files.append(tmp_path / f"{name}.csv")
        files[-1].write_text("".join(lines))
    return [str(f) for f in files]


def _draw(config, source, num_batches):
    it = iter(pipeline.make_dataset(config, source=source))
    return [next(it) for _ in range(num_batches)]


# ----------------------------------------------------------------------------- shares
def test_reference_weights_become_exact_integer_proportions():
    assert mixture.proportions(VJEPA2_WEIGHTS) == [335.0, 100.0, 565.0]
    assert mixture.proportions((1 / 3, 2 / 3)) == [100.0, 200.0]
    assert mixture.proportions((2.0, 2.0, 1.0)) == [200.0, 200.0, 100.0]


def test_examples_follow_the_weights_and_each_pass_visits_a_file_once(tmp_path):
    # Sizes unrelated to the weights: the share is per file, not per video (w_d / n_d each).
    sizes = (300, 200, 500)
    files = _fake_index(tmp_path, sizes)
    source = FakeClips(index_lib.read_index(files, VJEPA2_WEIGHTS))
    config = _config(files, batch_size=50)
    batches = _draw(config, source, 40)  # 2000 examples
    entry = np.concatenate([b["label"] for b in batches])
    which = np.concatenate([b["source"] for b in batches])
    starts = np.cumsum((0,) + sizes)
    np.testing.assert_array_equal(which, np.searchsorted(starts, entry, side="right") - 1)
    share = np.asarray(VJEPA2_WEIGHTS) / sum(VJEPA2_WEIGHTS)
    # Grain interleaves by position, not by coin flips: after every batch each source's count
    # is within 2 of n * share (i.i.d. draws would be off by ~sqrt(n * share), up to ~20 here).
    for n in range(50, 2001, 50):
        counts = np.bincount(which[:n], minlength=3)
        assert np.all(np.abs(counts - n * share) <= 2), (n, counts, n * share)
    # Within a source, a pass draws every video once before any repeats (a shuffle, not draws
    # with replacement): SSv2 gets 200 of 2000 examples, exactly its 200 videos.
    for d, n_d in enumerate(sizes):
        mine = entry[which == d]
        first_pass = mine[:n_d]
        assert len(np.unique(first_pass)) == len(first_pass), d
        if len(mine) >= n_d:
            assert sorted(first_pass) == list(range(starts[d], starts[d + 1]))
    # Deterministic given the seed; another seed reorders but keeps the shares.
    again = np.concatenate([b["label"] for b in _draw(config, source, 4)])
    np.testing.assert_array_equal(again, entry[:200])
    config.seed += 1
    other = _draw(config, source, 4)
    other_entry = np.concatenate([b["label"] for b in other])
    assert not np.array_equal(other_entry, entry[:200])
    np.testing.assert_array_equal(
        np.bincount(np.concatenate([b["source"] for b in other]), minlength=3),
        np.bincount(which[:200], minlength=3))


def test_single_index_is_the_plain_shuffle_of_before(tmp_path):
    files = _fake_index(tmp_path, (300,))
    config = _config(files, weights=())
    batches = _draw(config, FakeClips(index_lib.read_index(files)), 10)
    entry = np.concatenate([b["label"] for b in batches])
    plain = grain.MapDataset.range(300).seed(config.seed).shuffle().repeat()
    np.testing.assert_array_equal(entry, [plain[i] for i in range(len(entry))])
    assert all(not b["source"].any() for b in batches)
    counts = pipeline.SkipCounts(pipeline.source_labels(config))
    for b in batches:
        counts.add(b)
    assert counts.metrics() == {"bad_videos": 0}  # no per-source keys for one index


# ----------------------------------------------------------------------------- bad videos
def test_bad_videos_are_counted_per_source_and_checked_per_source(tmp_path):
    # 10 of SSv2's 200 entries are unusable (5 %): 0.5 % of the mixture.
    files = _fake_index(tmp_path, (300, 200, 500), bad=((), range(50, 60)))
    config = _config(files, batch_size=50)
    source = FakeClips(index_lib.read_index(files, VJEPA2_WEIGHTS))
    counts = pipeline.SkipCounts(pipeline.source_labels(config))
    for batch in _draw(config, source, 40):
        counts.add(batch)
        assert "bad" not in " ".join(source.paths[i] for i in batch["label"])
    m = counts.metrics()
    # One pass over SSv2 (its 200 draws) meets each bad entry exactly once.
    assert m["seen_videos/ssv2"] == 200 and m["bad_videos/ssv2"] == 10
    assert m["bad_videos/k710"] == 0 and m["bad_videos/howto"] == 0
    assert m["bad_videos"] == 10 and sum(m[f"seen_videos/{n}"] for n in counts.names) == 2000
    assert "ssv2 10 of 200 (5.00%)" in counts.summary()
    counts.check(0.01, min_videos=2000)  # SSv2 has too few draws to judge alone; total 0.5 %
    with pytest.raises(pipeline.TooManySkippedVideos,
                       match=r"index file .*ssv2.csv: 10 of 200 .*\(5\.00%\)"):
        counts.check(0.01, min_videos=100)
    counts.check(0.06, min_videos=100)


@pytest.fixture(scope="module")
def mp4_mixture(tmp_path_factory):
    """Three CSV sources of generated mp4s (3, 2, 3 videos); ssv2 also lists a corrupt and a
    missing file. Labels identify the videos: 10*d + i."""
    root = tmp_path_factory.mktemp("mixture")
    files = []
    for d, (name, n) in enumerate((("k710", 3), ("ssv2", 2), ("howto", 3))):
        csv = write_dataset(root / name, n, num_frames=16, height=32, width=32, seed=d)
        lines = [f"{line.rsplit(' ', 1)[0]} {10 * d + i}"
                 for i, line in enumerate(open(csv).read().splitlines())]
        if name == "ssv2":
            corrupt = root / "corrupt.mp4"
            corrupt.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, np.uint8)
                                .tobytes())
            lines += [f"{corrupt} 98", f"{root / 'missing.mp4'} 99"]
        files.append(root / f"{name}.csv")
        files[-1].write_text("\n".join(lines) + "\n")
    return [str(f) for f in files]


def test_mixture_of_mp4_indexes_resumes_from_a_checkpoint_exactly(mp4_mixture, tmp_path):
    config = _config(mp4_mixture, batch_size=4)
    config_lib.validate(config)
    uninterrupted = iter(pipeline.make_dataset(config))
    batches = [next(uninterrupted) for _ in range(6)]
    assert not np.array_equal(batches[3]["label"], batches[0]["label"])  # not a restart

    it = iter(pipeline.make_dataset(config))
    for _ in range(3):
        next(it)
    mngr = checkpoint.manager(str(tmp_path), 2)
    checkpoint.save_tree(mngr, 3, {"step": np.int32(3)}, it, {}, force=True)
    checkpoint.finish(mngr)
    mngr.close()

    fresh = iter(pipeline.make_dataset(config))
    reader = checkpoint.manager(str(tmp_path), 2)
    checkpoint.restore_tree(reader, 3, {"step": np.int32(0)}, {"step": None}, fresh)
    reader.close()
    for want in batches[3:]:
        got = next(fresh)
        assert got.keys() == want.keys()
        for key in want:
            np.testing.assert_array_equal(got[key], want[key], err_msg=key)

    # The bad entries of ssv2.csv are replaced within ssv2 and counted there only.
    counts = pipeline.SkipCounts(pipeline.source_labels(config))
    for b in batches:
        counts.add(b)
        assert np.all(b["label"] // 10 == b["source"])  # each video from its own source
    m = counts.metrics()
    assert m["bad_videos"] == m["bad_videos/ssv2"] > 0
    assert m["bad_videos/k710"] == m["bad_videos/howto"] == 0


# ----------------------------------------------------------------------------- errors
@pytest.mark.parametrize("weights", [(1.0, 2.0), (0.5, 0.0, 0.5), (0.5, -1.0, 0.5),
                                     (1.0, float("nan"), 1.0), (1.0, float("inf"), 1.0),
                                     (1.0, "a", 1.0)])
def test_bad_weights_give_one_error_naming_the_key(tmp_path, weights):
    files = _fake_index(tmp_path, (300, 200, 500))
    with pytest.raises(ValueError, match=r"config\.data\.weights=.*one finite number > 0 per "
                                         r"data\.index file \(3 files\)"):
        config_lib.validate(_config(files, weights=weights))
    with pytest.raises(ValueError, match=r"^data\.weights"):
        index_lib.read_index(files, weights)


def test_missing_index_file_is_named(tmp_path):
    files = _fake_index(tmp_path, (300, 200)) + [str(tmp_path / "howto_missing.csv")]
    with pytest.raises(FileNotFoundError, match="index file .*howto_missing.csv does not exist"):
        pipeline.make_dataset(_config(files))


def test_source_names_are_short_and_unique():
    assert mixture.source_names(["/d/k710_train.csv", "ssv2.csv", "/h/howto.npy"]) == (
        "k710_train", "ssv2", "howto")
    assert mixture.source_names(["/a/train.csv", "/b/train.csv"]) == ("0_train", "1_train")
