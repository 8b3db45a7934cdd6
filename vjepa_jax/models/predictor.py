"""Narrow transformer predicting target-token features from context tokens (VJEPA_SPEC §2)."""
import flax.linen as nn
import jax.numpy as jnp

from vjepa_jax.models import pos_embed
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

    @nn.compact
    def __call__(self, z, ctx_idx, tgt_idx, mask_index):
        table = jnp.asarray(pos_embed.sincos_3d(self.width, self.grid, self.uniform_power))
        x = dense(self.width, ("embed", "pred"), self.dtype, "predictor_embed")(z.astype(self.dtype))
        x = x.astype(jnp.float32) + table[ctx_idx]
        # One zero-initialised token per mask generator; all are created so init sees them all.
        tokens = [self.param(f"mask_tokens_{i}", nn.with_logical_partitioning(
            nn.initializers.zeros, (None, None, "pred")), (1, 1, self.width))
            for i in range(self.num_mask_tokens)]
        queries = tokens[mask_index % self.num_mask_tokens] + table[tgt_idx]
        x = jnp.concatenate([x, queries], axis=1)  # context first, then target queries
        backend = resolve_backend(self.attention, self.dtype)
        x = run_blocks(self, x, "predictor_blocks", self.depth, self.num_heads, 4 * self.width,
                       self.dtype, backend, self.remat, self.scan)
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
                     model_cfg.attention, model_cfg.remat, model_cfg.scan_blocks)
