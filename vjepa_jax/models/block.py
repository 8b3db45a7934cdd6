"""Pre-norm transformer block shared by the encoder and the predictor (VJEPA_SPEC §1.3)."""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from vjepa_jax.models.attention import attention

# Every Linear and the patch conv: N(0, 0.02) without truncation, biases 0 (VJEPA_SPEC §1.4).
INIT = nn.initializers.normal(stddev=0.02)
LN_EPS = 1e-6


def dense(features, names, dtype, name):
    """Linear layer with the reference init and logical axis names (in, out) for sharding."""
    return nn.Dense(features, dtype=dtype, param_dtype=jnp.float32, name=name,
                    kernel_init=nn.with_logical_partitioning(INIT, names),
                    bias_init=nn.with_logical_partitioning(nn.initializers.zeros, names[1:]))


def layer_norm(name, eps=LN_EPS):
    """Affine LayerNorm computed and returned in float32."""
    return nn.LayerNorm(epsilon=eps, dtype=jnp.float32, param_dtype=jnp.float32, name=name,
                        scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("norm",)),
                        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("norm",)))


class Block(nn.Module):
    """x + Attn(LN(x)), then x + MLP(LN(x)); x [B, L, D] float32 -> [B, L, D] float32."""
    num_heads: int
    mlp_hidden: int
    dtype: jnp.dtype = jnp.bfloat16
    attention: str = "xla"

    @nn.compact
    def __call__(self, x):
        b, l, d = x.shape
        y = layer_norm("norm1")(x).astype(self.dtype)
        # Fused qkv, output columns ordered (q|k|v) x head x head_dim like the reference.
        qkv = dense(3 * d, ("embed", "qkv"), self.dtype, "qkv")(y)
        q, k, v = jnp.moveaxis(qkv.reshape(b, l, 3, self.num_heads, d // self.num_heads), 2, 0)
        y = attention(q, k, v, self.attention).reshape(b, l, d)
        x = x + dense(d, ("qkv", "embed"), self.dtype, "proj")(y).astype(jnp.float32)

        y = layer_norm("norm2")(x).astype(self.dtype)
        y = dense(self.mlp_hidden, ("embed", "mlp"), self.dtype, "fc1")(y)
        y = jax.nn.gelu(y, approximate=False)  # exact erf GELU, as torch nn.GELU()
        return x + dense(d, ("mlp", "embed"), self.dtype, "fc2")(y).astype(jnp.float32)


def block_class(remat):
    """Block, optionally rematerialised: 'none' | 'full' (recompute all) | 'dots' (save matmuls)."""
    if remat == "none":
        return Block
    if remat == "full":
        return nn.remat(Block)
    if remat == "dots":
        return nn.remat(Block, policy=jax.checkpoint_policies.dots_with_no_batch_dims_saveable)
    raise ValueError(f"model.remat must be 'none', 'full' or 'dots', got {remat!r}")


def run_blocks(module, x, prefix, depth, num_heads, mlp_hidden, dtype, attention, remat, scan):
    """Apply `depth` blocks named prefix_0 .. prefix_{depth-1} to x inside `module`'s compact call.

    scan=False unrolls the loop: XLA compiles every block separately. scan=True runs one block in
    a jax.lax.scan over the blocks' parameters stacked on a new leading axis, so the block is
    compiled once (compile time no longer grows with depth). The parameters keep the same names
    and layout either way, so checkpoints, conversion and evaluation do not depend on the
    choice; the cost of scan is a transient stacked copy of the block parameters (and of their
    gradients) per step. Initialisation always takes the unrolled path to create the params.
    """
    make = functools.partial(block_class(remat), num_heads, mlp_hidden, dtype, attention)
    if not scan or module.is_initializing():
        for i in range(depth):
            x = make(name=f"{prefix}_{i}")(x)
        return x
    params = module.variables["params"]
    per_block = [nn.unbox(params[f"{prefix}_{i}"]) for i in range(depth)]
    stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves), *per_block)
    block = make(parent=None)  # unbound: applied to one slice of the stack per iteration
    return jax.lax.scan(lambda h, p: (block.apply({"params": p}, h), None), x, stacked)[0]
