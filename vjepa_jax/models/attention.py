"""The one attention function every block uses, with a backend switch (auto | xla | cudnn | splash)."""
import functools
import logging

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

_log = logging.getLogger(__name__)

BACKENDS = ("auto", "xla", "cudnn", "splash")

# The splash kernel tiles q and k/v in blocks whose sizes are multiples of the TPU lane width
# (128) and must divide the sequence length; lengths are padded up to a multiple of this.
SPLASH_PAD = 128
SPLASH_BLOCKS = (512, 256, 128)  # the largest of these that divides the padded length is used


def resolve_backend(backend, dtype):
    """'auto' -> 'cudnn' on GPU with a 16-bit compute dtype, else 'xla' ('splash' only when asked)."""
    if backend not in BACKENDS:
        raise ValueError(f"model.attention must be one of {BACKENDS}, got {backend!r}")
    if backend != "auto":
        return backend
    on_gpu = jax.default_backend() == "gpu"
    return "cudnn" if on_gpu and jnp.dtype(dtype).itemsize == 2 else "xla"


def attention(q, k, v, backend="xla", kv_lengths=None):
    """Full bidirectional attention, scale 1/sqrt(head_dim): q [B,L,H,Dh], k/v [B,S,H,Dh] -> [B,L,H,Dh].

    The XLA path keeps logits and softmax in float32 whatever the input dtype; the cuDNN path
    is the fused flash kernel (GPU, bf16/fp16 inputs); the splash path is the Pallas TPU kernel
    (splash_attention below). kv_lengths [B] int32 (optional): sequence b attends to its first
    kv_lengths[b] keys only (key padding).
    """
    if backend == "cudnn":
        return jax.nn.dot_product_attention(q, k, v, key_value_seq_lengths=kv_lengths,
                                            implementation="cudnn")
    if backend == "splash":
        return splash_attention(q, k, v, kv_lengths)
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


def splash_attention(q, k, v, kv_lengths=None):
    """attention() through Pallas splash attention: q [B,L,H,Dh], k/v [B,S,H,Dh] -> [B,L,H,Dh].

    The kernel works on one example laid out [H, L, Dh] and has no softmax-scale argument, so
    q is scaled by 1/sqrt(Dh) here (in float32, then cast back) and the kernel is vmapped over
    the batch. Its logits and softmax statistics are float32. Sequence lengths are padded with
    zeros up to a multiple of 128; the padded keys are masked out by the kernel's static mask,
    padded queries are computed and dropped. One kernel is built per (heads, lengths) and
    reused. kv_lengths [B] (key padding) becomes segment ids: every query is in segment 0, a
    key is in segment 0 if it is among the first kv_lengths[b], else in segment 1.

    XLA cannot partition a TPU kernel over devices, so when the call is traced under a mesh of
    several devices (jax.set_mesh), it runs in a shard_map that gives each device its share
    of the batch (split over all mesh axes). A multi-device jit without such a mesh fails on
    a TPU with Mosaic's "cannot be automatically partitioned".

    On a TPU this is the compiled Mosaic kernel; on any other platform it runs in Pallas
    interpret mode (plain XLA ops, slow: meant for tests).
    """
    b, length, heads, head_dim = q.shape
    kv_length = k.shape[1]
    q_pad, kv_pad = _round_up(length), _round_up(kv_length)
    interpret = jax.default_backend() != "tpu"
    kernel = _splash_kernel(heads, q_pad, kv_pad, kv_length, interpret)
    scale = head_dim ** -0.5
    q = (q.astype(jnp.float32) * scale).astype(k.dtype)
    q, k, v = (_pad_seq(x, n).transpose(0, 2, 1, 3) for x, n in ((q, q_pad), (k, kv_pad), (v, kv_pad)))
    segments = None if kv_lengths is None else _segment_ids(kv_lengths, q_pad, kv_pad)

    def run(q, k, v, segments):  # [b, H, L_pad, Dh] for the whole batch or one device's share
        if segments is None:
            return jax.vmap(kernel)(q, k, v)
        return jax.vmap(lambda q, k, v, s: kernel(q, k, v, segment_ids=s))(q, k, v, segments)

    mesh = jax.sharding.get_abstract_mesh()
    if not mesh.empty and mesh.size > 1:
        if b % mesh.size:
            raise ValueError(f"model.attention='splash': batch {b} does not split over the "
                             f"{mesh.size} devices of mesh {dict(mesh.shape)}")
        batch = P(mesh.axis_names)
        run = jax.shard_map(run, mesh=mesh, in_specs=batch, out_specs=batch, check_vma=False)
    out = run(q, k, v, segments)
    return out.transpose(0, 2, 1, 3)[:, :length].astype(v.dtype)


def _segment_ids(kv_lengths, q_len, kv_len):
    """kv_lengths [B] -> the kernel's SegmentIds with q [B, q_len] all 0, kv [B, kv_len] 0 or 1."""
    sa = _splash_module()
    queries = jnp.zeros((kv_lengths.shape[0], q_len), jnp.int32)
    padded = jnp.arange(kv_len, dtype=jnp.int32)[None] >= kv_lengths[:, None]
    return sa.SegmentIds(q=queries, kv=padded.astype(jnp.int32))


def _round_up(n):
    return -(-n // SPLASH_PAD) * SPLASH_PAD


def _pad_seq(x, n):
    """Zero-pad axis 1 (the sequence) of [B, L, H, Dh] up to n."""
    return jnp.pad(x, ((0, 0), (0, n - x.shape[1]), (0, 0), (0, 0)))


def _block(n):
    return next(size for size in SPLASH_BLOCKS if n % size == 0)


def _splash_module():
    """jax.experimental.pallas.ops.tpu.splash_attention, or one error saying it is missing."""
    try:
        from jax.experimental.pallas.ops.tpu import splash_attention
    except ImportError as e:
        raise ImportError(f"model.attention='splash' needs jax.experimental.pallas.ops.tpu."
                          f"splash_attention, which jax {jax.__version__} lacks: {e}") from e
    return splash_attention


@functools.lru_cache(maxsize=None)
def _splash_kernel(heads, q_len, kv_len, kv_valid, interpret):
    """The splash MHA kernel for padded lengths q_len x kv_len whose first kv_valid keys are real.

    Every query sees every real key (bidirectional, the same mask for all heads). Backward
    block sizes are set too, so the kernel is differentiable. Built eagerly even when first
    called inside a jit trace, so the cached kernel holds no tracers.
    """
    sa = _splash_module()
    if kv_valid == kv_len:
        one_head = sa.FullMask((q_len, kv_len))
    else:
        keep = np.zeros((q_len, kv_len), dtype=np.bool_)
        keep[:, :kv_valid] = True
        one_head = sa.NumpyMask(keep)
    bq, bkv = _block(q_len), _block(kv_len)
    sizes = sa.BlockSizes(block_q=bq, block_kv=bkv, block_kv_compute=bkv,
                          block_q_dkv=bq, block_kv_dkv=bkv, block_kv_dkv_compute=bkv,
                          block_q_dq=bq, block_kv_dq=bkv)
    if interpret:
        _log.info("splash attention runs in Pallas interpret mode on %s (slow: for tests; "
                  "compiled only on a TPU)", jax.default_backend())
    with jax.ensure_compile_time_eval():
        return sa.make_splash_mha(sa.MultiHeadMask([one_head] * heads), block_sizes=sizes,
                                  head_shards=1, q_seq_shards=1, interpret=interpret)
