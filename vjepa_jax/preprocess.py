"""Pixels to model input: uint8 RGB clips -> float32 normalised with the ImageNet mean and std."""
import jax.numpy as jnp
import numpy as np

# NumPy, not jnp: a jnp constant at import time starts the XLA backend, and
# jax.distributed.initialize() must run before that.
MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


def normalize(video):
    """uint8 clips [..., 3] in 0..255 -> float32 normalised with ImageNet mean/std.

    Float input is taken as already normalised (pipelines that normalise on the host).
    """
    if jnp.issubdtype(video.dtype, jnp.floating):
        return video.astype(jnp.float32)
    return (jnp.asarray(video, jnp.float32) / 255.0 - MEAN) / STD
