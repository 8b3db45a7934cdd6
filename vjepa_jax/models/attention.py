"""The one attention function every block uses, with a backend switch (xla | cudnn | auto)."""
import jax
import jax.numpy as jnp

BACKENDS = ("auto", "xla", "cudnn")


def resolve_backend(backend, dtype):
    """'auto' -> 'cudnn' on GPU with a 16-bit compute dtype, else 'xla'."""
    if backend not in BACKENDS:
        raise ValueError(f"model.attention must be one of {BACKENDS}, got {backend!r}")
    if backend != "auto":
        return backend
    on_gpu = jax.default_backend() == "gpu"
    return "cudnn" if on_gpu and jnp.dtype(dtype).itemsize == 2 else "xla"


def attention(q, k, v, backend="xla", kv_lengths=None):
    """Full bidirectional attention, scale 1/sqrt(head_dim): q [B,L,H,Dh], k/v [B,S,H,Dh] -> [B,L,H,Dh].

    The XLA path keeps logits and softmax in float32 whatever the input dtype; the cuDNN path
    is the fused flash kernel (GPU, bf16/fp16 inputs). kv_lengths [B] int32 (optional, XLA and
    cuDNN only): sequence b attends to its first kv_lengths[b] keys only (key padding).
    """
    if kv_lengths is not None and backend not in ("xla", "cudnn"):
        raise ValueError(f"attention backend {backend!r} takes no key padding (kv_lengths): "
                         "use model.attention='xla' or 'cudnn' with model.fuse_predictor=True")
    if backend == "cudnn":
        return jax.nn.dot_product_attention(q, k, v, key_value_seq_lengths=kv_lengths,
                                            implementation="cudnn")
    if backend != "xla":
        raise ValueError(f"unresolved attention backend {backend!r}; call resolve_backend first")
    scale = q.shape[-1] ** -0.5
    logits = jnp.einsum("blhd,bshd->bhls", q, k, preferred_element_type=jnp.float32) * scale
    keep = None if kv_lengths is None else key_padding_mask(kv_lengths, k.shape[1])
    probs = jax.nn.softmax(logits, axis=-1, where=keep).astype(v.dtype)
    return jnp.einsum("bhls,bshd->blhd", probs, v)


def key_padding_mask(kv_lengths, num_keys):
    """kv_lengths [B] -> bool [B, 1, 1, S], true for the keys a query may attend to.

    Only [B, S] of information, broadcast over heads and queries: no [S, S] mask is built.
    """
    keep = jnp.arange(num_keys, dtype=jnp.int32)[None] < kv_lengths[:, None]
    return keep[:, None, None, :]
