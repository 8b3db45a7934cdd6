"""3-D RoPE (VJEPA_SPEC §9.2) against an independent NumPy implementation written from the spec.

The NumPy functions below are this test's own reading of §9.2, in float64: three rotated parts of
2*((Dh//3)//2) dims for (time, height, width), adjacent pairs rotated as
x * cos + (-x1, x0, -x3, x2, ...) * sin with frequencies 1/10000^(k/(d/2)); the angle vector over
a part is the frequencies tiled twice ('tiled', the reference) or each repeated twice
('interleaved', V-JEPA 2.1). Positions come from the flat token index in (t, h, w) order.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vjepa_jax.models import rope

LAYOUTS = ("tiled", "interleaved")


# ---------------------------------------------------------------------------------------------
# The NumPy reference


def rotated_size(head_dim):
    """Dims per rotated axis: 2 * ((head_dim // 3) // 2)."""
    return 2 * ((head_dim // 3) // 2)


def grid_positions(ids, grid):
    """(t, h, w) integer coordinates of flat token indices of a (T, H, W) grid."""
    _, grid_h, grid_w = grid
    ids = np.asarray(ids, np.int64)
    t = ids // (grid_h * grid_w)
    rest = ids - t * grid_h * grid_w
    h = rest // grid_w
    return t, h, rest - h * grid_w


def rotate_axis(x, pos, layout):
    """Rotate x [..., N, d] by positions pos [..., N] on one axis (float64)."""
    half = x.shape[-1] // 2
    omega = 1.0 / 10000.0 ** (np.arange(half, dtype=np.float64) / half)
    angles = np.asarray(pos, np.float64)[..., None] * omega  # [..., N, d/2]
    if layout == "tiled":  # [f0 .. f_{d/2-1}, f0 .. f_{d/2-1}]
        angles = np.concatenate([angles, angles], axis=-1)
    else:  # [f0, f0, f1, f1, ...]
        angles = np.repeat(angles, 2, axis=-1)
    partner = np.empty_like(x)
    partner[..., 0::2] = -x[..., 1::2]
    partner[..., 1::2] = x[..., 0::2]
    return x * np.cos(angles) + partner * np.sin(angles)


def rope_reference(x, ids, grid, layout):
    """x [B, L, H, Dh] of tokens at flat indices ids [B, L] -> rotated (float64)."""
    x = np.moveaxis(np.asarray(x, np.float64), 2, 1)  # [B, H, L, Dh]
    d = rotated_size(x.shape[-1])
    parts = [rotate_axis(x[..., a * d:(a + 1) * d], pos[:, None, :], layout)
             for a, pos in enumerate(grid_positions(ids, grid))]
    return np.moveaxis(np.concatenate(parts + [x[..., 3 * d:]], axis=-1), 1, 2)


def scores(q, k):
    """q [B, L, H, Dh], k [B, S, H, Dh] -> unscaled logits [B, H, L, S] (float64)."""
    return np.einsum("blhd,bshd->bhls", np.asarray(q, np.float64), np.asarray(k, np.float64))


# ---------------------------------------------------------------------------------------------
# Tests


def _rotate(x, ids, grid, layout):
    return np.asarray(jax.jit(rope.rotate, static_argnums=2)(
        jnp.asarray(x), rope.token_positions(jnp.asarray(ids), grid), layout))


def test_axis_sizes_are_the_spec_examples():
    # §9.2: ViT-L (and the 22-head ViT-g) 64 -> 20 + 20 + 20 (4 left), predictor 32 -> 10 x 3 (2 left).
    assert rope.axis_dims(64) == 20 and rope.axis_dims(32) == 10
    for head_dim in (2, 5, 6, 7, 12, 24, 48, 80, 88):
        assert rope.axis_dims(head_dim) == rotated_size(head_dim), head_dim


def test_token_positions_are_time_row_column():
    grid = (3, 5, 4)
    ids = np.array([[0, 1, 4, 19, 20, 59], [7, 23, 41, 42, 58, 3]])
    got = np.asarray(rope.token_positions(jnp.asarray(ids), grid))
    assert got.shape == (2, 6, 3) and got.dtype == np.float32
    np.testing.assert_array_equal(got, np.stack(grid_positions(ids, grid), -1))
    np.testing.assert_array_equal(got[0, 3], [0, 4, 3])  # 19 = 0*20 + 4*4 + 3
    np.testing.assert_array_equal(got[0, 4], [1, 0, 0])


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("head_dim", [64, 32, 6, 7, 13, 24])
def test_rotate_matches_the_numpy_reference_on_masked_index_sets(layout, head_dim):
    grid = (4, 5, 3)  # 60 tokens, non-square so h and w cannot be swapped unnoticed
    rng = np.random.default_rng(head_dim)
    n_kept = 17
    ids = np.stack([np.sort(rng.permutation(60)[:n_kept]) for _ in range(2)])  # a different set per clip
    x = rng.normal(size=(2, n_kept, 3, head_dim)).astype(np.float32)
    want = rope_reference(x, ids, grid, layout)
    got = _rotate(x, ids, grid, layout)
    assert got.shape == x.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=2e-5, rtol=1e-5)
    d = rotated_size(head_dim)
    np.testing.assert_array_equal(got[..., 3 * d:], x[..., 3 * d:])  # the rest passes through
    assert np.abs(got - x).max() > 0.1 or d == 0  # something really turned


@pytest.mark.parametrize("layout", LAYOUTS)
def test_masked_tokens_keep_their_positions(layout):
    grid = (2, 4, 4)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1, 32, 2, 64)).astype(np.float32)
    full = _rotate(x, np.arange(32)[None], grid, layout)
    kept = np.array([[3, 9, 17, 18, 30]])
    np.testing.assert_allclose(_rotate(x[:, kept[0]], kept, grid, layout), full[:, kept[0]],
                               atol=1e-6)
    # Token 0 sits at (0, 0, 0): no rotation at all, in either layout.
    np.testing.assert_allclose(full[:, 0], x[:, 0], atol=1e-7)


def test_layouts_differ_and_keep_the_dtype():
    grid = (2, 4, 4)
    x = np.random.default_rng(1).normal(size=(1, 32, 2, 64)).astype(np.float32)
    ids = np.arange(32)[None]
    tiled, interleaved = (_rotate(x, ids, grid, layout) for layout in LAYOUTS)
    assert np.abs(tiled - interleaved).max() > 0.1
    out = rope.rotate(jnp.asarray(x, jnp.bfloat16), rope.token_positions(jnp.asarray(ids), grid),
                      "interleaved")
    assert out.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(out, np.float32), interleaved, atol=0.05)


def _shifted_box_scores(layout, head_dim=64):
    """Scores of rotated q / k of the same tokens in a (2, 3, 3) box at two places of an (8, 8, 8)
    grid, the second moved by (t, h, w) = (3, 2, 4)."""
    grid = (8, 8, 8)
    box = np.stack(np.meshgrid(np.arange(2), np.arange(3), np.arange(3), indexing="ij"), -1)
    box = box.reshape(-1, 3)
    flat = lambda p: (p[:, 0] * 64 + p[:, 1] * 8 + p[:, 2])[None]
    rng = np.random.default_rng(2)
    q = rng.normal(size=(1, len(box), 2, head_dim)).astype(np.float32)
    k = rng.normal(size=(1, len(box), 2, head_dim)).astype(np.float32)
    out = []
    for ids in (flat(box), flat(box + np.array([3, 2, 4]))):
        out.append(scores(_rotate(q, ids, grid, layout), _rotate(k, ids, grid, layout)))
    return out, scores(q, k)


def test_interleaved_scores_depend_only_on_relative_positions():
    (here, there), unrotated = _shifted_box_scores("interleaved")
    np.testing.assert_allclose(here, there, atol=1e-3)
    assert np.abs(here - unrotated).max() > 1.0  # the positions do enter the scores


def test_tiled_scores_are_not_shift_invariant():
    # The reference's layout turns the two members of a pair by different angles, so moving every
    # token by the same offset changes the scores (VJEPA_SPEC §9.2). A silent switch to the
    # corrected layout would make this test fail.
    (here, there), _ = _shifted_box_scores("tiled")
    assert np.abs(here - there).max() > 1.0
