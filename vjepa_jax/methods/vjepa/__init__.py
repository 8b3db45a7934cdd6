"""V-JEPA (Bardes et al. 2024): video ViT, multiblock masks, mask-token predictor, L1 loss."""
from vjepa_jax.methods import Method
from vjepa_jax.methods.vjepa import defaults, layout, model
from vjepa_jax.models import vit

METHOD = Method(name="vjepa", defaults=defaults.defaults, validate=model.validate,
                build=model.build, encoder_from_config=vit.encoder_from_config, layout=layout)
