"""Frozen 3-D sin-cos position tables (VJEPA_SPEC §1.2), computed in float64 NumPy."""
import math

import jax
import numpy as np


def sincos_1d(width, positions):
    """[P] positions -> [P, width]: all sines then all cosines, omega_k = 1/10000^(k/(width/2))."""
    if width % 2:
        raise ValueError(f"sin-cos width must be even, got {width}")
    omega = 1.0 / 10000 ** (np.arange(width // 2, dtype=np.float64) / (width / 2.0))
    angles = np.outer(np.asarray(positions, np.float64), omega)
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)


def axis_widths(width, uniform_power):
    """Width given to the (time, height, width) axes before truncation to `width` columns."""
    if uniform_power:
        u = 2 * math.ceil(width / 6)
        return u, u, u
    return width // 2, width // 4, width // 4


def sincos_3d(width, grid, uniform_power=True):
    """Table [T'*H'*W', width] float32 for grid (T', H', W'), tokens in (time, row, column) order."""
    t, h, w = np.meshgrid(*(np.arange(g) for g in grid), indexing="ij")
    wt, wh, ww = axis_widths(width, uniform_power)
    table = np.concatenate([sincos_1d(wt, t.ravel()), sincos_1d(wh, h.ravel()),
                            sincos_1d(ww, w.ravel())], axis=1)
    return table[:, :width].astype(np.float32)


def resize_table(table, grid, new_grid):
    """[N, D] table on `grid` -> table on `new_grid` by (tri)linear resize, no antialias.

    Matches torch F.interpolate(mode='trilinear', align_corners=False) used by the reference
    when a clip size differs from the size the model was built for.
    """
    if tuple(grid) == tuple(new_grid):
        return table
    d = table.shape[-1]
    vol = table.reshape(*grid, d)
    out = jax.image.resize(vol, (*new_grid, d), method="linear", antialias=False)
    return out.reshape(-1, d)


def sincos_2d_ijepa(width, side):
    """I-JEPA's table [side*side, width] float32, tokens in raster order (row, column).

    Each half is the 1-D table of one axis, width/2 columns: the FIRST half encodes the COLUMN
    index and the second the ROW index (IJEPA_SPEC §1.2, pitfall 1), the opposite of the order
    a [row, column] table would have.
    """
    if width % 4:
        raise ValueError(f"2-D sin-cos width must be a multiple of 4, got {width}")
    row, col = np.meshgrid(np.arange(side), np.arange(side), indexing="ij")
    table = np.concatenate([sincos_1d(width // 2, col.ravel()), sincos_1d(width // 2, row.ravel())],
                           axis=1)
    return table.astype(np.float32)
