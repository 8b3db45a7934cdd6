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
    """Context tokens [B, Kc, D] + indices [B, Kc], [B, Kt] -> predictions [B, Kt, D]."""
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

    @nn.compact
    def __call__(self, z, ctx_idx, tgt_idx, mask_index):
        x = dense(self.width, ("embed", "pred"), self.dtype, "predictor_embed")(z.astype(self.dtype))
        x = x.astype(jnp.float32)
        # One zero-initialised token per mask generator; all are created so init sees them all.
        tokens = [self.param(f"mask_tokens_{i}", nn.with_logical_partitioning(
            nn.initializers.zeros, (None, None, "pred")), (1, 1, self.width))
            for i in range(self.num_mask_tokens)]
        queries = jnp.broadcast_to(tokens[mask_index % self.num_mask_tokens],
                                   tgt_idx.shape + (self.width,))
        if self.rope == "none":
            table = jnp.asarray(pos_embed.sincos_3d(self.width, self.grid, self.uniform_power))
            x, queries = x + table[ctx_idx], queries + table[tgt_idx]
        x = jnp.concatenate([x, queries], axis=1)  # context first, then target queries
        indices = jnp.concatenate([ctx_idx, tgt_idx], axis=1)
        if self.sort_tokens:
            order = jnp.argsort(indices, axis=1)
            x = jnp.take_along_axis(x, order[..., None], axis=1)
            indices = jnp.take_along_axis(indices, order, axis=1)
        positions = None if self.rope == "none" else rope_lib.token_positions(indices, self.grid)
        backend = resolve_backend(self.attention, self.dtype)
        x = run_blocks(self, x, "predictor_blocks", self.depth, self.num_heads, 4 * self.width,
                       self.dtype, backend, self.remat, self.scan, self.rope, positions,
                       self.rescale_init)
        if self.sort_tokens:  # back to context-then-targets order
            x = jnp.take_along_axis(x, jnp.argsort(order, axis=1)[..., None], axis=1)
        x = layer_norm("predictor_norm")(x)[:, z.shape[1]:]
        return dense(self.out_width, ("pred", "embed"), self.dtype, "predictor_proj")(
            x.astype(self.dtype)).astype(jnp.float32)


def predictor_from_config(model_cfg, shape, num_mask_tokens):
    """Predictor built from `config.model` for an encoder of the given Shape."""
    heads = model_cfg.pred_num_heads or shape.num_heads
    if model_cfg.pred_width % heads:
        raise ValueError(f"model.pred_width={model_cfg.pred_width} is not divisible by {heads} heads")
    return Predictor(model_cfg.pred_width, model_cfg.pred_depth, heads, shape.width, shape.grid,
                     num_mask_tokens, model_cfg.uniform_power, jnp.dtype(model_cfg.dtype),
                     model_cfg.attention, model_cfg.remat, model_cfg.scan_blocks,
                     model_cfg.get("rope", "none"), model_cfg.get("pred_sort_tokens", False),
                     model_cfg.get("rescale_init", False))
