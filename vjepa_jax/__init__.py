"""V-JEPA in JAX/Flax: self-supervised video pretraining by feature prediction."""


def __getattr__(name):
    # Lazy, so that `import vjepa_jax` stays light and training never imports the loaders.
    if name == "load_encoder":
        from vjepa_jax.loader import load_encoder  # noqa: PLC0415
        return load_encoder
    if name == "load_classifier":
        from vjepa_jax.classifier import load_classifier  # noqa: PLC0415
        return load_classifier
    raise AttributeError(f"module 'vjepa_jax' has no attribute {name!r}")
