"""PyAV decoding: requested frames in order, truncated files, unusable files, duration step."""
import av
import numpy as np
import pytest

from vjepa_jax.data import video
from vjepa_jax.data.synthetic import SyntheticVideos, write_mp4


@pytest.fixture(scope="module")
def frames():
    return SyntheticVideos(1, 48, 32, 32, seed=2)[0]["video"]


def _decode_all(path):
    with av.open(path) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def test_decode_frames_returns_requested_frames_in_order(tmp_path, frames):
    path = str(tmp_path / "a.mp4")
    write_mp4(path, frames, fps=24)
    assert video.count_frames(path) == (48, 24.0)
    everything = _decode_all(path)
    got = video.decode_frames(path, [7, 3, 3, 40], threads=1)
    np.testing.assert_array_equal(got, everything[[7, 3, 3, 40]])
    clips = video.load_clips(path, np.random.default_rng(0), frames_per_clip=4, frame_step=2,
                             num_clips=2)
    assert clips.shape == (2, 4, 32, 32, 3)


def test_truncated_file_with_header_first_uses_decodable_frames(tmp_path, frames):
    # faststart puts the frame table first, so a cut file still claims 48 frames.
    path = str(tmp_path / "fs.mp4")
    with av.open(path, "w", options={"movflags": "faststart"}) as container:
        stream = container.add_stream("libx264", rate=24)
        stream.width = stream.height = 32
        stream.pix_fmt = "yuv420p"
        for f in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        container.mux(stream.encode())
    data = open(path, "rb").read()
    cut = str(tmp_path / "cut.mp4")
    open(cut, "wb").write(data[:int(len(data) * 0.6)])
    assert video.count_frames(cut)[0] == 48
    with pytest.raises(video.VideoError, match="video ended before frame"):
        video.decode_frames(cut, [47])
    clips = video.load_clips(cut, np.random.default_rng(0), frames_per_clip=8, frame_step=4)
    assert clips.shape == (1, 8, 32, 32, 3)


def test_unusable_files_raise_video_error(tmp_path):
    with pytest.raises(video.VideoError, match="missing file"):
        video.count_frames(str(tmp_path / "nope.mp4"))
    small = tmp_path / "small.mp4"
    small.write_bytes(b"x" * 100)
    with pytest.raises(video.VideoError, match="too small"):
        video.count_frames(str(small))
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(bytes(range(256)) * 8)
    with pytest.raises(video.VideoError, match="cannot open"):
        video.count_frames(str(junk))


def test_frame_step_from_duration():
    assert video.frame_step_for(16, 4) == 4
    assert video.frame_step_for(16, 4, duration=2.0, fps=30.0) == 3  # int(2 * 30 / 16)
    # V-JEPA 2 samples at 4 fps: step ceil(fps) // 4 (VJEPA_SPEC §9.3), whatever frame_step says.
    assert video.frame_step_for(16, 4, fps=29.97, sample_fps=4) == 7
    assert video.frame_step_for(16, 4, fps=25.0, sample_fps=4) == 6
    assert video.frame_step_for(16, 4, fps=3.0, sample_fps=4) == 1
    with pytest.raises(video.VideoError, match="data.fps=4"):
        video.frame_step_for(16, 4, fps=0.0, sample_fps=4)
    with pytest.raises(video.VideoError, match="frame rate"):
        video.frame_step_for(16, 4, duration=2.0, fps=0.0)


@pytest.mark.parametrize("preset", ["ultrafast", "medium"])  # medium: B-frames, reordered pts
def test_seeking_decode_equals_decoding_from_the_start(tmp_path, frames, preset):
    long = np.concatenate([frames, frames[::-1], frames])  # 144 frames
    path = str(tmp_path / f"{preset}.mp4")
    write_mp4(path, long, fps=24, preset=preset, keyframe_interval=12)
    everything = _decode_all(path)
    assert len(everything) == 144
    rng = np.random.default_rng(0)
    cases = [[0, 5], [13], [12, 24, 143], [100, 60, 61, 61], list(range(90, 122, 4)),
             sorted(rng.integers(0, 144, 16).tolist())]
    for idx in cases:
        if min(idx) > 0:  # the seeking path itself answered, not its fallback
            assert video._decode(path, set(idx), 1, seek=True) is not None
        np.testing.assert_array_equal(video.decode_frames(path, idx, threads=1), everything[idx])
        np.testing.assert_array_equal(video.decode_frames(path, idx, threads=1, seek=False),
                                      everything[idx])
    with pytest.raises(video.VideoError, match="video ended before frame 144"):
        video.decode_frames(path, [140, 144])
