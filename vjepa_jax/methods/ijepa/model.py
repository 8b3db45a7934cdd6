"""The I-JEPA model bundle built from a config: image encoder, predictor, block masks and loss.

The same interface as methods/vjepa/model.py (docs/ARCHITECTURE.md, "The method seam"). One
encoder call on the context and one predictor call on all M target blocks stacked on the batch
axis per step, where V-JEPA calls both once per mask generator.
"""
import dataclasses

import jax
import jax.numpy as jnp

from vjepa_jax import flops
from vjepa_jax.methods import check_key
from vjepa_jax.methods.ijepa import loss as loss_lib, masks as masks_lib
from vjepa_jax.models import image_predictor, image_vit, vit


def validate(config):
    """Raise one ValueError naming the first unusable model or mask key of an I-JEPA config."""
    m = config.model
    check_key(m.dtype in ("float32", "bfloat16", "float16"), "model.dtype", m.dtype,
           "float32, bfloat16 or float16")
    for key in ("patch_size", "crop_size", "pred_width", "pred_depth"):
        check_key(isinstance(m[key], int) and m[key] > 0, f"model.{key}", m[key], "a positive integer")
    # model.num_frames / tubelet_size must be 1: image_vit.encoder_from_config checks it, for
    # the programs that build the encoder without validating a whole config too.
    check_key(config.data.num_clips == 1, "data.num_clips", config.data.num_clips, "1")


@dataclasses.dataclass(frozen=True)
class IJEPA:
    """Modules and the mask generator of one I-JEPA pretraining config."""
    encoder: image_vit.ImageTransformer
    predictor: image_predictor.ImagePredictor
    generators: tuple  # one masks.BlockMasks

    def init(self, rng):
        """Boxed params {'encoder', 'predictor'} (logical axis names kept for sharding)."""
        g = self.generators[0]
        ctx = jnp.zeros((1, g.num_context), jnp.int32)
        tgt = jnp.zeros((g.num_blocks, 1, g.num_target), jnp.int32)
        z = jnp.zeros((1, g.num_context, self.encoder.shape.width), jnp.float32)
        k_enc, k_pred = jax.random.split(rng)
        return {"encoder": vit.init_params(self.encoder, k_enc),
                "predictor": self.predictor.init(k_pred, z, ctx, tgt)["params"]}

    def sample_masks(self, rng, batch_size):
        """(context [B, Kc], targets [M, B, Kt]) int32."""
        return self.generators[0].sample(rng, batch_size)

    def loss(self, params, target_params, images, masks):
        """(loss, aux) of loss.loss_fn."""
        return loss_lib.loss_fn(params, target_params, self.encoder, self.predictor, images, masks)

    def describe(self):
        g = self.generators[0]
        return [f"masks: {g.num_context} context + {g.num_blocks} x {g.num_target} target of "
                f"{g.num_tokens} tokens ({g.side}x{g.side} grid, truncation {g.truncation})"]

    def meta(self):
        g = self.generators[0]
        return {"masks": [{"kind": "blocks", "num_context": g.num_context,
                           "num_target": g.num_target, "num_blocks": g.num_blocks}]}

    def flops(self, batch_size):
        """Model FLOPs of one train step (matmuls + attention; flops.py says what is counted)."""
        s, p, g = self.encoder.shape, self.predictor, self.generators[0]
        kc, kt, m = g.num_context, g.num_target, g.num_blocks
        patch = 2 * s.num_tokens * (3 * s.patch_size ** 2) * s.width  # the conv sees every patch
        target = patch + flops.vit_forward(s.num_tokens, s.width, s.depth, s.mlp_hidden)
        context = patch + flops.vit_forward(kc, s.width, s.depth, s.mlp_hidden)
        predictor = (2 * kc * s.width * p.width  # embedded once, then tiled
                     + m * flops.vit_forward(kc + kt, p.width, p.depth, 4 * p.width)
                     + m * 2 * kt * p.width * s.width)
        return batch_size * (target + 3 * (context + predictor))


def build(config):
    """IJEPA from `config.model` and `config.masks` (validated, with static mask counts)."""
    encoder = image_vit.encoder_from_config(config.model)
    generators = tuple(masks_lib.generators_from_config(config))
    predictor = image_predictor.predictor_from_config(config.model, encoder.shape)
    return IJEPA(encoder, predictor, generators)
