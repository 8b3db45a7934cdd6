"""Performance switches (docs/PERFORMANCE.md, "Options to try on a GPU"): each computes the same
loss as the default path. model.fuse_predictor: one padded predictor call for all generators;
model.residual_dtype: the blocks' residual stream in bfloat16 as the reference's autocast."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from common import load_config, random_video
from vjepa_jax import config as config_lib, methods, preprocess
from vjepa_jax.models import attention, block

DEMO, DEMO2 = "configs/pretrain/demo.py", "configs/pretrain/vjepa2_demo.py"


def loss_and_grads(config_file, **model):
    """(loss, aux, grads, model) of the smoke config with `model` keys set, fixed init and masks."""
    config = load_config(config_file, "smoke")
    config.model.update(model)
    config_lib.validate(config)
    bundle = methods.get(config.method).build(config)
    params = jax.jit(lambda k: nn.unbox(bundle.init(k)))(jax.random.key(0))
    video = preprocess.normalize(random_video(config))
    masks = bundle.sample_masks(jax.random.key(1), video.shape[0])
    (loss, aux), grads = jax.jit(jax.value_and_grad(
        lambda p: bundle.loss(p, params["encoder"], video, masks), has_aux=True))(params)
    return loss, aux, grads, bundle


@pytest.mark.parametrize("config_file,extra", [
    (DEMO, {}),  # V-JEPA: sin-cos tables, one mask token per generator
    (DEMO2, {"scan_blocks": True, "remat": "full"}),  # V-JEPA 2: RoPE, sorted tokens, scan
])
def test_fused_predictor_gives_the_unfused_loss_and_gradients(config_file, extra):
    loss, aux, grads, bundle = loss_and_grads(config_file, fuse_predictor=False, **extra)
    fused_loss, fused_aux, fused_grads, _ = loss_and_grads(config_file, fuse_predictor=True,
                                                           **extra)
    # The generators' predictor sequences differ in length, so the fused call pads one of them.
    lengths = {g.num_context + g.num_target for g in bundle.generators}
    assert len(lengths) == 2, lengths
    # float32 smoke model: only summation order differs (softmax over padded keys adds zeros).
    np.testing.assert_allclose(fused_loss, loss, rtol=1e-6)
    np.testing.assert_allclose(fused_aux["losses"], aux["losses"], rtol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7),
                 fused_grads, grads)


def test_padded_keys_are_never_attended():
    q, k, v = jax.random.normal(jax.random.key(0), (3, 2, 6, 2, 8))
    lengths = jnp.array([4, 6], jnp.int32)
    out = attention.attention(q, k, v, kv_lengths=lengths)
    # Whatever the padded keys and values hold, the output does not change.
    junk = jnp.arange(6)[None, :, None, None] >= lengths[:, None, None, None]
    out_junk = attention.attention(q, jnp.where(junk, 1e4, k), jnp.where(junk, -1e4, v),
                                   kv_lengths=lengths)
    np.testing.assert_array_equal(out_junk, out)
    # Sequence 0 equals attention over its 4 real keys alone; sequence 1 is unpadded.
    np.testing.assert_allclose(out[:1], attention.attention(q[:1], k[:1, :4], v[:1, :4]),
                               rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(out[1:], attention.attention(q[1:], k[1:], v[1:]))


@pytest.mark.parametrize("config_file", [DEMO, DEMO2])
def test_bf16_residual_stream_gives_the_float32_stream_loss_within_bf16_rounding(config_file):
    loss, _, grads, _ = loss_and_grads(config_file, dtype="bfloat16")
    bf16_loss, _, bf16_grads, _ = loss_and_grads(config_file, dtype="bfloat16",
                                                 residual_dtype="bfloat16")
    # bf16 keeps 8 mantissa bits (relative rounding 2^-9 = 0.2 % per add): the loss of the
    # 2-block smoke model moves by well under 1 %.
    np.testing.assert_allclose(bf16_loss, loss, rtol=1e-2)
    norm = lambda t: float(jnp.sqrt(sum(jnp.sum(g ** 2) for g in jax.tree.leaves(t))))
    np.testing.assert_allclose(norm(bf16_grads), norm(grads), rtol=5e-2)


def test_block_keeps_the_residual_dtype_with_float32_layer_norm():
    x = jax.random.normal(jax.random.key(0), (2, 5, 16))
    b = block.Block(num_heads=2, mlp_hidden=32, dtype=jnp.bfloat16)
    params = b.init(jax.random.key(1), x)["params"]
    for dtype in (jnp.float32, jnp.bfloat16):
        assert b.apply({"params": params}, x.astype(dtype)).dtype == dtype
    # LayerNorm of a bf16 stream computes and returns float32 (statistics in float32).
    ln = block.layer_norm("n")
    out = ln.apply(ln.init(jax.random.key(0), x), x.astype(jnp.bfloat16))
    assert out.dtype == jnp.float32


def test_residual_dtype_error_names_the_key():
    config = load_config(DEMO, "smoke")
    config.model.residual_dtype = "float16"
    with pytest.raises(ValueError, match="model.residual_dtype='float16'"):
        config_lib.validate(config)


@pytest.mark.parametrize("remat", ["dots", "full"])
def test_remat_gives_the_same_loss_and_gradients(remat):
    loss, _, grads, _ = loss_and_grads(DEMO)
    remat_loss, _, remat_grads, _ = loss_and_grads(DEMO, remat=remat)
    # Recomputing the forward in the backward changes nothing but XLA's fusion (float32).
    np.testing.assert_allclose(remat_loss, loss, rtol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7),
                 remat_grads, grads)
