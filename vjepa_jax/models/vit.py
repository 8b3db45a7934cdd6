"""Video ViT encoder (VJEPA_SPEC §1): tubelet conv, frozen 3-D sin-cos positions, pre-norm blocks.

With `rope` set (V-JEPA 2, §9.2) there is no additive table: every block rotates its queries and
keys by the tokens' (t, h, w) positions (models/rope.py).
"""
import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vjepa_jax.models import pos_embed, rope as rope_lib
from vjepa_jax.models.attention import resolve_backend
from vjepa_jax.models.block import INIT, layer_norm, run_blocks

# name: (width, depth, heads, mlp hidden)   (VJEPA_SPEC §1.6)
SIZES = {
    "tiny": (192, 12, 3, 768),
    "small": (384, 12, 6, 1536),
    "base": (768, 12, 12, 3072),
    "large": (1024, 24, 16, 4096),
    "huge": (1280, 32, 16, 5120),
    "giant": (1408, 40, 16, 6144),
    "giant_xformers": (1408, 40, 22, 6144),  # V-JEPA 2's ViT-g: 22 heads of 64 (§9.2)
}


@dataclasses.dataclass(frozen=True)
class Shape:
    """Resolved encoder geometry: widths from the size table with config overrides applied."""
    width: int
    depth: int
    num_heads: int
    mlp_hidden: int
    patch_size: int
    tubelet_size: int
    num_frames: int
    crop_size: int

    @property
    def grid(self):
        """(T', H', W') token grid of a full clip."""
        side = self.crop_size // self.patch_size
        return (self.num_frames // self.tubelet_size, side, side)

    @property
    def num_tokens(self):
        return int(np.prod(self.grid))

    def clip(self, batch_size=1):
        """Shape (B, T, S, S, 3) of a batch of full-size clips."""
        return (batch_size, self.num_frames, self.crop_size, self.crop_size, 3)


def shape_from_config(model_cfg):
    """Encoder Shape from `config.model` (variant plus optional width/depth/heads overrides)."""
    if model_cfg.variant not in SIZES:
        raise ValueError(f"model.variant must be one of {sorted(SIZES)}, got {model_cfg.variant!r}")
    width, depth, heads, hidden = SIZES[model_cfg.variant]
    if model_cfg.width:
        hidden = hidden * model_cfg.width // width
        width = model_cfg.width
    depth = model_cfg.depth or depth
    heads = model_cfg.num_heads or heads
    shape = Shape(width, depth, heads, hidden, model_cfg.patch_size, model_cfg.tubelet_size,
                  model_cfg.num_frames, model_cfg.crop_size)
    for key, value, divisor in [("width", width, heads), ("crop_size", shape.crop_size, shape.patch_size),
                                ("num_frames", shape.num_frames, shape.tubelet_size)]:
        if value % divisor:
            raise ValueError(f"model.{key}={value} is not divisible by {divisor}")
    return shape


class VisionTransformer(nn.Module):
    """Clips [B, T, H, W, 3] (normalised float) and optional kept indices [B, K] -> tokens [B, N|K, D]."""
    shape: Shape
    uniform_power: bool = True
    dtype: jnp.dtype = jnp.bfloat16
    attention: str = "xla"
    remat: str = "none"
    scan: bool = False  # one compiled block in a lax.scan (see block.run_blocks)
    rope: str = "none"  # 'none' (sin-cos table) | 'tiled' | 'interleaved' (models/rope.py)
    rescale_init: bool = False  # V-JEPA 2: proj/fc2 init divided by sqrt(2 * layer)
    residual_dtype: jnp.dtype = jnp.float32  # the blocks' residual stream (model.residual_dtype)

    @nn.compact
    def __call__(self, video, indices=None):
        s = self.shape
        if video.shape[1] == 1:  # an image: one tubelet of the repeated frame
            video = jnp.repeat(video, s.tubelet_size, axis=1)
        kernel = (s.tubelet_size, s.patch_size, s.patch_size)
        x = nn.Conv(s.width, kernel, strides=kernel, padding="VALID", dtype=self.dtype,
                    param_dtype=jnp.float32, name="patch_embed",
                    kernel_init=nn.with_logical_partitioning(INIT, (None, None, None, None, "embed")),
                    bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)))(
                        video.astype(self.dtype))
        b, *grid, d = x.shape
        x = x.reshape(b, -1, d).astype(jnp.float32)
        positions = None
        if self.rope == "none":
            x = x + pos_embed.resize_table(pos_embed.sincos_3d(d, s.grid, self.uniform_power),
                                           s.grid, grid)
        else:  # positions of the tokens actually present: the kept indices, or all of them
            kept = jnp.arange(x.shape[1])[None] if indices is None else indices
            positions = jnp.broadcast_to(rope_lib.token_positions(kept, grid), (b, kept.shape[1], 3))
        x = x.astype(self.residual_dtype)  # bfloat16: as the reference's autocast stream
        if indices is not None:  # positions are added before the gather, so kept tokens keep them
            x = jnp.take_along_axis(x, indices[..., None], axis=1)
        backend = resolve_backend(self.attention, self.dtype)
        x = run_blocks(self, x, "blocks", s.depth, s.num_heads, s.mlp_hidden, self.dtype, backend,
                       self.remat, self.scan, self.rope, positions, self.rescale_init)
        return layer_norm("norm")(x)


def encoder_from_config(model_cfg):
    """VisionTransformer built from `config.model` (V-JEPA 1 models have no rope keys: 'none')."""
    return VisionTransformer(shape_from_config(model_cfg), model_cfg.uniform_power,
                             jnp.dtype(model_cfg.dtype), model_cfg.attention, model_cfg.remat,
                             model_cfg.scan_blocks, model_cfg.get("rope", "none"),
                             model_cfg.get("rescale_init", False),
                             jnp.dtype(model_cfg.get("residual_dtype", "float32")))


def init_params(encoder, rng):
    """Boxed params of `encoder` (logical axis names kept), initialised on one zero clip."""
    return encoder.init(rng, jnp.zeros(encoder.shape.clip(1), jnp.float32))["params"]


def abstract_params(encoder):
    """Unboxed jax.ShapeDtypeStruct params of `encoder`; no arrays are created."""
    boxed = jax.eval_shape(lambda k: init_params(encoder, k), jax.random.key(0))
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), nn.unbox(boxed))


def random_init_params(encoder, seed, out_shardings=None):
    """Freshly initialised (unboxed) params of `encoder`: the random-init baseline of every eval."""
    init = jax.jit(lambda k: nn.unbox(init_params(encoder, k)), out_shardings=out_shardings)
    return init(jax.random.key(seed))
