"""model.attention='splash' (Pallas TPU splash attention) against the XLA path.

Off a TPU the kernel runs in Pallas interpret mode, so these tests check the wrapper (layout,
scale, padding and masking of lengths that are not multiples of 128, the backward pass) and
the kernel's arithmetic, not its TPU compilation or speed.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from vjepa_jax.config import base_config
from vjepa_jax.models import attention, vit


def qkvg(b, length, kv_length, heads, head_dim, dtype=jnp.float32):
    """Random q [B,L,H,Dh], k/v [B,S,H,Dh] and an output cotangent g like q."""
    shapes = [(b, length, heads, head_dim), (b, kv_length, heads, head_dim),
              (b, kv_length, heads, head_dim), (b, length, heads, head_dim)]
    return [jax.random.normal(jax.random.key(i), s, dtype) for i, s in enumerate(shapes)]


def out_and_grads(backend, q, k, v, g, kv_lengths=None):
    out, vjp = jax.vjp(lambda q, k, v: attention.attention(q, k, v, backend, kv_lengths), q, k, v)
    return (out, *vjp(g))


def assert_close(a, b, rtol, name):
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    assert a.shape == b.shape, name
    err = np.abs(a - b).max()
    assert err <= rtol * np.abs(b).max(), f"{name}: max error {err} vs max {np.abs(b).max()}"


# 128: one exact block; 200: padded to 256; 1216: a ViT-L predictor length (padded to 1280);
# (1, 300): the probe's cross-attention (few queries, many keys, both padded).
@pytest.mark.parametrize("length,kv_length,heads,head_dim", [
    (128, 128, 2, 32), (200, 200, 3, 16), (1216, 1216, 1, 64), (1, 300, 2, 16)])
def test_splash_matches_xla_output_and_gradients_fp32(length, kv_length, heads, head_dim):
    args = qkvg(2, length, kv_length, heads, head_dim)
    splash = jax.jit(functools.partial(out_and_grads, "splash"))(*args)
    plain = jax.jit(functools.partial(out_and_grads, "xla"))(*args)
    for name, a, b in zip(("output", "dq", "dk", "dv"), splash, plain):
        assert_close(a, b, 1e-5, name)


def test_splash_key_padding_matches_xla():
    """kv_lengths (per-example key padding, the fused predictor's) through segment ids."""
    args = qkvg(3, 200, 200, 2, 16)
    kv_lengths = jnp.array([200, 137, 5], jnp.int32)
    splash = jax.jit(functools.partial(out_and_grads, "splash"))(*args, kv_lengths)
    plain = jax.jit(functools.partial(out_and_grads, "xla"))(*args, kv_lengths)
    for name, a, b in zip(("output", "dq", "dk", "dv"), splash, plain):
        assert_close(a, b, 1e-5, name)
    assert not np.any(splash[2][2, 5:]) and not np.any(splash[3][1, 137:])  # no grad to padding


def test_splash_bf16_within_tolerance_of_xla():
    args = qkvg(2, 200, 200, 2, 64, jnp.bfloat16)
    splash = jax.jit(functools.partial(out_and_grads, "splash"))(*args)
    plain = jax.jit(functools.partial(out_and_grads, "xla"))(*args)
    assert splash[0].dtype == jnp.bfloat16
    for name, a, b in zip(("output", "dq", "dk", "dv"), splash, plain):
        assert_close(a, b, 0.02, name)


def test_splash_kernel_is_reused_across_traces():
    """The cached kernel was built outside any trace: a second jit of the same shape works."""
    q, k, v, _ = qkvg(1, 130, 130, 2, 16)
    first = jax.jit(lambda q, k, v: attention.attention(q, k, v, "splash"))(q, k, v)
    second = jax.jit(lambda q, k, v: 2 * attention.attention(q, k, v, "splash"))(q, k, v)
    np.testing.assert_allclose(2 * first, second, rtol=1e-6)
    np.testing.assert_allclose(first, attention.attention(q, k, v, "splash"), rtol=1e-6)


def test_splash_under_a_mesh_runs_per_device_and_matches_xla():
    """Traced under jax.set_mesh, the kernel runs in a shard_map over the batch (as a TPU needs)."""
    if jax.device_count() < 8:
        pytest.skip("needs the 8 fake CPU devices of tests/conftest.py")
    mesh = Mesh(np.asarray(jax.devices()[:8]).reshape(4, 2), ("data", "fsdp"))
    args = qkvg(8, 130, 130, 2, 16)
    kv_lengths = jnp.arange(8, dtype=jnp.int32) * 16 + 10
    with jax.set_mesh(mesh):
        args = [jax.device_put(x, NamedSharding(mesh, P(("data", "fsdp")))) for x in args]
        step = jax.jit(functools.partial(out_and_grads, "splash"))
        assert "shard_map" in str(jax.make_jaxpr(step)(*args, kv_lengths))
        splash = step(*args, kv_lengths)
    plain = jax.jit(functools.partial(out_and_grads, "xla"))(*args, kv_lengths)
    for name, a, b in zip(("output", "dq", "dk", "dv"), splash, plain):
        assert_close(a, b, 1e-5, name)


def test_splash_is_explicit_only():
    assert attention.resolve_backend("splash", jnp.bfloat16) == "splash"
    if jax.default_backend() != "tpu":
        for dtype in (jnp.float32, jnp.bfloat16):
            assert attention.resolve_backend("auto", dtype) != "splash"


def test_encoder_with_splash_matches_xla():
    """A tiny fp32 encoder (sequence 32, not a multiple of 128): same output and param grads."""
    c = base_config()
    c.model.update(variant="tiny", depth=1, num_frames=4, crop_size=32, patch_size=8,
                   dtype="float32")
    video = jax.random.normal(jax.random.key(0), (2, 4, 32, 32, 3))
    probe = jax.random.normal(jax.random.key(2), (2, 32, 192))  # a random read-out of the tokens
    results = {}
    for backend in ("xla", "splash"):
        c.model.attention = backend
        encoder = vit.encoder_from_config(c.model)
        params = encoder.init(jax.random.key(1), video)
        loss = lambda p: jnp.sum(encoder.apply(p, video) * probe)
        results[backend] = jax.jit(jax.value_and_grad(loss))(params)
    (loss_x, grad_x), (loss_s, grad_s) = results["xla"], results["splash"]
    np.testing.assert_allclose(loss_s, loss_x, rtol=1e-5)
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(grad_s), jax.tree.leaves(grad_x)):
        assert_close(a, b, 1e-4, jax.tree_util.keystr(path))
