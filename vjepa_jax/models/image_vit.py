"""Image ViT encoder of I-JEPA (IJEPA_SPEC §1): 2-D patch conv, frozen [column, row] sin-cos table.

Takes images [B, H, W, 3] (or one-frame clips [B, 1, H, W, 3], the form the data pipeline
delivers) and returns tokens [B, N, D] in raster order n = row * G + column. The blocks, the
final norm and the init are the video encoder's (models/block.py); only the tokenizer and the
position table differ. Its `shape` is a vit.Shape with one frame and tubelet 1, so code that
sizes inputs from `shape` (num_tokens, clip) works for both encoders.
"""
import flax.linen as nn
import jax.numpy as jnp

from vjepa_jax.models import pos_embed
from vjepa_jax.models.attention import resolve_backend
from vjepa_jax.models.block import INIT, layer_norm, run_blocks
from vjepa_jax.models.vit import Shape, shape_from_config


class ImageTransformer(nn.Module):
    """Images [B, H, W, 3] (normalised float) and optional kept indices [B, K] -> tokens [B, N|K, D]."""
    shape: Shape
    dtype: jnp.dtype = jnp.bfloat16
    attention: str = "xla"
    remat: str = "none"
    scan: bool = False

    @nn.compact
    def __call__(self, images, indices=None):
        s = self.shape
        if images.ndim == 5:  # one-frame clips from the video pipeline
            if images.shape[1] != 1:
                raise ValueError(f"the image encoder takes images [B, H, W, 3] or [B, 1, H, W, 3], "
                                 f"got {images.shape}")
            images = images[:, 0]
        if images.shape[1] != s.crop_size or images.shape[2] != s.crop_size:
            # The official encoder cannot change resolution either (IJEPA_SPEC §1.2).
            raise ValueError(f"images of {images.shape[1]}x{images.shape[2]} px; this encoder is "
                             f"built for {s.crop_size}x{s.crop_size}")
        kernel = (s.patch_size, s.patch_size)
        x = nn.Conv(s.width, kernel, strides=kernel, padding="VALID", dtype=self.dtype,
                    param_dtype=jnp.float32, name="patch_embed",
                    kernel_init=nn.with_logical_partitioning(INIT, (None, None, None, "embed")),
                    bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)))(
                        images.astype(self.dtype))
        b, _, side, d = x.shape
        # Out of place, as the reference: the residual stream is float32 from here on.
        x = x.reshape(b, -1, d).astype(jnp.float32) + pos_embed.sincos_2d_ijepa(d, side)
        if indices is not None:
            x = jnp.take_along_axis(x, indices[..., None], axis=1)
        backend = resolve_backend(self.attention, self.dtype)
        x = run_blocks(self, x, "blocks", s.depth, s.num_heads, s.mlp_hidden, self.dtype, backend,
                       self.remat, self.scan)
        return layer_norm("norm")(x)


def encoder_from_config(model_cfg):
    """ImageTransformer built from an I-JEPA `config.model` (num_frames = tubelet_size = 1)."""
    if model_cfg.num_frames != 1 or model_cfg.tubelet_size != 1:
        raise ValueError(f"model.num_frames={model_cfg.num_frames} and model.tubelet_size="
                         f"{model_cfg.tubelet_size}: an image encoder needs both 1")
    return ImageTransformer(shape_from_config(model_cfg), jnp.dtype(model_cfg.dtype), model_cfg.attention,
                            model_cfg.remat, model_cfg.scan_blocks)
