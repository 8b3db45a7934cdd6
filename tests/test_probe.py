"""Attentive probe (VJEPA_SPEC §7.1) and the multi-segment / multi-view protocol (§7.3, §7.4)."""
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from vjepa_jax.models import probe as probe_lib
from vjepa_jax.models import vit

D, HEADS, CLASSES = 32, 4, 7


def tiny_encoder(frames=4, crop=16):
    cfg = ml_collections.ConfigDict(dict(
        variant="tiny", width=D, depth=1, num_heads=HEADS, patch_size=8, tubelet_size=2,
        num_frames=frames, crop_size=crop, uniform_power=True, attention="xla", dtype="float32",
        remat="none", scan_blocks=False))
    return vit.encoder_from_config(cfg)


def random_params(module, *example, scale=0.1, seed=0):
    """Params shaped like module.init's, filled with numpy normals: no slow init compile."""
    shapes = jax.eval_shape(module.init, jax.random.key(0), *example)["params"]
    shapes = jax.tree.map(lambda x: getattr(x, "value", x), shapes,
                          is_leaf=lambda x: hasattr(x, "value"))
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda s: (scale * rng.normal(size=s.shape)).astype(np.float32), shapes)


def init_probe(dtype=jnp.float32, length=5):
    probe = probe_lib.AttentiveClassifier(CLASSES, HEADS, dtype=dtype)
    x = np.random.default_rng(1).normal(size=(3, length, D)).astype(np.float32)
    return probe, random_params(probe, x), x


def apply(module, params, x):
    return jax.jit(module.apply)({"params": params}, x)


def init_encoder(enc):
    return random_params(enc, jnp.zeros((1, 4, 16, 16, 3)), scale=0.02)


def features(enc, params, video, dtype=jnp.float32, encoder_batch=0):
    fn = jax.jit(probe_lib.frozen_features, static_argnums=(0, 3, 4))
    return fn(enc, params, video, dtype, encoder_batch)


def random_video(shape, seed=0):
    return np.random.default_rng(seed).integers(0, 256, shape).astype(np.uint8)


# ----------------------------------------------------------------------------- numpy reference
def _ln(x, scale, bias, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * scale + bias


def _gelu(x):
    return 0.5 * x * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))


def _softmax_attention(q, k, v, heads):
    """Multi-head attention [B, Lq, D], [B, L, D] x2 -> [B, Lq, D], scale 1/sqrt(head_dim)."""
    b, lq, d = q.shape
    hd = d // heads
    split = lambda t: t.reshape(b, t.shape[1], heads, hd).transpose(0, 2, 1, 3)
    a = split(q) @ split(k).transpose(0, 1, 3, 2) / math.sqrt(hd)
    a = np.exp(a - a.max(-1, keepdims=True))
    a = a / a.sum(-1, keepdims=True)
    return (a @ split(v)).transpose(0, 2, 1, 3).reshape(b, lq, d)


def _self_attention_block(blk, x, heads):
    """V-JEPA 2's probe block (VJEPA_SPEC §9.2): a pre-norm transformer block, LN eps 1e-5."""
    d = x.shape[-1]
    h = _ln(x, blk["norm1"]["scale"], blk["norm1"]["bias"], 1e-5)
    qkv = h @ blk["qkv"]["kernel"] + blk["qkv"]["bias"]
    y = _softmax_attention(qkv[..., :d], qkv[..., d:2 * d], qkv[..., 2 * d:], heads)
    x = x + y @ blk["proj"]["kernel"] + blk["proj"]["bias"]
    h = _gelu(_ln(x, blk["norm2"]["scale"], blk["norm2"]["bias"], 1e-5) @ blk["fc1"]["kernel"]
              + blk["fc1"]["bias"])
    return x + h @ blk["fc2"]["kernel"] + blk["fc2"]["bias"]


def reference_classifier(p, x, heads):
    """The reference forward written from the spec in float64 numpy: x [B, L, D] -> logits.

    Blocks `blocks_{i}` (the V-JEPA 2 form) act on the tokens before the cross-attention.
    """
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), p)
    x = np.asarray(x, np.float64)
    for i in range(sum(k.startswith("blocks_") for k in p)):
        x = _self_attention_block(p[f"blocks_{i}"], x, heads)
    b, l, d = x.shape
    hd = d // heads
    blk = p["cross_attention_block"]
    q = np.broadcast_to(p["query_tokens"], (b, 1, d))
    xn = _ln(x, blk["norm1"]["scale"], blk["norm1"]["bias"], 1e-5)
    qq = q @ blk["xattn"]["q"]["kernel"] + blk["xattn"]["q"]["bias"]
    kv = xn @ blk["xattn"]["kv"]["kernel"] + blk["xattn"]["kv"]["bias"]
    k, v = kv[..., :d], kv[..., d:]
    qq = qq.reshape(b, 1, heads, hd).transpose(0, 2, 1, 3)
    k = k.reshape(b, l, heads, hd).transpose(0, 2, 1, 3)
    v = v.reshape(b, l, heads, hd).transpose(0, 2, 1, 3)
    a = qq @ k.transpose(0, 1, 3, 2) / math.sqrt(hd)
    a = np.exp(a - a.max(-1, keepdims=True))
    a = a / a.sum(-1, keepdims=True)
    y = (a @ v).transpose(0, 2, 1, 3).reshape(b, 1, d)
    q = q + y
    h = _gelu(_ln(q, blk["norm2"]["scale"], blk["norm2"]["bias"], 1e-5) @ blk["fc1"]["kernel"]
              + blk["fc1"]["bias"])
    q = q + h @ blk["fc2"]["kernel"] + blk["fc2"]["bias"]
    return q[:, 0] @ p["linear"]["kernel"] + p["linear"]["bias"]


# ----------------------------------------------------------------------------- tests
def test_probe_parameter_shapes():
    _, p, _ = init_probe()
    shapes = jax.tree.map(lambda a: a.shape, p)
    blk = shapes["cross_attention_block"]
    assert shapes["query_tokens"] == (1, 1, D)
    assert blk["xattn"]["q"] == {"kernel": (D, D), "bias": (D,)}
    assert blk["xattn"]["kv"] == {"kernel": (D, 2 * D), "bias": (2 * D,)}
    assert "proj" not in blk["xattn"]  # unused in the reference forward: deliberately left out
    assert blk["fc1"] == {"kernel": (D, 4 * D), "bias": (4 * D,)}
    assert blk["fc2"] == {"kernel": (4 * D, D), "bias": (D,)}
    assert blk["norm1"] == blk["norm2"] == {"scale": (D,), "bias": (D,)}
    assert shapes["linear"] == {"kernel": (D, CLASSES), "bias": (CLASSES,)}


def test_probe_output_shape_and_dtype_for_any_token_count():
    probe, p, _ = init_probe(jnp.bfloat16)
    for length in (1, 13):
        x = jnp.ones((2, length, D), jnp.bfloat16)
        out = apply(probe, p, x)
        assert out.shape == (2, CLASSES) and out.dtype == jnp.float32


def test_probe_matches_numpy_reference_forward():
    probe, p, x = init_probe()  # random LayerNorm and bias values: every term matters
    got = np.asarray(apply(probe, p, x))
    np.testing.assert_allclose(got, reference_classifier(p, x, HEADS), rtol=1e-4, atol=1e-5)


def test_probe_layer_norm_eps_is_torch_default():
    probe, p, _ = init_probe()
    # Tokens with a tiny variance make LayerNorm sensitive to eps: 1e-5 vs 1e-6 differ clearly.
    x = 1e-3 * np.random.default_rng(3).normal(size=(2, 6, D)).astype(np.float32)
    got = np.asarray(apply(probe, p, x))
    np.testing.assert_allclose(got, reference_classifier(p, x, HEADS), rtol=1e-4, atol=1e-5)


def test_probe_init_statistics():
    probe = probe_lib.AttentiveClassifier(10, 4)
    d = 256
    p = jax.jit(probe.init)(jax.random.key(0), jnp.zeros((1, 2, d)))["params"]
    blk = p["cross_attention_block"]
    assert abs(float(np.std(blk["xattn"]["kv"]["kernel"])) - 0.02) < 0.001
    assert abs(float(np.std(blk["fc1"]["kernel"])) - 0.02) < 0.001
    # fc2 is rescaled by 1/sqrt(2 * layer_id), layer_id = 1.
    assert abs(float(np.std(blk["fc2"]["kernel"])) - 0.02 / math.sqrt(2)) < 0.001
    assert abs(float(np.std(p["query_tokens"])) - 0.02) < 0.004
    assert float(np.abs(blk["fc1"]["bias"]).max()) == 0.0
    # Head: PyTorch default Linear init, U(-1/sqrt(D), 1/sqrt(D)) for kernel and bias.
    bound = 1 / math.sqrt(d)
    kernel = np.asarray(p["linear"]["kernel"])
    assert np.abs(kernel).max() <= bound and np.abs(kernel).max() > 0.9 * bound
    assert abs(kernel.std() - bound / math.sqrt(3)) < 0.05 * bound
    assert 0 < np.abs(np.asarray(p["linear"]["bias"])).max() <= bound


def test_view_probs_is_mean_of_per_view_softmax():
    probe, p, _ = init_probe()
    tokens = np.random.default_rng(5).normal(size=(2, 3, 9, D)).astype(np.float32)  # [B, V, L, D]
    logits = jax.jit(probe_lib.view_logits, static_argnums=0)(probe, p, tokens)
    assert logits.shape == (2, 3, CLASSES)
    manual = np.mean([np.asarray(jax.nn.softmax(apply(probe, p, tokens[:, v])))
                      for v in range(3)], axis=0)
    np.testing.assert_allclose(np.asarray(probe_lib.view_probs(logits)), manual, rtol=1e-5,
                               atol=1e-6)
    labels = jnp.array([1, 4])
    ce = [-np.log(np.asarray(jax.nn.softmax(apply(probe, p, tokens[:, v])))
                  [np.arange(2), labels]) for v in range(3)]
    np.testing.assert_allclose(np.asarray(probe_lib.view_loss(logits, labels)),
                               np.mean(ce, axis=0), rtol=1e-5)


def test_topk_correct_matches_argsort():
    rng = np.random.default_rng(0)
    probs = rng.random((50, 12)).astype(np.float32)
    labels = rng.integers(0, 12, 50)
    for k in (1, 5):
        expect = [labels[i] in np.argsort(-probs[i])[:k] for i in range(50)]
        got = probe_lib.topk_correct(jnp.asarray(probs), jnp.asarray(labels), k)
        np.testing.assert_array_equal(np.asarray(got), np.asarray(expect, np.float32))
    # k larger than the class count: everything is correct.
    assert float(probe_lib.topk_correct(jnp.asarray(probs[:, :3]), jnp.zeros(50, int), 5).min()) == 1


def test_frozen_features_concatenate_segments_per_view():
    enc = tiny_encoder()
    video = random_video((2, 3, 2, 4, 16, 16, 3))
    params = init_encoder(enc)
    tokens = features(enc, params, video, jnp.float32)
    n = enc.shape.num_tokens
    assert tokens.shape == (2, 2, 3 * n, D)
    from vjepa_jax import preprocess
    for b, v, s in [(0, 0, 0), (1, 1, 2), (0, 1, 1)]:
        single = apply(enc, params, preprocess.normalize(video[b:b + 1, s, v]))[0]
        np.testing.assert_allclose(np.asarray(tokens[b, v, s * n:(s + 1) * n]), np.asarray(single),
                                   rtol=1e-5, atol=1e-5)
    chunked = features(enc, params, video, jnp.float32, encoder_batch=4)
    np.testing.assert_allclose(np.asarray(chunked), np.asarray(tokens), rtol=1e-5, atol=1e-5)


def test_frozen_features_are_bf16_and_carry_no_gradient():
    enc = tiny_encoder()
    video = random_video((2, 1, 1, 4, 16, 16, 3))
    params = init_encoder(enc)
    default = jax.jit(lambda p, v: probe_lib.frozen_features(enc, p, v))(params, video)
    assert default.dtype == jnp.bfloat16
    grads = jax.jit(jax.grad(lambda p: probe_lib.frozen_features(enc, p, video, jnp.float32).sum()))(
        params)
    assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree.leaves(grads))


def test_images_are_repeated_to_the_clip_length():
    enc = tiny_encoder(frames=4)
    params = init_encoder(enc)
    image = random_video((2, 1, 1, 1, 16, 16, 3), seed=2)
    clip = np.repeat(image, 4, axis=3)
    assert probe_lib.as_clips(jnp.asarray(image), 4).shape == (2, 1, 1, 4, 16, 16, 3)
    a = features(enc, params, image, jnp.float32)
    b = features(enc, params, clip, jnp.float32)
    assert a.shape[2] == enc.shape.num_tokens  # 4 frames / tubelet 2 x 2 x 2 = 8 tokens, not 4
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6)
    with pytest.raises(ValueError, match="encoder expects 4"):
        probe_lib.as_clips(jnp.zeros((1, 1, 1, 2, 16, 16, 3), jnp.uint8), 4)


def test_probe_pos_embed_adds_the_grid_table_per_segment():
    """The reference probe is blind to token order; probe.pos_embed adds each segment's position."""
    grid = (1, 2, 2)
    blind, p, x = init_probe(length=8)  # two segments of a 1x2x2 grid
    seeing = probe_lib.AttentiveClassifier(CLASSES, HEADS, dtype=jnp.float32, pos_grid=grid)
    perm = np.array([1, 0, 3, 2, 5, 4, 7, 6])  # swaps positions inside each segment
    np.testing.assert_allclose(apply(blind, p, x[:, perm]), apply(blind, p, x), atol=1e-6)
    assert np.abs(np.asarray(apply(seeing, p, x[:, perm]) - apply(seeing, p, x))).max() > 1e-4
    # Independent tables: sin-cos over (t, h, w) as in VJEPA_SPEC §1.2, with 12 columns per axis
    # (uniform_power) or D/2, D/4, D/4 columns.
    def axis(pos, width):
        omega = 1.0 / 10000 ** (np.arange(width // 2) / (width / 2))
        return np.concatenate([np.sin(pos * omega), np.cos(pos * omega)])

    for uniform, widths in ((True, (12, 12, 12)), (False, (D // 2, D // 4, D // 4))):
        table = np.stack([np.concatenate([axis(0, widths[0]), axis(h, widths[1]),
                                          axis(w, widths[2])])[:D]
                          for h in range(2) for w in range(2)])
        module = probe_lib.AttentiveClassifier(CLASSES, HEADS, dtype=jnp.float32, pos_grid=grid,
                                               uniform_power=uniform)
        np.testing.assert_allclose(apply(module, p, x),
                                   apply(blind, p, x + np.tile(table, (2, 1))),
                                   rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="whole segments"):
        apply(seeing, p, x[:, :6])


# ----------------------------------------------------------------------------- V-JEPA 2 form
def init_probe_v2(num_blocks=4):
    probe = probe_lib.AttentiveClassifier(CLASSES, HEADS, dtype=jnp.float32, form="vjepa2",
                                          num_blocks=num_blocks)
    x = np.random.default_rng(1).normal(size=(3, 6, D)).astype(np.float32)
    return probe, random_params(probe, x), x


def test_vjepa2_probe_has_its_blocks_before_the_cross_attention():
    probe, p, x = init_probe_v2()
    shapes = jax.tree.map(lambda a: a.shape, p)
    assert sorted(k for k in shapes if k.startswith("blocks_")) == ["blocks_0", "blocks_1",
                                                                     "blocks_2"]
    assert shapes["blocks_0"]["qkv"] == {"kernel": (D, 3 * D), "bias": (3 * D,)}
    assert shapes["blocks_0"]["proj"] == {"kernel": (D, D), "bias": (D,)}
    assert "proj" not in shapes["cross_attention_block"]["xattn"]
    # Forward equals the float64 reference (blocks on the tokens, then the cross-attention).
    np.testing.assert_allclose(np.asarray(apply(probe, p, x)), reference_classifier(p, x, HEADS),
                               rtol=1e-4, atol=1e-5)
    # Every block is on the path to the logits (a block that were skipped would change nothing).
    p2 = jax.tree.map(np.copy, p)
    p2["blocks_2"]["fc1"]["kernel"] = np.random.default_rng(9).normal(size=(D, 4 * D)).astype(
        np.float32)
    assert np.abs(np.asarray(apply(probe, p2, x) - apply(probe, p, x))).max() > 1e-3


def test_vjepa2_probe_init_rescales_each_block():
    probe = probe_lib.AttentiveClassifier(10, 4, form="vjepa2", num_blocks=4)
    p = jax.jit(probe.init)(jax.random.key(0), jnp.zeros((1, 2, 256)))["params"]
    # Block i (0-based): proj and fc2 divided by sqrt(2 (i + 1)); the cross-attention's fc2 by
    # sqrt(2 * 3), the last block's id, as V-JEPA 2's _rescale_blocks leaves it.
    for i in range(3):
        for name in ("proj", "fc2"):
            std = float(np.std(p[f"blocks_{i}"][name]["kernel"]))
            assert abs(std - 0.02 / math.sqrt(2 * (i + 1))) < 0.0007, (i, name, std)
        assert abs(float(np.std(p[f"blocks_{i}"]["qkv"]["kernel"])) - 0.02) < 0.0007
    std = float(np.std(p["cross_attention_block"]["fc2"]["kernel"]))
    assert abs(std - 0.02 / math.sqrt(6)) < 0.0007


def test_probe_form_comes_from_the_config():
    cfg = ml_collections.ConfigDict(dict(
        probe=dict(kind="attentive", num_heads=0, mlp_ratio=4.0, dtype="float32", pos_embed=False,
                   form="vjepa2", num_blocks=4),
        model=dict(attention="xla", uniform_power=True)))
    shape = tiny_encoder().shape
    module = probe_lib.probe_from_config(cfg, shape, CLASSES)
    assert (module.form, module.num_blocks, module.num_heads) == ("vjepa2", 4, HEADS)
    cfg.probe.form = "vjepa"
    with pytest.raises(ValueError, match="probe.num_blocks=4 with probe.form='vjepa'"):
        probe_lib.probe_from_config(cfg, shape, CLASSES)
    cfg.probe.form = "vjepa3"
    with pytest.raises(ValueError, match="probe.form='vjepa3'"):
        probe_lib.probe_from_config(cfg, shape, CLASSES)
