"""The V-JEPA model bundle built from a config: encoder, predictor and mask generators."""
import dataclasses

import jax
import jax.numpy as jnp

from vjepa_jax import masks
from vjepa_jax.models import predictor as predictor_lib, vit


@dataclasses.dataclass(frozen=True)
class VJEPA:
    """Modules and mask generators of one pretraining config."""
    encoder: vit.VisionTransformer
    predictor: predictor_lib.Predictor
    generators: tuple

    def example(self, batch_size):
        """Abstract (video uint8 [B,T,S,S,3], ctx [B,Kc], tgt [B,Kt]) for shapes-first init."""
        s = self.encoder.shape
        g = self.generators[0]
        return (jax.ShapeDtypeStruct((batch_size, s.num_frames, s.crop_size, s.crop_size, 3), jnp.uint8),
                jax.ShapeDtypeStruct((batch_size, g.num_context), jnp.int32),
                jax.ShapeDtypeStruct((batch_size, g.num_target), jnp.int32))


def build(config):
    """VJEPA from `config.model` and `config.masks` (validated, with static mask counts)."""
    encoder = vit.encoder_from_config(config.model)
    generators = tuple(masks.generators_from_config(config))
    predictor = predictor_lib.predictor_from_config(config.model, encoder.shape, len(generators))
    return VJEPA(encoder, predictor, generators)
