"""The V-JEPA model bundle built from a config: encoder, predictor, mask generators and loss.

This is what the train step, the loop and the bench see of a method (docs/ARCHITECTURE.md,
"The method seam"): `init` for shapes-first parameters, `sample_masks` inside jit, `loss`, and
the descriptions that go into the log, the checkpoint and the FLOP count.
"""
import dataclasses

import jax
import jax.numpy as jnp

from vjepa_jax import flops
from vjepa_jax.methods import check_key
from vjepa_jax.methods.vjepa import loss as loss_lib, masks as masks_lib
from vjepa_jax.models import predictor as predictor_lib, vit


def validate(config):
    """Raise one ValueError naming the first unusable model or mask key of a V-JEPA config."""
    m = config.model
    check_key(m.dtype in ("float32", "bfloat16", "float16"), "model.dtype", m.dtype,
           "float32, bfloat16 or float16")
    for key in ("patch_size", "tubelet_size", "num_frames", "crop_size", "pred_width", "pred_depth"):
        check_key(isinstance(m[key], int) and m[key] > 0, f"model.{key}", m[key], "a positive integer")
    check_key(len(config.masks) >= 1, "masks", config.masks, "at least one mask generator")
    residual = m.get("residual_dtype", "float32")
    check_key(residual in ("float32", "bfloat16"), "model.residual_dtype", residual,
              "float32 or bfloat16 (the blocks' residual stream)")
    fuse = m.get("fuse_predictor", False)
    check_key(isinstance(fuse, bool), "model.fuse_predictor", fuse, "True or False")


@dataclasses.dataclass(frozen=True)
class VJEPA:
    """Modules and mask generators of one pretraining config; mask_tokens[i] is the predictor
    mask token of generator i (None: token i)."""
    encoder: vit.VisionTransformer
    predictor: predictor_lib.Predictor
    generators: tuple
    mask_tokens: tuple = None

    def init(self, rng):
        """Boxed params {'encoder', 'predictor'} (logical axis names kept for sharding)."""
        s = self.encoder.shape
        g = self.generators[0]
        # Parameter shapes do not depend on the batch size or the mask counts: one example.
        ctx = jnp.zeros((1, g.num_context), jnp.int32)
        tgt = jnp.zeros((1, g.num_target), jnp.int32)
        z = jnp.zeros(ctx.shape + (s.width,), jnp.float32)
        k_enc, k_pred = jax.random.split(rng)
        return {"encoder": vit.init_params(self.encoder, k_enc),
                "predictor": self.predictor.init(k_pred, z, ctx, tgt, 0)["params"]}

    def sample_masks(self, rng, batch_size):
        """One (context, target) index pair per generator, each [B, K] int32."""
        return [g.sample(jax.random.fold_in(rng, i), batch_size)
                for i, g in enumerate(self.generators)]

    def loss(self, params, target_params, video, masks):
        """(loss, aux) of loss.loss_fn: per-generator losses, features for the monitors."""
        return loss_lib.loss_fn(params, target_params, self.encoder, self.predictor, video, masks,
                                self.mask_tokens)

    def describe(self):
        """One log line per mask generator."""
        n = self.encoder.shape.num_tokens
        return [f"mask {i} ({g.kind}): {g.num_context} context + {g.num_target} target of {n} "
                "tokens" for i, g in enumerate(self.generators)]

    def meta(self):
        """What a checkpoint stores of the masks besides config.model; a resume must match it."""
        return {"masks": [{"kind": g.kind, "num_context": g.num_context,
                           "num_target": g.num_target} for g in self.generators]}

    def flops(self, batch_size):
        """Model FLOPs of one train step (matmuls + attention; flops.py says what is counted)."""
        s, p = self.encoder.shape, self.predictor
        patch = 2 * s.num_tokens * (3 * s.tubelet_size * s.patch_size ** 2) * s.width
        target = patch + flops.vit_forward(s.num_tokens, s.width, s.depth, s.mlp_hidden)
        online = 0
        for g in self.generators:
            kc, kt = g.num_context, g.num_target
            context = patch + flops.vit_forward(kc, s.width, s.depth, s.mlp_hidden)
            predictor = (2 * kc * s.width * p.width
                         + flops.vit_forward(kc + kt, p.width, p.depth, 4 * p.width)
                         + 2 * kt * p.width * s.width)
            online += 3 * (context + predictor)
        return batch_size * (target + online)


def build(config):
    """VJEPA from `config.model` and `config.masks` (validated, with static mask counts)."""
    encoder = vit.encoder_from_config(config.model)
    generators = tuple(masks_lib.generators_from_config(config))
    predictor = predictor_lib.predictor_from_config(config.model, encoder.shape, len(generators))
    return VJEPA(encoder, predictor, generators)
