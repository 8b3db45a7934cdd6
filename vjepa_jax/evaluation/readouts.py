"""Cheap classifiers on frozen features: cosine k-NN, softmax regression, ridge on all tokens.

Each takes train features and labels and validation features and returns validation labels;
evaluation/online.py runs them on an encoder's features.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax


@functools.partial(jax.jit, static_argnames=("k", "num_classes"))
def knn_predict(train_x, train_y, val_x, *, k, num_classes, temperature=0.07):
    """Cosine k-NN with similarity-weighted votes exp(sim / T): [N, D], [N], [M, D] -> labels [M]."""
    normalize = lambda x: x / (jnp.linalg.norm(x, axis=-1, keepdims=True) + 1e-12)
    sim = normalize(val_x) @ normalize(train_x).T
    k = min(k, train_x.shape[0])
    top_sim, top_idx = jax.lax.top_k(sim, k)
    votes = jax.nn.one_hot(train_y[top_idx], num_classes) * jnp.exp(top_sim / temperature)[..., None]
    return jnp.argmax(votes.sum(axis=1), axis=-1)


def _standardised(train_x, val_x):
    """Both splits scaled by the train split's per-feature mean and std (NumPy or JAX arrays)."""
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    return (train_x - mean) / std, (val_x - mean) / std


@functools.partial(jax.jit, static_argnames=("num_classes", "steps"))
def linear_predict(train_x, train_y, val_x, *, num_classes, steps, lr, weight_decay):
    """Softmax regression on standardised features, full-batch AdamW: -> val labels [M]."""
    xs, vs = _standardised(train_x, val_x)
    params = {"w": jnp.zeros((xs.shape[1], num_classes)), "b": jnp.zeros((num_classes,))}
    tx = optax.adamw(lr, weight_decay=weight_decay)

    def loss(p):
        logits = xs @ p["w"] + p["b"]
        return optax.softmax_cross_entropy_with_integer_labels(logits, train_y).mean()

    def step(carry, _):
        p, s = carry
        updates, s = tx.update(jax.grad(loss)(p), s, p)
        return (optax.apply_updates(p, updates), s), None

    (params, _), _ = jax.lax.scan(step, (params, tx.init(params)), None, length=steps)
    return jnp.argmax(vs @ params["w"] + params["b"], axis=-1)


RIDGE_LAMBDAS = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)


def ridge_predict(train_x, train_y, val_x, *, num_classes, lambdas=RIDGE_LAMBDAS):
    """One-vs-rest ridge regression on standardised features, penalty chosen by leave-one-out.

    train_x [N, F], train_y [N], val_x [M, F]. Targets are one-hot minus 1 / num_classes, there is
    no bias (the features are centred), and the penalty is `lam * F` for each lam in `lambdas`:
    F is the mean eigenvalue of the Gram matrix of F unit-variance features, so lam is relative.
    Solved in closed form through the N x N Gram matrix, so F may be large (every token of a clip).
    The lam with the best leave-one-out accuracy on the training split (exact, from the hat
    matrix; the smallest lam on ties) is used on the validation split.
    Returns (val labels [M], chosen lam, leave-one-out accuracy [len(lambdas)]).
    """
    x, v = _standardised(np.asarray(train_x, np.float32), np.asarray(val_x, np.float32))
    x, v = jnp.asarray(x), jnp.asarray(v)
    gram = np.asarray(x @ x.T, np.float64)
    cross = np.asarray(v @ x.T, np.float64)
    y = np.asarray(train_y)
    targets = np.eye(num_classes)[y] - 1.0 / num_classes
    eigval, eigvec = np.linalg.eigh(gram)
    eigval = np.maximum(eigval, 0.0)
    proj = eigvec.T @ targets
    penalties = [lam * x.shape[1] for lam in lambdas]
    loo_acc = []
    for penalty in penalties:
        shrink = eigval / (eigval + penalty)  # eigenvalues of the hat matrix
        fitted = eigvec @ (shrink[:, None] * proj)
        hat_diag = (eigvec ** 2) @ shrink
        loo = targets - (targets - fitted) / np.maximum(1.0 - hat_diag, 1e-12)[:, None]
        loo_acc.append(float(np.mean(loo.argmax(-1) == y)))
    best = int(np.argmax(loo_acc))
    alpha = eigvec @ (proj / (eigval + penalties[best])[:, None])  # dual weights, best penalty
    return (cross @ alpha).argmax(-1), lambdas[best], np.asarray(loo_acc)
