"""I-JEPA's masks (IJEPA_SPEC §3), sampled inside jit with static token counts.

Per batch, one target-block size (h, w) shared by all M = 4 target blocks of every image and
one context-block size, each from ONE uniform that drives both the scale and the aspect ratio;
per image, independent positions. Blocks are at most G-1 on a side and start in [0, G-size-1],
so the last row and column of the grid are never inside a block. The context is the context
block minus every target token. Tokens are numbered in raster order n = row * G + column.

The reference cuts every image's context to the batch minimum (keeping the lowest indices),
so its context size depends on the per-GPU batch. Here both counts are static: `num_target`
tokens per block (a larger block keeps a subset, a smaller one takes its nearest neighbours
outside the box, never from the last row or column) and `num_context` context tokens, by
default the reference's mean counts at `reference_batch` (`reference_counts`, from the NumPy
re-implementation of the reference collator below). `truncation='first'` keeps the lowest
indices like the reference (its context then loses bottom rows first); 'random' a random subset.
"""
import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

TRUNCATIONS = ("random", "first")
MIN_KEEP = 10  # the reference's min_keep: a context must keep more than this many tokens


@dataclasses.dataclass(frozen=True)
class BlockMasks:
    """The I-JEPA mask generator of one grid; hashable, so it can be a static argument of jit."""
    side: int = 16  # grid side G = crop / patch
    num_blocks: int = 4  # target blocks per image (M)
    target_scale: tuple = (0.15, 0.2)
    aspect_ratio: tuple = (0.75, 1.5)  # target blocks, h / w
    context_scale: tuple = (0.85, 1.0)  # the context block is square
    num_target: int = 0  # tokens per target block
    num_context: int = 0
    truncation: str = "random"
    num_tries: int = 8  # target placements per image; the first leaving num_context is kept

    def __post_init__(self):
        set_ = functools.partial(object.__setattr__, self)
        if self.truncation not in TRUNCATIONS:
            raise ValueError(f"mask truncation={self.truncation!r} is not one of {TRUNCATIONS}")
        for name in ("side", "num_blocks", "num_target", "num_context", "num_tries"):
            set_(name, int(getattr(self, name)))
        for name in ("target_scale", "aspect_ratio", "context_scale"):
            value = tuple(float(v) for v in getattr(self, name))
            if len(value) != 2 or not 0 < value[0] <= value[1]:
                raise ValueError(f"mask {name}={getattr(self, name)!r} must be (lo, hi) with "
                                 "0 < lo <= hi")
            set_(name, value)
        if self.target_scale[1] > 1 or self.context_scale[1] > 1:
            raise ValueError(f"mask target_scale={self.target_scale} and context_scale="
                             f"{self.context_scale} must lie in (0, 1]")
        if self.side < 2 or self.num_blocks < 1 or self.num_tries < 1:
            raise ValueError(f"mask side={self.side}, num_blocks={self.num_blocks} and num_tries="
                             f"{self.num_tries} must be >= 2, >= 1 and >= 1")
        if self.num_context < 0 or self.num_target < 0:
            raise ValueError(f"mask num_context={self.num_context} and num_target="
                             f"{self.num_target} must be >= 0")
        # Context and targets are disjoint: the context must fit beside every target token.
        if self.num_context + self.num_blocks * self.num_target > self.num_tokens:
            raise ValueError(f"mask num_context={self.num_context} + {self.num_blocks} x "
                             f"num_target={self.num_target} exceeds the {self.num_tokens} tokens "
                             f"of a {self.side}x{self.side} grid")

    @property
    def num_tokens(self):
        return self.side * self.side

    @property
    def grid(self):
        return (1, self.side, self.side)

    @property
    def kind(self):
        return "blocks"

    def with_reference_counts(self, batch_size=128, num_batches=400, seed=0):
        """Copy with unset (0) counts replaced by `reference_counts(...)`."""
        if self.num_context and self.num_target:
            return self
        ctx, tgt = reference_counts(self, batch_size, num_batches, seed)
        return dataclasses.replace(self, num_context=self.num_context or ctx,
                                   num_target=self.num_target or tgt)

    def block_size(self, u, scale, aspect):
        """(h, w) int32 of a block from one uniform u, as the reference (§3.2)."""
        g = self.side
        s = scale[0] + u * (scale[1] - scale[0])
        keep = jnp.floor(g * g * s)
        a = aspect[0] + u * (aspect[1] - aspect[0])
        h = jnp.minimum(jnp.round(jnp.sqrt(keep * a)), g - 1).astype(jnp.int32)
        w = jnp.minimum(jnp.round(jnp.sqrt(keep / a)), g - 1).astype(jnp.int32)
        return h, w

    def sample(self, rng, batch_size):
        """Masks of one batch: (context [B, num_context], targets [M, B, num_target]) int32."""
        if not self.num_context or not self.num_target:
            raise ValueError("BlockMasks counts are not set: use with_reference_counts() or "
                             "generators_from_config()")
        k_size, k_pos, k_rank = jax.random.split(rng, 3)
        u_size = jax.random.uniform(k_size, (2,))
        target_hw = self.block_size(u_size[0], self.target_scale, self.aspect_ratio)
        context_hw = self.block_size(u_size[1], self.context_scale, (1.0, 1.0))
        u = jax.random.uniform(k_pos, (batch_size, self.num_tries, self.num_blocks + 1, 2))
        ranks = jax.random.split(k_rank, batch_size)
        ctx, tgt = jax.vmap(self._one, in_axes=(0, 0, None, None))(u, ranks, target_hw, context_hw)
        return ctx, jnp.moveaxis(tgt, 0, 1)

    def _box(self, u, hw):
        """[..., N] bool of a box of size hw at uniform position u [..., 2] (top, left)."""
        g = self.side
        h, w = hw
        top = jnp.floor(u[..., 0] * (g - h)).astype(jnp.int32)  # in [0, G - h - 1]
        left = jnp.floor(u[..., 1] * (g - w)).astype(jnp.int32)
        i = jnp.arange(g)
        rows = (i >= top[..., None]) & (i < top[..., None] + h)
        cols = (i >= left[..., None]) & (i < left[..., None] + w)
        return (rows[..., :, None] & cols[..., None, :]).reshape(*rows.shape[:-1], g * g)

    def _one(self, u, rng, target_hw, context_hw):
        """One image: (context [Kc], targets [M, Kt]) from uniforms u [tries, M + 1, 2]."""
        g, n = self.side, self.num_tokens
        row, col = jnp.arange(n) // g, jnp.arange(n) % g
        edge = (row == g - 1) | (col == g - 1)  # never inside a block
        if self.truncation == "first":
            rank = jnp.arange(n, dtype=jnp.int32)
        else:
            rank = jnp.argsort(jax.random.bits(rng, (n,))).astype(jnp.int32)
        boxes = self._box(u[:, :-1], target_hw)  # [tries, M, N]
        context_box = self._box(u[:, -1], context_hw)  # [tries, N]
        # Chebyshev distance of every token to each box, for the tokens a small block borrows.
        r_in = jnp.where(boxes, row, -1)
        c_in = jnp.where(boxes, col, -1)
        top, bottom = jnp.min(jnp.where(boxes, row, g), -1), jnp.max(r_in, -1)
        left, right = jnp.min(jnp.where(boxes, col, g), -1), jnp.max(c_in, -1)
        dist = jnp.maximum(jnp.maximum(top[..., None] - row, row - bottom[..., None]),
                           jnp.maximum(left[..., None] - col, col - right[..., None]))
        key = jnp.where(boxes, 0, jnp.where(edge, (g + 1) * n, jnp.maximum(dist, 1) * n)) + rank
        _, tgt = jax.lax.top_k(-key, self.num_target)  # [tries, M, Kt]
        chosen = jnp.zeros(boxes.shape, bool).at[
            jnp.arange(self.num_tries)[:, None, None], jnp.arange(self.num_blocks)[None, :, None],
            tgt].set(True).any(axis=1)  # [tries, N]: union of the target sets
        # The first placement whose context keeps num_context tokens; else the one keeping most.
        room = jnp.sum(context_box & ~chosen, -1)
        t = jnp.argmax(room >= self.num_context) if self.num_tries > 1 else 0
        t = jnp.where(jnp.any(room >= self.num_context), t, jnp.argmax(room))
        union, cbox = chosen[t], context_box[t]
        ctx_key = jnp.where(union, 4 * n, jnp.where(cbox, 0, jnp.where(edge, 2 * n, n))) + rank
        _, ctx = jax.lax.top_k(-ctx_key, self.num_context)
        return jnp.sort(ctx).astype(jnp.int32), jnp.sort(tgt[t], -1).astype(jnp.int32)


# ---------------------------------------------------------------------------------------------
# NumPy re-implementation of the reference collator (IJEPA_SPEC §3.2-3.5)


def reference_block_size(u, side, scale, aspect):
    """(h, w) Python ints of the reference's _sample_block_size for one uniform u."""
    s = scale[0] + u * (scale[1] - scale[0])
    keep = int(side * side * s)
    a = aspect[0] + u * (aspect[1] - aspect[0])
    h, w = int(round(math.sqrt(keep * a))), int(round(math.sqrt(keep / a)))
    return min(h, side - 1), min(w, side - 1)


def reference_masks(np_rng, batch_size, gen, batch_seed=None):
    """One reference batch, batch-min truncated: (context [B, K_enc], targets [M, B, K_pred]).

    batch_seed: the uniform u of the size draws is taken from a generator seeded with it, as the
    reference seeds each batch with its counter; default: from np_rng.
    """
    g = gen.side
    size_rng = np_rng if batch_seed is None else np.random.default_rng(batch_seed)
    th, tw = reference_block_size(size_rng.random(), g, gen.target_scale, gen.aspect_ratio)
    ch, cw = reference_block_size(size_rng.random(), g, gen.context_scale, (1.0, 1.0))

    def box(h, w):
        top, left = np_rng.integers(0, g - h), np_rng.integers(0, g - w)  # exclusive upper bound
        m = np.zeros((g, g), bool)
        m[top:top + h, left:left + w] = True
        return m.reshape(-1)

    contexts, targets = [], []
    for _ in range(batch_size):
        blocks = [box(th, tw) for _ in range(gen.num_blocks)]
        targets.append([np.flatnonzero(b) for b in blocks])
        union = np.any(blocks, axis=0)
        for _ in range(20):  # re-draw a context that keeps too few tokens (never seen in §3.7)
            ctx = box(ch, cw) & ~union
            if ctx.sum() > MIN_KEEP:
                break
        contexts.append(np.flatnonzero(ctx))
    k_enc = min(len(c) for c in contexts)
    ctx = np.stack([c[:k_enc] for c in contexts]).astype(np.int32)
    tgt = np.stack([np.stack(t) for t in targets], axis=1).astype(np.int32)  # all blocks th*tw
    return ctx, tgt


@functools.lru_cache(maxsize=32)
def _mean_reference_counts(geometry, batch_size, num_batches, seed):
    rng = np.random.default_rng(seed)
    n_ctx, n_tgt = [], []
    for _ in range(num_batches):
        ctx, tgt = reference_masks(rng, batch_size, geometry)
        n_ctx.append(ctx.shape[1])
        n_tgt.append(tgt.shape[2])
    return float(np.mean(n_ctx)), float(np.mean(n_tgt))


def reference_counts(gen, batch_size=128, num_batches=400, seed=0):
    """Static (num_context, num_target): the reference's mean counts at this per-GPU batch,
    rounded; the target count by the exact size distribution (a fine sweep of u, §3.2)."""
    if batch_size < 1 or num_batches < 1:
        raise ValueError(f"reference_counts needs batch_size={batch_size} and num_batches="
                         f"{num_batches} >= 1")
    geometry = dataclasses.replace(gen, num_context=0, num_target=0, truncation="first")
    mean_ctx, _ = _mean_reference_counts(geometry, batch_size, num_batches, seed)
    sizes = [math.prod(reference_block_size(u, gen.side, gen.target_scale, gen.aspect_ratio))
             for u in (np.arange(20000) + 0.5) / 20000]
    ctx, tgt = math.floor(mean_ctx + 0.5), math.floor(float(np.mean(sizes)) + 0.5)
    ctx = min(ctx, gen.num_tokens - gen.num_blocks * tgt)
    return max(1, ctx), max(1, tgt)


# ---------------------------------------------------------------------------------------------
# Config and statistics


def generators_from_config(config):
    """The one BlockMasks of an I-JEPA config on the grid of config.model, counts set."""
    m, c = config.model, config.masks
    if config.mask_reference_batch < 1:
        raise ValueError(f"config.mask_reference_batch={config.mask_reference_batch} must be >= 1")
    try:
        gen = BlockMasks(side=m.crop_size // m.patch_size, num_blocks=c.num_blocks,
                         target_scale=c.target_scale, aspect_ratio=c.aspect_ratio,
                         context_scale=c.context_scale, num_target=c.num_target,
                         num_context=c.num_context, truncation=config.mask_truncation)
        return [gen.with_reference_counts(config.mask_reference_batch)]
    except ValueError as e:
        raise ValueError(f"config.masks: {e}") from e


def mask_stats(ctx, tgt, side):
    """Effective ratios of one batch: ctx [B, Kc], tgt [M, B, Kt] on a side x side grid."""
    ctx, tgt = np.asarray(ctx), np.asarray(tgt)
    n = side * side
    union = np.zeros((tgt.shape[1], n), bool)
    for block in tgt:
        np.put_along_axis(union, block, True, axis=1)
    return dict(context_fraction=ctx.shape[1] / n, target_fraction=tgt.shape[2] / n,
                union_fraction=float(union.sum(1).mean()) / n)
