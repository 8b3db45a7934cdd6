"""Encoder, predictor, position tables and attention backends."""
import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vjepa_jax.config import base_config
from vjepa_jax.models import attention, block, pos_embed, predictor as predictor_lib, vit


def count(tree):
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nn.unbox(tree)))


def formula_entry(d, t, h, w, col, uniform_power=True):
    """One entry of the 3-D table, written from VJEPA_SPEC §1.2 with plain math."""
    if uniform_power:
        widths = [2 * math.ceil(d / 6)] * 3
    else:
        widths = [d // 2, d // 4, d // 4]
    for pos, width in zip((t, h, w), widths):
        if col < width:
            half = width // 2
            k = col % half
            angle = pos / 10000 ** (k / half)
            return math.sin(angle) if col < half else math.cos(angle)
        col -= width
    raise AssertionError("column beyond the table")


@pytest.mark.parametrize("d,grid,uniform", [(1024, (8, 14, 14), True), (384, (8, 14, 14), True),
                                            (1280, (8, 14, 14), True), (64, (2, 3, 4), False)])
def test_pos_embed_matches_spec_formula(d, grid, uniform):
    table = pos_embed.sincos_3d(d, grid, uniform)
    assert table.shape == (np.prod(grid), d) and table.dtype == np.float32
    rng = np.random.default_rng(0)
    for _ in range(50):
        t, h, w = (int(rng.integers(g)) for g in grid)
        col = int(rng.integers(d))
        n = t * grid[1] * grid[2] + h * grid[2] + w  # time-major token order
        assert table[n, col] == pytest.approx(formula_entry(d, t, h, w, col, uniform), abs=1e-6)


def test_pos_embed_truncation_drops_last_width_cosines():
    # ViT-L: 3 x 342 = 1026 columns, the last two (width-axis cosines) are dropped.
    full = np.concatenate([pos_embed.sincos_1d(342, np.zeros(1)), pos_embed.sincos_1d(342, np.zeros(1)),
                           pos_embed.sincos_1d(342, np.arange(1))], 1)
    assert full.shape[1] == 1026
    np.testing.assert_allclose(pos_embed.sincos_3d(1024, (1, 1, 1))[0], full[0, :1024], atol=1e-7)


def test_parameter_counts_match_reference():
    c = base_config()
    encoder = vit.encoder_from_config(c.model)
    video = jnp.zeros((1, 16, 224, 224, 3))
    enc = jax.eval_shape(encoder.init, jax.random.key(0), video)
    assert count(enc) == 303_885_312
    assert encoder.shape.num_tokens * encoder.shape.width == 1_605_632  # frozen table, not a param
    pred = predictor_lib.predictor_from_config(c.model, encoder.shape, 2)
    z, idx = jnp.zeros((1, 4, 1024)), jnp.zeros((1, 4), jnp.int32)
    p = jax.eval_shape(lambda r: pred.init(r, z, idx, idx, 0), jax.random.key(0))
    assert count(p) == 22_082_944
    c.model.variant = "huge"
    huge = vit.encoder_from_config(c.model)
    assert count(jax.eval_shape(huge.init, jax.random.key(0), video)) == 631_648_000


def tiny_model(**kw):
    c = base_config()
    c.model.update(variant="tiny", depth=2, num_frames=4, crop_size=32, patch_size=8,
                   pred_width=48, pred_depth=1, pred_num_heads=3, dtype="float32", **kw)
    return c, vit.encoder_from_config(c.model)


def test_init_statistics_follow_reference():
    """Linear/conv weights ~ N(0, 0.02) untruncated, biases 0, LayerNorm 1/0 (spec §1.4)."""
    c = base_config()
    c.model.update(variant="small", depth=2, num_frames=4, crop_size=64)
    encoder = vit.encoder_from_config(c.model)
    params = nn.unbox(encoder.init(jax.random.key(1), jnp.zeros((1, 4, 64, 64, 3))))["params"]
    fc1 = np.asarray(params["blocks_0"]["fc1"]["kernel"])
    assert abs(fc1.std() - 0.02) < 0.0005
    assert np.abs(fc1).max() > 0.08  # > 4 sigma occurs: no 2-sigma truncation
    assert np.all(np.asarray(params["blocks_1"]["qkv"]["bias"]) == 0)
    assert np.all(np.asarray(params["norm"]["scale"]) == 1)
    assert abs(np.asarray(params["patch_embed"]["kernel"]).std() - 0.02) < 0.001


def test_encoder_gather_equals_full_pass_tokens_of_first_layer_input():
    """Kept indices gather tokens after positions were added: a zero-depth encoder shows it."""
    _, encoder = tiny_model()
    encoder = encoder.clone(shape=encoder.shape.__class__(**{**encoder.shape.__dict__, "depth": 0}))
    video = jax.random.normal(jax.random.key(0), (2, 4, 32, 32, 3))
    params = encoder.init(jax.random.key(1), video)
    full = encoder.apply(params, video)
    idx = jnp.array([[0, 5, 9], [3, 4, 31]], jnp.int32)
    part = encoder.apply(params, video, idx)
    # LayerNorm is per token, so gathering before or after it is the same.
    np.testing.assert_allclose(part, jnp.take_along_axis(full, idx[..., None], 1), atol=1e-5)


def test_encoder_shapes_and_image_input():
    _, encoder = tiny_model()
    video = jnp.zeros((2, 4, 32, 32, 3))
    params = encoder.init(jax.random.key(0), video)
    assert encoder.apply(params, video).shape == (2, 2 * 4 * 4, 192)
    image = jax.random.normal(jax.random.key(1), (2, 1, 32, 32, 3))
    assert encoder.apply(params, image).shape == (2, 16, 192)  # one tubelet of the repeated frame
    # Other resolutions use a resized position table.
    assert encoder.apply(params, jnp.zeros((1, 4, 48, 48, 3))).shape == (1, 2 * 6 * 6, 192)


def test_predictor_returns_targets_and_uses_mask_token_per_generator():
    c, encoder = tiny_model()
    pred = predictor_lib.predictor_from_config(c.model, encoder.shape, 2)
    z = jax.random.normal(jax.random.key(0), (2, 5, 192))
    ctx = jnp.tile(jnp.arange(5, dtype=jnp.int32), (2, 1))
    tgt = jnp.tile(jnp.arange(5, 12, dtype=jnp.int32), (2, 1))
    params = nn.unbox(pred.init(jax.random.key(1), z, ctx, tgt, 0))
    assert params["params"]["mask_tokens_0"].shape == (1, 1, 48)
    assert not np.any(params["params"]["mask_tokens_1"])  # zero init
    out0 = pred.apply(params, z, ctx, tgt, 0)
    assert out0.shape == (2, 7, 192)
    params["params"]["mask_tokens_1"] = jnp.ones((1, 1, 48))
    np.testing.assert_allclose(pred.apply(params, z, ctx, tgt, 0), out0)  # token 1 unused by gen 0
    assert not np.allclose(pred.apply(params, z, ctx, tgt, 1), out0)


def test_xla_attention_matches_naive_softmax():
    q, k, v = (jax.random.normal(jax.random.key(i), (2, 7, 3, 16)) for i in range(3))
    out = attention.attention(q, k, v, "xla")
    logits = np.einsum("blhd,bshd->bhls", q, k) / 4.0
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    np.testing.assert_allclose(out, np.einsum("bhls,bshd->blhd", probs, v), atol=1e-5)


def test_bf16_attention_within_tolerance_of_fp32():
    q, k, v = (jax.random.normal(jax.random.key(i), (2, 64, 2, 32)) for i in range(3))
    ref = attention.attention(q, k, v, "xla")
    low = attention.attention(*(x.astype(jnp.bfloat16) for x in (q, k, v)), "xla")
    np.testing.assert_allclose(low.astype(jnp.float32), ref, atol=3e-2)


def test_jax_dot_product_attention_agrees_with_ours():
    """jax.nn.dot_product_attention (the API the cuDNN path calls) computes the same function."""
    q, k, v = (jax.random.normal(jax.random.key(i), (2, 64, 2, 32)) for i in range(3))
    np.testing.assert_allclose(jax.nn.dot_product_attention(q, k, v, implementation="xla"),
                               attention.attention(q, k, v, "xla"), atol=1e-5)


@pytest.mark.parametrize("length", [256, 1152, 1216])  # 1152 / 1216: ViT-L predictor lengths
def test_cudnn_attention_matches_xla_on_gpu(length):
    """The fused cuDNN kernel's output and q/k/v gradients vs the XLA path, bf16. GPU only:
    JAX_PLATFORMS=cuda python -m pytest tests/test_models.py -k cudnn. The same check, run as a
    script on an H200 (2026-11-30, jax 0.11.2), agreed within 0.6 % of the largest value."""
    if jax.default_backend() != "gpu":
        pytest.skip("cuDNN attention needs an NVIDIA GPU")
    q, k, v, g = (jax.random.normal(jax.random.key(i), (2, length, 16, 64), jnp.bfloat16)
                  for i in range(4))

    def out_and_grads(backend, q, k, v, g):
        out, vjp = jax.vjp(lambda q, k, v: attention.attention(q, k, v, backend), q, k, v)
        return (out, *vjp(g))

    fused = jax.jit(functools.partial(out_and_grads, "cudnn"))(q, k, v, g)
    plain = jax.jit(functools.partial(out_and_grads, "xla"))(q, k, v, g)
    for name, a, b in zip(("output", "dq", "dk", "dv"), fused, plain):
        a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
        assert np.abs(a - b).max() <= 0.02 * np.abs(b).max(), name


def test_cudnn_block_with_rope_matches_xla_on_gpu():
    """V-JEPA 2's block (q and k rotated by RoPE before the kernel) with the fused cuDNN kernel vs
    the XLA path, bf16, a masked index set (positions from token indices). GPU only."""
    if jax.default_backend() != "gpu":
        pytest.skip("cuDNN attention needs an NVIDIA GPU")
    from vjepa_jax.models import rope
    grid = (8, 16, 16)
    idx = jnp.sort(jax.random.permutation(jax.random.key(0), 2048)[:1152])[None].repeat(2, 0)
    x = jax.random.normal(jax.random.key(1), (2, 1152, 1024))
    outs = []
    for backend in ("cudnn", "xla"):
        b = block.Block(16, 4096, jnp.bfloat16, backend, rope="tiled")
        params = b.init(jax.random.key(2), x, rope.token_positions(idx, grid))
        outs.append(jax.jit(b.apply)(params, x, rope.token_positions(idx, grid)))
    a, ref = (np.asarray(o, np.float32) for o in outs)
    assert np.abs(a - ref).max() <= 0.02 * np.abs(ref).max()


def test_attention_backend_choice_and_errors():
    assert attention.resolve_backend("auto", jnp.float32) == "xla"
    if jax.default_backend() == "cpu":
        assert attention.resolve_backend("auto", jnp.bfloat16) == "xla"
    with pytest.raises(ValueError, match="model.attention"):
        attention.resolve_backend("flash", jnp.bfloat16)


def test_bad_model_config_is_named():
    c = base_config()
    c.model.variant = "enormous"
    with pytest.raises(ValueError, match="model.variant"):
        vit.encoder_from_config(c.model)
    c.model.variant, c.model.crop_size = "tiny", 100
    with pytest.raises(ValueError, match="crop_size"):
        vit.encoder_from_config(c.model)
