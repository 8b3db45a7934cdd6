"""The V-JEPA objective (VJEPA_SPEC §4.2-4.3): L1 between predicted and layer-normed targets."""
import jax
import jax.numpy as jnp

from vjepa_jax.targets import feature_layer_norm, gather


def targets(encoder, target_params, video):
    """Full target-encoder pass -> (layer-normed features [B, N, D] fp32, raw features)."""
    raw = encoder.apply({"params": target_params}, video)
    return feature_layer_norm(raw), raw


def loss_fn(params, target_params, encoder, predictor, video, masks, mask_tokens=None):
    """Mean over generators of the per-generator mean L1 error.

    mask_tokens[i]: the predictor mask token generator i's queries start from (default i, as in
    V-JEPA 1; V-JEPA 2 uses token 0 for every generator of a single frame-count group).

    Returns (loss, aux) with aux = {'losses': per-generator losses, 'target': raw target features,
    'context': context features of the first generator, 'baseline_loss' of the same targets}.
    Targets pass through stop_gradient: no gradient ever reaches the target encoder.
    With predictor.fuse (model.fuse_predictor) the generators' predictor passes run as one
    padded call (models/predictor.py); the padded tokens are dropped before the loss.
    """
    h, raw = targets(encoder, target_params, video)
    h = jax.lax.stop_gradient(h)
    tokens = tuple(range(len(masks))) if mask_tokens is None else tuple(mask_tokens)
    if predictor.fuse:
        contexts = [encoder.apply({"params": params["encoder"]}, video, ctx) for ctx, _ in masks]
        ctxs, tgts = zip(*masks)
        preds = predictor.apply({"params": params["predictor"]}, tuple(contexts), ctxs, tgts,
                                tokens)
    else:  # one encoder and one predictor call per generator, in turn
        contexts, preds = [], []
        for (ctx, tgt), token in zip(masks, tokens):
            contexts.append(encoder.apply({"params": params["encoder"]}, video, ctx))
            preds.append(predictor.apply({"params": params["predictor"]}, contexts[-1], ctx, tgt,
                                         token))
    losses = [jnp.abs(pred - gather(h, tgt)).mean() for pred, (_, tgt) in zip(preds, masks)]
    aux = {"losses": losses, "target": jax.lax.stop_gradient(raw),
           "context": jax.lax.stop_gradient(contexts[0]), "baseline_loss": baseline_loss(h, masks)}
    return sum(losses) / len(losses), aux


def baseline_loss(h, masks):
    """L1 loss of a predictor that knows only each clip's mean target and each position's mean.

    h: layer-normed targets [B, N, D]. The trivial prediction for token n of clip b is
    mean_n h[b] + mean_b h[:, n] - mean h (batch statistics, which even see the hidden tokens);
    its error is averaged over the target tokens of every generator like the real loss. A
    predictor scoring above it has learned no more than clip-level appearance and the
    position-wise average; below it, it predicts what is where in the hidden region. The
    position means need several clips: with a batch of one clip the baseline is exactly 0.
    """
    clip = h.mean(axis=1, keepdims=True)
    position = h.mean(axis=0, keepdims=True)
    trivial = clip + position - h.mean(axis=(0, 1), keepdims=True)
    errors = [jnp.abs(gather(trivial, tgt) - gather(h, tgt)).mean() for _, tgt in masks]
    return sum(errors) / len(errors)
