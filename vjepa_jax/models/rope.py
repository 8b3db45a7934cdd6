"""3-D rotary position embedding of V-JEPA 2 (VJEPA_SPEC §9.2), applied to queries and keys.

Each head's dimension splits into three rotated parts of `axis_dims(head_dim)` = 2*((Dh//3)//2)
dimensions, for the token's time, row and column in that order, and an unrotated rest (ViT-L:
64 = 20 + 20 + 20 + 4; predictor head_dim 32 = 10 + 10 + 10 + 2). A part of d dimensions uses
the frequencies f_k = 1/10000^(k/(d/2)), k < d/2, and rotates adjacent pairs (x0, x1), (x2, x3),
...: x * cos(p f) + (-x1, x0, -x3, x2, ...) * sin(p f).

Two layouts of the angle vector over the d dimensions:
- 'tiled' (the reference, kept for checkpoint compatibility): [f_0 .. f_{d/2-1}, f_0 .. f_{d/2-1}],
  so the two members of a pair turn by different angles; the scores are then not a function of
  the relative position alone.
- 'interleaved' (the corrected form of V-JEPA 2.1): [f_0, f_0, f_1, f_1, ...], a true rotation
  of every pair, so q.k depends on positions only through their difference.

Positions are the integer (t, h, w) of each token recovered from its flat index in the (time,
row, column) token order, so a masked sequence that keeps indices keeps its positions.
"""
import jax.numpy as jnp

LAYOUTS = ("none", "tiled", "interleaved")  # 'none': no rotation (additive sin-cos tables)


def axis_dims(head_dim):
    """Rotated dimensions per axis (time, height, width) of a head of head_dim dimensions."""
    return 2 * ((head_dim // 3) // 2)


def token_positions(indices, grid):
    """Flat token indices [...] of a (T, H, W) grid -> float32 (t, h, w) [..., 3]."""
    _, h, w = grid
    indices = jnp.asarray(indices)
    t, rest = jnp.divmod(indices, h * w)
    row, col = jnp.divmod(rest, w)
    return jnp.stack([t, row, col], axis=-1).astype(jnp.float32)


def _rotate_part(x, pos, layout):
    """Rotate x [B, L, H, d] by positions pos [B, L] (float32) on one axis."""
    d = x.shape[-1]
    freqs = 1.0 / 10000.0 ** (jnp.arange(d // 2, dtype=jnp.float32) / (d / 2.0))
    angles = pos[..., None] * freqs  # [B, L, d/2]
    if layout == "tiled":
        angles = jnp.concatenate([angles, angles], axis=-1)
    elif layout == "interleaved":
        angles = jnp.repeat(angles, 2, axis=-1)
    else:
        raise ValueError(f"model.rope={layout!r}: expected one of {LAYOUTS}")
    cos, sin = jnp.cos(angles)[:, :, None], jnp.sin(angles)[:, :, None]  # broadcast over heads
    pairs = x.reshape(x.shape[:-1] + (d // 2, 2))
    swapped = jnp.stack([-pairs[..., 1], pairs[..., 0]], axis=-1).reshape(x.shape)
    return x * cos + swapped * sin


def rotate(x, positions, layout):
    """Queries or keys x [B, L, H, Dh] at positions [B, L, 3] -> rotated, in x's dtype.

    The rotation is computed in float32; the unrotated last Dh - 3*axis_dims(Dh) dims pass through.
    """
    d = axis_dims(x.shape[-1])
    if d == 0:
        raise ValueError(f"head_dim {x.shape[-1]} is too small for 3-D RoPE (needs >= 6)")
    xf = x.astype(jnp.float32)
    parts = [_rotate_part(xf[..., i * d:(i + 1) * d], positions[..., i], layout) for i in range(3)]
    return jnp.concatenate(parts + [xf[..., 3 * d:]], axis=-1).astype(x.dtype)
