"""Clip indices (VJEPA_SPEC §5.2 worked examples), crop parameters, resize and eval views."""
import math

import numpy as np
import pytest

from vjepa_jax import preprocess
from vjepa_jax.data import transforms
from vjepa_jax.data.video import VideoError, clip_indices

SPEC_OFFSETS = [0, 4, 8, 12, 17, 21, 25, 29, 34, 38, 42, 46, 51, 55, 59, 63]
SPEC_OVERLAP = [0, 4, 9, 13, 18, 22, 27, 31, 36, 40, 45, 49, 54, 58, 62, 62]


def test_long_video_random_window_matches_spec_offsets():
    idx = clip_indices(200, frames_per_clip=16, frame_step=4, rng=np.random.default_rng(5))
    # The window end is randint(64, 200) (exclusive) from the same generator state.
    end = int(np.random.default_rng(5).integers(64, 200))
    assert idx.shape == (1, 16)
    assert (idx[0] - (end - 64)).tolist() == SPEC_OFFSETS


def test_fixed_window_and_partitions():
    idx = clip_indices(300, frames_per_clip=16, frame_step=4, num_clips=2, rng=None,
                       random_clip_sampling=False)
    # Partitions of 150 frames; each window is the first 64 frames of its partition.
    assert idx[0].tolist() == SPEC_OFFSETS
    assert idx[1].tolist() == [150 + o for o in SPEC_OFFSETS]


def test_short_video_repeats_last_frame():
    idx = clip_indices(30, frames_per_clip=16, frame_step=4, rng=np.random.default_rng(0))
    # linspace(0, 30, 7) = 0, 5, ..., 30, then 9 copies of 30, all clipped to 29.
    assert idx[0].tolist() == [0, 5, 10, 15, 20, 25] + [29] * 10


def test_overlap_variant_matches_spec_example():
    idx = clip_indices(64, frames_per_clip=16, frame_step=4, allow_overlap=True,
                       rng=np.random.default_rng(0))
    assert idx[0].tolist() == SPEC_OVERLAP
    # 100 frames, 2 segments: partitions of 50 <= 64, clips shifted by (100 - 64) // 1 = 36.
    idx = clip_indices(100, frames_per_clip=16, frame_step=4, num_clips=2, allow_overlap=True,
                       rng=np.random.default_rng(0))
    assert idx[0].tolist() == SPEC_OVERLAP
    assert idx[1].tolist() == [36 + o for o in SPEC_OVERLAP]


def test_clip_indices_errors():
    with pytest.raises(VideoError):
        clip_indices(1, frames_per_clip=4, frame_step=2, num_clips=2, rng=None,
                     random_clip_sampling=False)
    with pytest.raises(ValueError, match="rng"):
        clip_indices(100, frames_per_clip=4, frame_step=2)


class ScriptedRng:
    """Stands in for np.random.Generator with fixed uniform draws; integers returns high - 1."""

    def __init__(self, uniforms):
        self.uniforms = list(uniforms)
        self.integer_calls = []

    def uniform(self, low=0.0, high=1.0):
        u = self.uniforms.pop(0)  # a fraction of the interval
        return low + u * (high - low)

    def integers(self, low, high):
        self.integer_calls.append((low, high))
        return high - 1


def test_crop_params_formula():
    # area fraction 0.3 + 0.5 * 0.7 = 0.65; log-aspect at the middle of [log .75, log 1.35].
    rng = ScriptedRng([0.5, 0.5])
    top, left, h, w = transforms.crop_params(rng, 100, 120, (0.3, 1.0), (0.75, 1.35))
    area = 100 * 120 * 0.65
    r = math.exp((math.log(0.75) + math.log(1.35)) / 2)
    assert (h, w) == (round(math.sqrt(area / r)), round(math.sqrt(area * r)))
    # Inclusive upper bounds for top/left, like random.randint(0, H - h).
    assert rng.integer_calls == [(0, 100 - h + 1), (0, 120 - w + 1)]
    assert (top, left) == (100 - h, 120 - w)


def test_crop_params_fallback_is_central_and_ratio_clamped():
    # Full-area crops with aspect 1.35 never fit a 100x50 (H x W) frame -> fallback.
    rng = ScriptedRng([1.0, 1.0] * 10)
    top, left, h, w = transforms.crop_params(rng, 100, 50, (0.3, 1.0), (0.75, 1.35))
    assert (top, left, h, w) == ((100 - 67) // 2, 0, 67, 50)


def test_crop_params_random_within_bounds():
    rng = np.random.default_rng(0)
    for _ in range(200):
        top, left, h, w = transforms.crop_params(rng, 40, 56, (0.3, 1.0), (0.75, 1.35))
        assert 0 <= top and top + h <= 40 and 0 <= left and left + w <= 56
        assert 0.3 * 40 * 56 * 0.9 <= h * w <= 40 * 56
        assert 0.75 * 0.85 <= w / h <= 1.35 * 1.15


def _bilinear_pixel(img, y, x, out_h, out_w):
    """One output pixel of PyTorch bilinear (align_corners=False), written out per pixel."""
    H, W = img.shape[:2]
    sy = max((y + 0.5) * H / out_h - 0.5, 0.0)
    sx = max((x + 0.5) * W / out_w - 0.5, 0.0)
    y0, x0 = int(sy), int(sx)
    y1, x1 = min(y0 + 1, H - 1), min(x0 + 1, W - 1)
    ly, lx = sy - y0, sx - x0
    return ((1 - ly) * ((1 - lx) * img[y0, x0] + lx * img[y0, x1])
            + ly * ((1 - lx) * img[y1, x0] + lx * img[y1, x1]))


@pytest.mark.parametrize("in_hw, out_hw", [((24, 40), (16, 16)), ((10, 7), (23, 31))])
def test_resize_matches_per_pixel_formula(in_hw, out_hw):
    video = np.random.default_rng(0).integers(0, 256, (1, *in_hw, 3), dtype=np.uint8)
    ours = transforms.resize(video, *out_hw)[0].astype(np.float64)
    img = video[0].astype(np.float64)
    ref = np.array([[_bilinear_pixel(img, y, x, *out_hw) for x in range(out_hw[1])]
                    for y in range(out_hw[0])])
    assert np.abs(ours - ref).max() <= 0.5 + 1e-6  # only the uint8 rounding differs


@pytest.mark.slow
@pytest.mark.parametrize("in_hw, out_hw", [((24, 40), (16, 16)), ((10, 7), (23, 31))])
def test_resize_matches_torch_bilinear_without_antialias(in_hw, out_hw):
    torch = pytest.importorskip("torch")
    video = np.random.default_rng(0).integers(0, 256, (2, *in_hw, 3), dtype=np.uint8)
    ours = transforms.resize(video, *out_hw).astype(np.float64)
    ref = torch.nn.functional.interpolate(
        torch.from_numpy(video).permute(0, 3, 1, 2).double(), size=out_hw, mode="bilinear",
        align_corners=False, antialias=False).permute(0, 2, 3, 1).numpy()
    assert np.abs(ours - ref).max() <= 0.5 + 1e-6  # only the uint8 rounding differs


def test_pretrain_transform_shape_and_flip():
    video = np.random.default_rng(1).integers(0, 256, (3, 20, 30, 3), dtype=np.uint8)
    out = transforms.pretrain_transform(video, np.random.default_rng(0), 16)
    assert out.shape == (3, 16, 16, 3) and out.dtype == np.uint8
    # Full-frame "crop" of the same size: the output is the input or its mirror image.
    flips = set()
    for seed in range(20):
        out = transforms.pretrain_transform(video[:, :16, :16], np.random.default_rng(seed), 16,
                                            scale=(1.0, 1.0), ratio=(1.0, 1.0))
        if np.array_equal(out, video[:, :16, :16]):
            flips.add(False)
        else:
            np.testing.assert_array_equal(out, video[:, :16, 15::-1])
            flips.add(True)
    assert flips == {False, True}


def test_eval_views_three_crops_and_centre_crop():
    video = np.random.default_rng(2).integers(0, 256, (2, 32, 48, 3), dtype=np.uint8)
    views = transforms.eval_views(video, 32, num_views=3)
    assert views.shape == (3, 2, 32, 32, 3)
    for i, start in enumerate((0, 8, 16)):  # step = (48 - 32) // 2
        np.testing.assert_array_equal(views[i], video[:, :, start:start + 32])
    # One view at 28: short side -> int(28 * 256 / 224) = 32 (no resize), centre 28x28 crop.
    one = transforms.eval_views(video, 28, num_views=1)
    np.testing.assert_array_equal(one[0], video[:, 2:30, 10:38])


def test_normalize_formula():
    x = np.array([[0, 128, 255]], np.uint8)
    got = np.asarray(preprocess.normalize(x))
    want = (x / 255.0 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
