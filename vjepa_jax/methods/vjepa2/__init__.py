"""V-JEPA 2 (Assran et al. 2025): V-JEPA with 3-D RoPE, a 12-head sorted-token predictor, the
warmup-constant-cooldown recipe and progressive resolution (VJEPA_SPEC §9, docs/VJEPA2.md)."""
from vjepa_jax.methods import Method
from vjepa_jax.methods.vjepa2 import defaults, layout, model
from vjepa_jax.models import vit

METHOD = Method(name="vjepa2", defaults=defaults.defaults, validate=model.validate,
                build=model.build, encoder_from_config=vit.encoder_from_config, layout=layout)
