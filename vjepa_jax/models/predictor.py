"""Narrow transformer predicting target-token features from context tokens (VJEPA_SPEC §2).

V-JEPA 2 (§9.2) sets `rope` (no additive table: the blocks rotate q and k by each token's
position), `sort_tokens` (context and target tokens sorted by token index before the blocks and
restored after, as the reference does; attention is order-equivariant, so the output is the
same up to rounding) and `rescale_init`.
"""
import flax.linen as nn
import jax.numpy as jnp

from vjepa_jax.models import pos_embed, rope as rope_lib
from vjepa_jax.models.attention import resolve_backend
from vjepa_jax.models.block import dense, layer_norm, run_blocks


class Predictor(nn.Module):
    """Context tokens [B, Kc, D] + indices [B, Kc], [B, Kt] -> predictions [B, Kt, D].

    Called with tuples (one entry per mask generator) instead of single arrays, it predicts for
    all of them in one pass of the blocks and returns a tuple: each generator's sequence of
    Kc_i + Kt_i tokens is padded at the end to the longest one and the sequences are stacked on
    the batch axis ([G * B, L, Dp]); the attention's key padding (kv_lengths) keeps every real
    token from attending to a padded one, and the padded outputs are dropped, so the predictions
    equal the separate calls' up to float rounding (model.fuse_predictor; methods/vjepa/loss.py).
    """
    width: int  # predictor width Dp (384 in the reference)
    depth: int
    num_heads: int
    out_width: int  # encoder width D
    grid: tuple
    num_mask_tokens: int
    uniform_power: bool = True
    dtype: jnp.dtype = jnp.bfloat16
    attention: str = "xla"
    remat: str = "none"
    scan: bool = False  # one compiled block in a lax.scan (see block.run_blocks)
    rope: str = "none"  # 'none' (sin-cos table) | 'tiled' | 'interleaved' (models/rope.py)
    sort_tokens: bool = False
    rescale_init: bool = False
    residual_dtype: jnp.dtype = jnp.float32  # the blocks' residual stream (model.residual_dtype)
    fuse: bool = False  # model.fuse_predictor: the loss passes all generators in one call

    @nn.compact
    def __call__(self, z, ctx_idx, tgt_idx, mask_index):
        fused = isinstance(z, (tuple, list))
        args = (z, ctx_idx, tgt_idx, mask_index) if fused else ((z,), (ctx_idx,), (tgt_idx,),
                                                                  (mask_index,))
        embed = dense(self.width, ("embed", "pred"), self.dtype, "predictor_embed")
        embedded = [embed(z_i.astype(self.dtype)).astype(jnp.float32) for z_i in args[0]]
        # One zero-initialised token per mask generator; all are created so init sees them all.
        tokens = [self.param(f"mask_tokens_{i}", nn.with_logical_partitioning(
            nn.initializers.zeros, (None, None, "pred")), (1, 1, self.width))
            for i in range(self.num_mask_tokens)]
        seqs, orders = [], []
        for x, ctx, tgt, index in zip(embedded, *args[1:]):
            queries = jnp.broadcast_to(tokens[index % self.num_mask_tokens],
                                       tgt.shape + (self.width,))
            if self.rope == "none":
                table = jnp.asarray(pos_embed.sincos_3d(self.width, self.grid, self.uniform_power))
                x, queries = x + table[ctx], queries + table[tgt]
            x = jnp.concatenate([x, queries], axis=1)  # context first, then target queries
            indices = jnp.concatenate([ctx, tgt], axis=1)
            order = None
            if self.sort_tokens:
                order = jnp.argsort(indices, axis=1)
                x = jnp.take_along_axis(x, order[..., None], axis=1)
                indices = jnp.take_along_axis(indices, order, axis=1)
            seqs.append((x, indices))
            orders.append(order)
        lengths = [x.shape[1] for x, _ in seqs]
        x, indices, kv_lengths = pad_and_stack(seqs) if fused else (*seqs[0], None)
        positions = None if self.rope == "none" else rope_lib.token_positions(indices, self.grid)
        backend = resolve_backend(self.attention, self.dtype)
        x = run_blocks(self, x.astype(self.residual_dtype), "predictor_blocks", self.depth,
                       self.num_heads, 4 * self.width, self.dtype, backend, self.remat, self.scan,
                       self.rope, positions, self.rescale_init, kv_lengths)
        norm = layer_norm("predictor_norm")
        proj = dense(self.out_width, ("pred", "embed"), self.dtype, "predictor_proj")
        outs = []
        for i, (z_i, order) in enumerate(zip(args[0], orders)):
            b = z_i.shape[0]
            x_i = x[i * b:(i + 1) * b, :lengths[i]] if fused else x
            if self.sort_tokens:  # back to context-then-targets order
                x_i = jnp.take_along_axis(x_i, jnp.argsort(order, axis=1)[..., None], axis=1)
            x_i = norm(x_i)[:, z_i.shape[1]:]
            outs.append(proj(x_i.astype(self.dtype)).astype(jnp.float32))
        return tuple(outs) if fused else outs[0]


def pad_and_stack(seqs):
    """[(x [B, L_i, Dp], indices [B, L_i])] -> x [G * B, L, Dp], indices [G * B, L], kv_lengths
    [G * B]: every sequence zero-padded at the end to L = max L_i (padded indices point at token
    0, a valid position that the key padding hides) and the generators stacked on the batch axis."""
    length = max(x.shape[1] for x, _ in seqs)
    xs, idxs, lens = [], [], []
    for x, indices in seqs:
        pad = length - x.shape[1]
        xs.append(jnp.pad(x, ((0, 0), (0, pad), (0, 0))))
        idxs.append(jnp.pad(indices, ((0, 0), (0, pad))))
        lens.append(jnp.full((x.shape[0],), x.shape[1], jnp.int32))
    return jnp.concatenate(xs), jnp.concatenate(idxs), jnp.concatenate(lens)


def predictor_from_config(model_cfg, shape, num_mask_tokens):
    """Predictor built from `config.model` for an encoder of the given Shape."""
    heads = model_cfg.pred_num_heads or shape.num_heads
    if model_cfg.pred_width % heads:
        raise ValueError(f"model.pred_width={model_cfg.pred_width} is not divisible by {heads} heads")
    return Predictor(model_cfg.pred_width, model_cfg.pred_depth, heads, shape.width, shape.grid,
                     num_mask_tokens, model_cfg.uniform_power, jnp.dtype(model_cfg.dtype),
                     model_cfg.attention, model_cfg.remat, model_cfg.scan_blocks,
                     model_cfg.get("rope", "none"), model_cfg.get("pred_sort_tokens", False),
                     model_cfg.get("rescale_init", False),
                     jnp.dtype(model_cfg.get("residual_dtype", "float32")),
                     model_cfg.get("fuse_predictor", False))
