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


def attention(q, k, v, backend="xla"):
    """Full bidirectional attention, scale 1/sqrt(head_dim): q [B,L,H,Dh], k/v [B,S,H,Dh] -> [B,L,H,Dh].

    The XLA path keeps logits and softmax in float32 whatever the input dtype; the cuDNN path
    is the fused flash kernel (GPU, bf16/fp16 inputs).
    """
    if backend == "cudnn":
        return jax.nn.dot_product_attention(q, k, v, implementation="cudnn")
    if backend != "xla":
        raise ValueError(f"unresolved attention backend {backend!r}; call resolve_backend first")
    scale = q.shape[-1] ** -0.5
    logits = jnp.einsum("blhd,bshd->bhls", q, k, preferred_element_type=jnp.float32) * scale
    probs = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
    return jnp.einsum("bhls,bshd->blhd", probs, v)
