"""The I-JEPA objective (IJEPA_SPEC §4.2-4.3): smooth-L1 (beta 1) on layer-normed targets."""
import jax
import jax.numpy as jnp

from vjepa_jax.targets import feature_layer_norm, gather


def smooth_l1(pred, target):
    """Elementwise smooth-L1 with beta 1 (= Huber, delta 1): 0.5 d^2 if |d| < 1, else |d| - 0.5."""
    d = pred - target
    ad = jnp.abs(d)
    return jnp.where(ad < 1.0, 0.5 * d * d, ad - 0.5)


def block_targets(h, tgt):
    """h [B, N, D], tgt [M, B, Kt] -> [M * B, Kt, D], target-block-major like the predictor."""
    m, b, kt = tgt.shape
    return jnp.concatenate([gather(h, tgt[i]) for i in range(m)], axis=0)


def loss_fn(params, target_params, encoder, predictor, images, masks):
    """Mean smooth-L1 over every element of the M * B predicted blocks; aux as V-JEPA's.

    The target encoder sees the whole image, its output (already through its own final norm)
    gets a parameter-free layer norm (eps 1e-5) and is gathered per block; no gradient reaches
    it. aux: {'losses': per-block means, 'target', 'context', 'baseline_loss'}.
    """
    ctx, tgt = masks
    raw = encoder.apply({"params": target_params}, images)
    h = jax.lax.stop_gradient(feature_layer_norm(raw))
    z = encoder.apply({"params": params["encoder"]}, images, ctx)
    pred = predictor.apply({"params": params["predictor"]}, z, ctx, tgt)
    errors = smooth_l1(pred, block_targets(h, tgt))  # [M * B, Kt, D]
    m, b = tgt.shape[:2]
    losses = list(errors.reshape(m, b, -1).mean(axis=(1, 2)))
    aux = {"losses": losses, "target": jax.lax.stop_gradient(raw),
           "context": jax.lax.stop_gradient(z), "baseline_loss": baseline_loss(h, tgt)}
    return errors.mean(), aux


def baseline_loss(h, tgt):
    """The smooth-L1 loss of predicting each image's mean target plus each position's mean
    (batch statistics; the V-JEPA docstring in methods/vjepa/loss.py says what it measures)."""
    trivial = (h.mean(axis=1, keepdims=True) + h.mean(axis=0, keepdims=True)
               - h.mean(axis=(0, 1), keepdims=True))
    return smooth_l1(block_targets(trivial, tgt), block_targets(h, tgt)).mean()
