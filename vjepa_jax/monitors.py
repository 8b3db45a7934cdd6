"""Collapse monitors of a batch of features, logged every step: spread and effective rank."""
import jax.numpy as jnp


def feature_std(x):
    """Mean over features of the std across all tokens; near 0 signals collapse."""
    x = x.reshape(-1, x.shape[-1]).astype(jnp.float32)
    return x.std(axis=0).mean()


def feature_rank(x):
    """Effective dimensionality of tokens [..., D]: participation ratio (sum l)^2 / sum l^2.

    l are the eigenvalues of the token covariance, so this is 1 when every token lies on one
    line and D when the variance spreads evenly over all D features. It catches dimensional
    collapse, which feature_std misses: tokens can keep their spread while it shrinks onto a
    few directions. Needs one D x D Gram matrix and no eigendecomposition.
    """
    x = x.reshape(-1, x.shape[-1]).astype(jnp.float32)
    x = x - x.mean(axis=0)
    cov = x.T @ x / x.shape[0]
    return jnp.square(jnp.trace(cov)) / jnp.maximum(jnp.sum(jnp.square(cov)), 1e-30)
