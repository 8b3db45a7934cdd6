"""I-JEPA (Assran et al. 2023): image ViT, 4 target blocks + 1 context block, smooth-L1 loss."""
from vjepa_jax.methods import Method
from vjepa_jax.methods.ijepa import defaults, layout, model
from vjepa_jax.models import image_vit

METHOD = Method(name="ijepa", defaults=defaults.defaults, validate=model.validate,
                build=model.build, encoder_from_config=image_vit.encoder_from_config, layout=layout)
