"""Prediction targets shared by the JEPA methods: parameter-free layer norm, gather by index."""
import jax
import jax.numpy as jnp


def feature_layer_norm(x, eps=1e-5):
    """Parameter-free layer norm over features, in float32 (torch F.layer_norm default eps)."""
    x = x.astype(jnp.float32)
    mean = x.mean(-1, keepdims=True)
    var = jnp.square(x - mean).mean(-1, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(var + eps)


def gather(x, idx):
    """x [B, N, D], idx [B, K] -> [B, K, D]."""
    return jnp.take_along_axis(x, idx[..., None], axis=1)
