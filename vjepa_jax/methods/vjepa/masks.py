"""Context/target token masks for V-JEPA, sampled inside jit with static token counts.

Tokens are numbered time-major, n = t*(H'*W') + h*W' + w (VJEPA_SPEC §1.1), on a grid
(T', H', W') = (frames / tubelet, crop / patch, crop / patch). Every generator returns, per
sample, exactly `num_context` context and `num_target` target indices, ascending and disjoint.

The reference collator (VJEPA_SPEC §3) cuts every sample's lists to the batch minimum, so its
counts change every step and depend on the per-GPU batch size. Here the counts are fixed per
generator, by default from the reference's mean batch-min counts (`reference_counts`), and a
NumPy re-implementation of the reference (`reference_masks`) is kept for tests and statistics.

Drawn and compared with the reference by `python -m vjepa_jax.masks` (vjepa_jax/masks.py).
"""
from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

KINDS = ("multiblock", "tube", "causal")
TRUNCATIONS = ("random", "first")


@dataclasses.dataclass(frozen=True)
class MaskGenerator:
    """One mask generator; hashable, so it can be a static argument of jit.

    `num_context` / `num_target` of 0 mean: for 'tube' and 'causal', all tokens the definition
    gives (resolved here); for 'multiblock', not set yet (`generators_from_config` or
    `with_reference_counts` derive them; `sample` refuses to run without them).
    """
    kind: str = "multiblock"
    grid: tuple = (8, 14, 14)
    num_context: int = 0
    num_target: int = 0
    num_blocks: int = 8
    spatial_scale: tuple = (0.15, 0.15)
    temporal_scale: tuple = (1.0, 1.0)
    aspect_ratio: tuple = (0.75, 1.5)
    max_temporal_keep: float = 1.0
    tube_ratio: float = 0.9
    context_frames: int = 1
    truncation: str = "random"
    num_tries: int = 8  # candidate block placements per sample (multiblock)

    def __post_init__(self):
        # Frozen dataclass: normalise fields in place (lists from configs become tuples, so the
        # generator stays hashable) and resolve the counts of 'tube' and 'causal'.
        set_ = functools.partial(object.__setattr__, self)
        if self.kind not in KINDS:
            raise ValueError(f"mask kind={self.kind!r} is not one of {KINDS}")
        if self.truncation not in TRUNCATIONS:
            raise ValueError(f"mask truncation={self.truncation!r} is not one of {TRUNCATIONS}")
        if len(tuple(self.grid)) != 3 or any(int(g) < 1 for g in self.grid):
            raise ValueError(f"mask grid={self.grid!r} must be three positive ints (T', H', W')")
        set_("grid", tuple(int(g) for g in self.grid))
        for name in ("num_context", "num_target", "num_blocks", "num_tries", "context_frames"):
            set_(name, int(getattr(self, name)))
        for name in ("spatial_scale", "temporal_scale", "aspect_ratio"):
            value = tuple(float(v) for v in getattr(self, name))
            if len(value) != 2 or not 0 < value[0] <= value[1]:
                raise ValueError(f"mask {name}={getattr(self, name)!r} must be (lo, hi) with "
                                 "0 < lo <= hi")
            set_(name, value)
        if self.spatial_scale[1] > 1 or self.temporal_scale[1] > 1:
            raise ValueError(f"mask spatial_scale={self.spatial_scale} and temporal_scale="
                             f"{self.temporal_scale} must lie in (0, 1]")
        if not 0 < self.max_temporal_keep <= 1:
            raise ValueError(f"mask max_temporal_keep={self.max_temporal_keep} must lie in (0, 1]")
        if self.kind == "multiblock" and (self.num_blocks < 1 or self.num_tries < 1):
            raise ValueError(f"mask num_blocks={self.num_blocks} and num_tries={self.num_tries} "
                             "must be >= 1")
        t, h, w = self.grid
        if self.kind == "tube":
            kept = self._tube_kept()
            if not 1 <= kept < h * w:
                raise ValueError(f"mask tube_ratio={self.tube_ratio} keeps {kept} of {h * w} "
                                 "spatial positions; need at least one kept and one hidden")
            set_("num_context", self.num_context or kept * t)
            set_("num_target", self.num_target or (h * w - kept) * t)
        if self.kind == "causal":
            if not 1 <= self.context_frames < t:
                raise ValueError(f"mask context_frames={self.context_frames} must lie in "
                                 f"[1, {t - 1}] for a grid with {t} time steps")
            set_("num_context", self.num_context or self.context_frames * h * w)
            set_("num_target", self.num_target or (t - self.context_frames) * h * w)
        if self.num_context < 0 or self.num_target < 0:
            raise ValueError(f"mask num_context={self.num_context} and num_target="
                             f"{self.num_target} must be >= 0")
        if self.num_context + self.num_target > self.num_tokens:
            raise ValueError(f"mask num_context={self.num_context} + num_target={self.num_target} "
                             f"exceeds the {self.num_tokens} tokens of grid {self.grid}")

    @property
    def num_tokens(self):
        """N = T' * H' * W'."""
        return math.prod(self.grid)

    def _tube_kept(self):
        # Same rounding as the reference's random_tube collator (VJEPA_SPEC §3.7).
        return int(self.grid[1] * self.grid[2] * (1.0 - self.tube_ratio))

    def with_reference_counts(self, batch_size=24, multiple=64, num_batches=200, seed=0):
        """Copy with unset (0) counts replaced by `reference_counts(...)`."""
        if self.num_context and self.num_target:
            return self
        ctx, tgt = reference_counts(self, batch_size, multiple, num_batches, seed)
        return dataclasses.replace(self, num_context=self.num_context or ctx,
                                   num_target=self.num_target or tgt)

    def sample(self, rng, batch_size):
        """Masks for one batch: (context [B, num_context], target [B, num_target]) int32."""
        ctx, tgt, _ = self.sample_with_hidden(rng, batch_size)
        return ctx, tgt

    def sample_with_hidden(self, rng, batch_size):
        """Like `sample`, plus the boolean hidden-token mask [B, N] the sets were picked from."""
        if self.num_context < 1 or self.num_target < 1:
            raise ValueError(f"MaskGenerator(kind={self.kind!r}) has num_context="
                             f"{self.num_context}, num_target={self.num_target}: both must be "
                             ">= 1 (build it with generators_from_config or "
                             "with_reference_counts)")
        k_hidden, k_select = jax.random.split(rng)
        hidden = self.sample_hidden(k_hidden, batch_size)
        ctx, tgt = self.select(k_select, hidden)
        return ctx, tgt, hidden

    def sample_block_size(self, rng):
        """Block extent (t, h, w) as int32 scalars, drawn once per call (VJEPA_SPEC §3.2)."""
        return self._block_size(jax.random.uniform(rng, (3,)))

    def _block_size(self, u):
        """(t, h, w) from three U[0, 1) numbers u [3]: temporal, spatial, aspect ratio."""
        n_t, n_h, n_w = self.grid
        s_t, s_s, a = (_scale(u[i], bounds) for i, bounds in
                       enumerate((self.temporal_scale, self.spatial_scale, self.aspect_ratio)))
        # Fixed ranges (all published configs) are computed in float64 on the host, exactly as
        # the reference does; float32 could floor e.g. 0.29 * 100 to 29 instead of 28.
        if isinstance(s_t, float):
            t = max(1, int(n_t * s_t))
        else:
            t = jnp.maximum(1, jnp.floor(n_t * s_t).astype(jnp.int32))
        n_keep = int(n_h * n_w * s_s) if isinstance(s_s, float) else jnp.floor(n_h * n_w * s_s)
        if isinstance(n_keep, int) and isinstance(a, float):
            h, w = round(math.sqrt(n_keep * a)), round(math.sqrt(n_keep / a))
        else:  # jnp.round rounds half to even, like Python's round
            h, w = jnp.round(jnp.sqrt(n_keep * a)), jnp.round(jnp.sqrt(n_keep / a))
        h = jnp.minimum(jnp.asarray(h, jnp.int32), n_h)
        w = jnp.minimum(jnp.asarray(w, jnp.int32), n_w)
        return jnp.asarray(t, jnp.int32), h, w

    def sample_hidden(self, rng, batch_size):
        """Tokens hidden from the context encoder, before picking counts: [B, N] bool."""
        # Few, large jax.random calls: each one is a separately compiled threefry kernel.
        n_t, n_h, n_w = self.grid
        if self.kind == "multiblock":
            shape = (batch_size, self.num_tries, self.num_blocks, 3)
            u = jax.random.uniform(rng, (3 + math.prod(shape),))
            size = self._block_size(u[:3])
            return jax.vmap(self._multiblock_hidden, in_axes=(0, None))(u[3:].reshape(shape), size)
        if self.kind == "tube":
            rank = _random_ranks(rng, (batch_size, n_h * n_w))
            return jnp.tile(rank >= self._tube_kept(), (1, n_t))
        causal = jnp.arange(self.num_tokens) >= self.context_frames * n_h * n_w
        return jnp.broadcast_to(causal, (batch_size, self.num_tokens))

    def _multiblock_hidden(self, u, size):
        """Union of num_blocks boxes for one sample, best of num_tries placements: [N] bool.

        u [tries, blocks, 3] uniforms give each box's (start, top, left).
        """
        n_t, n_h, n_w = self.grid
        t, h, w = size
        # Uniform integers in the inclusive ranges [0, n - extent], as in the reference.
        starts = [jnp.minimum(jnp.floor(u[..., i] * (n - e + 1)).astype(jnp.int32), n - e)
                  for i, (n, e) in enumerate(zip(self.grid, size))]
        in_t, in_h, in_w = (_in_interval(n, s, e) for n, s, e in zip(self.grid, starts, size))
        boxes = in_t[..., :, None, None] & in_h[..., None, :, None] & in_w[..., None, None, :]
        hidden = boxes.any(axis=1).reshape(self.num_tries, self.num_tokens)
        limit = max(1, int(n_t * self.max_temporal_keep))
        if limit < n_t:
            hidden = hidden | (jnp.arange(self.num_tokens) >= limit * n_h * n_w)
        # Keep the first placement whose union leaves room for both static counts; when none
        # does, the one closest to that range (select() still returns disjoint sets).
        union = hidden.sum(axis=-1)
        lo, hi = self.num_target, self.num_tokens - self.num_context
        miss = jnp.maximum(lo - union, 0) + jnp.maximum(union - hi, 0)
        return hidden[jnp.argmin(miss)]

    def select(self, rng, hidden):
        """Exactly num_context / num_target disjoint ascending indices from hidden [B, N] bool.

        Targets prefer hidden tokens, context prefers visible tokens not already targets; ties
        go to the lowest index ('first', the reference's keep-the-first-K) or at random.
        Returns (context [B, num_context], target [B, num_target]) int32.
        """
        batch, n = hidden.shape
        if n != self.num_tokens:
            raise ValueError(f"hidden mask has {n} tokens, grid {self.grid} has {self.num_tokens}")
        hidden = hidden.astype(bool)
        if self.truncation == "first":
            rank = jnp.broadcast_to(jnp.arange(n, dtype=jnp.int32), (batch, n))
        else:
            rank = _random_ranks(rng, (batch, n))
        # Integer keys, all distinct: preference class * N + rank; top_k of -key = smallest keys.
        tgt_key = jnp.where(hidden, 0, n) + rank
        neg_tgt, tgt = jax.lax.top_k(-tgt_key, self.num_target)
        is_tgt = tgt_key <= -neg_tgt[:, -1:]
        ctx_key = jnp.where(is_tgt, 2 * n, jnp.where(hidden, n, 0)) + rank
        _, ctx = jax.lax.top_k(-ctx_key, self.num_context)
        return jnp.sort(ctx, axis=-1).astype(jnp.int32), jnp.sort(tgt, axis=-1).astype(jnp.int32)


def _scale(u, bounds):
    """lo + u * (hi - lo); a Python float when lo == hi so host arithmetic stays exact."""
    lo, hi = bounds
    return lo if lo == hi else lo + u * (hi - lo)


def _random_ranks(rng, shape):
    """A uniformly random permutation of 0..n-1 along the last axis of shape [..., n]: int32."""
    return jnp.argsort(jax.random.bits(rng, shape), axis=-1).astype(jnp.int32)


def _in_interval(n, start, extent):
    """[..., n] bool: position i lies in [start, start + extent)."""
    i = jnp.arange(n)
    return (i >= start[..., None]) & (i < start[..., None] + extent)


# ---------------------------------------------------------------------------------------------
# NumPy re-implementation of the reference collator (VJEPA_SPEC §3.2-3.4, §3.7)


def reference_block_size(np_rng, gen):
    """Reference block extent (t, h, w) as Python ints, float64 host arithmetic (§3.2)."""
    n_t, n_h, n_w = gen.grid

    def draw(bounds):
        return bounds[0] + np_rng.random() * (bounds[1] - bounds[0])

    t = max(1, int(n_t * draw(gen.temporal_scale)))
    n_keep = int(n_h * n_w * draw(gen.spatial_scale))
    a = draw(gen.aspect_ratio)
    h = min(int(round(math.sqrt(n_keep * a))), n_h)
    w = min(int(round(math.sqrt(n_keep / a))), n_w)
    return t, h, w


def reference_visible(np_rng, batch_size, gen):
    """Per-sample context (visible) tokens of the reference, before truncation: [B, N] bool."""
    n_t, n_h, n_w = gen.grid
    visible = np.ones((batch_size, n_t, n_h, n_w), bool)
    if gen.kind == "causal":
        visible[:, gen.context_frames:] = False
    elif gen.kind == "tube":
        spatial = np.zeros((batch_size, n_h * n_w), bool)
        for b in range(batch_size):
            spatial[b, np_rng.permutation(n_h * n_w)[:gen._tube_kept()]] = True
        visible[:] = spatial.reshape(batch_size, 1, n_h, n_w)
    else:
        t, h, w = reference_block_size(np_rng, gen)
        limit = max(1, int(n_t * gen.max_temporal_keep))
        todo = np.arange(batch_size)
        for _ in range(1000):  # the reference re-samples a sample whose context is empty
            visible[todo] = True
            for _ in range(gen.num_blocks):
                starts = np_rng.integers(0, n_t - t + 1, size=todo.size)
                tops = np_rng.integers(0, n_h - h + 1, size=todo.size)
                lefts = np_rng.integers(0, n_w - w + 1, size=todo.size)
                for b, s, y, x in zip(todo, starts, tops, lefts):
                    visible[b, s:s + t, y:y + h, x:x + w] = False
            if limit < n_t:
                visible[todo, limit:] = False
            todo = todo[~visible[todo].any(axis=(1, 2, 3))]
            if todo.size == 0:
                break
        else:
            raise ValueError(f"mask {gen}: block size {(t, h, w)} always hides every token")
    return visible.reshape(batch_size, -1)


def reference_masks(np_rng, batch_size, gen):
    """One reference batch, batch-min truncated (§3.4): (context [B, Kc], target [B, Kt]) int32."""
    visible = reference_visible(np_rng, batch_size, gen)
    k_ctx = int(visible.sum(axis=1).min())
    k_tgt = int((~visible).sum(axis=1).min())
    ctx = np.stack([np.flatnonzero(row)[:k_ctx] for row in visible]).astype(np.int32)
    tgt = np.stack([np.flatnonzero(~row)[:k_tgt] for row in visible]).astype(np.int32)
    return ctx.reshape(batch_size, k_ctx), tgt.reshape(batch_size, k_tgt)


@functools.lru_cache(maxsize=64)
def _mean_batch_min_counts(geometry, batch_size, num_batches, seed):
    """Mean over simulated reference batches of the batch-min (context, target) counts."""
    rng = np.random.default_rng(seed)
    n_ctx, n_tgt = [], []
    for _ in range(num_batches):
        visible = reference_visible(rng, batch_size, geometry).sum(axis=1)
        n_ctx.append(visible.min())
        n_tgt.append((geometry.num_tokens - visible).min())
    return float(np.mean(n_ctx)), float(np.mean(n_tgt))


def reference_counts(gen, batch_size=24, multiple=64, num_batches=200, seed=0):
    """Static (num_context, num_target): reference mean batch-min counts rounded to `multiple`.

    Each count is rounded to the nearest multiple (at least one multiple); if the two then
    exceed N, the target count is rounded down instead.
    """
    if batch_size < 1 or multiple < 1 or num_batches < 1:
        raise ValueError(f"reference_counts needs batch_size={batch_size}, multiple={multiple} "
                         f"and num_batches={num_batches} all >= 1")
    geometry = dataclasses.replace(gen, num_context=0, num_target=0, truncation="first")
    mean_ctx, mean_tgt = _mean_batch_min_counts(geometry, batch_size, num_batches, seed)
    ctx = max(1, math.floor(mean_ctx / multiple + 0.5)) * multiple
    tgt = max(1, math.floor(mean_tgt / multiple + 0.5)) * multiple
    if ctx + tgt > gen.num_tokens:
        tgt = max(1, math.floor(mean_tgt / multiple)) * multiple
    if ctx + tgt > gen.num_tokens:
        raise ValueError(f"mask_count_multiple={multiple} is too coarse for grid {gen.grid} "
                         f"({gen.num_tokens} tokens): counts {ctx} + {tgt} do not fit")
    return ctx, tgt


# ---------------------------------------------------------------------------------------------
# Config and statistics


def generators_from_config(config):
    """One MaskGenerator per entry of config.masks on the token grid of config.model, counts set."""
    m = config.model
    grid = (m.num_frames // m.tubelet_size, m.crop_size // m.patch_size,
            m.crop_size // m.patch_size)
    for key in ("mask_count_multiple", "mask_reference_batch"):
        if config[key] < 1:
            raise ValueError(f"config.{key}={config[key]} must be >= 1")
    gens = []
    for i, mc in enumerate(config.masks):
        try:
            gen = MaskGenerator(
                kind=mc.kind, grid=grid, num_context=mc.num_context, num_target=mc.num_target,
                num_blocks=mc.num_blocks, spatial_scale=mc.spatial_scale,
                temporal_scale=mc.temporal_scale, aspect_ratio=mc.aspect_ratio,
                max_temporal_keep=mc.max_temporal_keep, tube_ratio=mc.tube_ratio,
                context_frames=mc.context_frames, truncation=config.mask_truncation)
            gens.append(gen.with_reference_counts(config.mask_reference_batch,
                                                  config.mask_count_multiple))
        except ValueError as e:
            raise ValueError(f"config.masks[{i}]: {e}") from e
    return gens


def mask_stats(ctx, tgt, grid):
    """Effective ratios of one batch of masks ctx [B, Kc], tgt [B, Kt] on grid (T', H', W')."""
    ctx, tgt = np.asarray(ctx), np.asarray(tgt)
    n = math.prod(grid)
    per_step = grid[1] * grid[2]
    return dict(
        context_fraction=ctx.shape[1] / n,
        target_fraction=tgt.shape[1] / n,
        hidden_fraction=1.0 - ctx.shape[1] / n,  # hidden from the context encoder
        dropped_fraction=1.0 - (ctx.shape[1] + tgt.shape[1]) / n,  # neither seen nor predicted
        last_context_time=float(np.mean(ctx.max(axis=1) // per_step)),
    )
