"""Pre-norm transformer block shared by the encoder and the predictor (VJEPA_SPEC §1.3)."""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from vjepa_jax.models import rope as rope_lib
from vjepa_jax.models.attention import attention

# Every Linear and the patch conv: N(0, 0.02) without truncation, biases 0 (VJEPA_SPEC §1.4).
INIT = nn.initializers.normal(stddev=0.02)
LN_EPS = 1e-6


def dense(features, names, dtype, name, init=INIT):
    """Linear layer with the reference init and logical axis names (in, out) for sharding."""
    return nn.Dense(features, dtype=dtype, param_dtype=jnp.float32, name=name,
                    kernel_init=nn.with_logical_partitioning(init, names),
                    bias_init=nn.with_logical_partitioning(nn.initializers.zeros, names[1:]))


def layer_norm(name, eps=LN_EPS):
    """Affine LayerNorm computed and returned in float32."""
    return nn.LayerNorm(epsilon=eps, dtype=jnp.float32, param_dtype=jnp.float32, name=name,
                        scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("norm",)),
                        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("norm",)))


class Block(nn.Module):
    """x + Attn(LN(x)), then x + MLP(LN(x)); x [B, L, D] -> [B, L, D] of the same dtype.

    The residual stream keeps x's dtype (model.residual_dtype: float32 by default, bfloat16 as
    the reference's autocast encoder); LayerNorm statistics are float32 either way and the
    sublayer outputs are cast to x's dtype before they are added. kv_lengths [B] (optional):
    only the first kv_lengths[b] tokens of sequence b are attended to (padded sequences, see
    Predictor's fused call); the padded tokens still get outputs, which the caller discards.

    rope != 'none' (V-JEPA 2): q and k are rotated by the tokens' (t, h, w) positions [B, L, 3]
    before the attention kernel (models/rope.py). rescale_init: the output projections `proj`
    and `fc2` start at std 0.02 / sqrt(2 * layer_id) (layer_id 1-based), the depth rescale V-JEPA 1
    undoes by re-initialising and V-JEPA 2 keeps (VJEPA_SPEC §1.4).
    """
    num_heads: int
    mlp_hidden: int
    dtype: jnp.dtype = jnp.bfloat16
    attention: str = "xla"
    rope: str = "none"
    layer_id: int = 1
    rescale_init: bool = False

    @nn.compact
    def __call__(self, x, positions=None, kv_lengths=None):
        b, l, d = x.shape
        out_init = (nn.initializers.normal(stddev=0.02 / (2.0 * self.layer_id) ** 0.5)
                    if self.rescale_init else INIT)
        y = layer_norm("norm1")(x).astype(self.dtype)
        # Fused qkv, output columns ordered (q|k|v) x head x head_dim like the reference.
        qkv = dense(3 * d, ("embed", "qkv"), self.dtype, "qkv")(y)
        q, k, v = jnp.moveaxis(qkv.reshape(b, l, 3, self.num_heads, d // self.num_heads), 2, 0)
        if self.rope != "none":
            q, k = rope_lib.rotate(q, positions, self.rope), rope_lib.rotate(k, positions, self.rope)
        y = attention(q, k, v, self.attention, kv_lengths=kv_lengths).reshape(b, l, d)
        x = x + dense(d, ("qkv", "embed"), self.dtype, "proj", out_init)(y).astype(x.dtype)

        y = layer_norm("norm2")(x).astype(self.dtype)
        y = dense(self.mlp_hidden, ("embed", "mlp"), self.dtype, "fc1")(y)
        y = jax.nn.gelu(y, approximate=False)  # exact erf GELU, as torch nn.GELU()
        return x + dense(d, ("mlp", "embed"), self.dtype, "fc2", out_init)(y).astype(x.dtype)


def block_class(remat):
    """Block, optionally rematerialised: 'none' | 'full' (recompute all) | 'dots' (save matmuls)."""
    if remat == "none":
        return Block
    if remat == "full":
        return nn.remat(Block)
    if remat == "dots":
        return nn.remat(Block, policy=jax.checkpoint_policies.dots_with_no_batch_dims_saveable)
    raise ValueError(f"model.remat must be 'none', 'full' or 'dots', got {remat!r}")


def run_blocks(module, x, prefix, depth, num_heads, mlp_hidden, dtype, attention, remat, scan,
               rope="none", positions=None, rescale_init=False, kv_lengths=None):
    """Apply `depth` blocks named prefix_0 .. prefix_{depth-1} to x inside `module`'s compact call.

    rope / positions [B, L, 3] / rescale_init / kv_lengths [B]: as Block (shared by all
    blocks). The residual stream keeps x's dtype through every block.

    scan=False unrolls the loop: XLA compiles every block separately. scan=True runs one block in
    a jax.lax.scan over the blocks' parameters stacked on a new leading axis, so the block is
    compiled once (compile time no longer grows with depth). The parameters keep the same names
    and layout either way, so checkpoints, conversion and evaluation do not depend on the
    choice; the cost of scan is a transient stacked copy of the block parameters (and of their
    gradients) per step. Initialisation always takes the unrolled path to create the params.
    """
    make = functools.partial(block_class(remat), num_heads, mlp_hidden, dtype, attention, rope,
                             rescale_init=rescale_init)
    if not scan or module.is_initializing():
        for i in range(depth):
            x = make(layer_id=i + 1, name=f"{prefix}_{i}")(x, positions, kv_lengths)
        return x
    params = module.variables["params"]
    per_block = [nn.unbox(params[f"{prefix}_{i}"]) for i in range(depth)]
    stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves), *per_block)
    block = make(parent=None)  # unbound: applied to one slice of the stack per iteration
    return jax.lax.scan(lambda h, p: (block.apply({"params": p}, h, positions, kv_lengths), None),
                        x, stacked)[0]
