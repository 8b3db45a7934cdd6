"""Attentive probe on frozen encoder tokens (VJEPA_SPEC §7.1) and the multi-segment/view protocol.

AttentiveClassifier = one learnable query token that cross-attends to the encoder tokens, an MLP
on the query, and a linear head. Two forms (`probe.form`): 'vjepa' is V-JEPA 1's probe;
'vjepa2' (VJEPA_SPEC §9.2) first runs `num_blocks - 1` ordinary self-attention blocks on the
encoder tokens, then the same cross-attention block (V-JEPA 2's evals use num_blocks 4).

The protocol functions turn a batch of clips uint8 [B, segments, views, T, S, S, 3] into frozen
tokens [B, views, segments * N, D] (segments concatenated along the token axis, no extra
position between them) and average the class probabilities over views (§7.3). Images arrive
with T = 1 and are repeated to the encoder's clip length before encoding (§7.4).

The V-JEPA 1 cross-attention owns a `proj` Linear that its forward never uses; it is left out
here, so weight decay never touches a dead parameter (interop/probe.py keeps an imported file's
values aside and writes them back on export). V-JEPA 2's cross-attention has none.
"""
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from vjepa_jax import preprocess
from vjepa_jax.models import pos_embed
from vjepa_jax.models.attention import attention, resolve_backend

PROBE_LN_EPS = 1e-5  # torch nn.LayerNorm default: the probe does not use the encoder's 1e-6
INIT = nn.initializers.normal(stddev=0.02)  # trunc_normal(std=0.02) with absolute +-2 bounds
FORMS = ("vjepa", "vjepa2")


def rescaled_init(layer_id):
    """N(0, 0.02 / sqrt(2 * layer_id)): the reference's _rescale_blocks on output projections."""
    return nn.initializers.normal(stddev=0.02 / math.sqrt(2.0 * layer_id))


def torch_linear_init(fan_in):
    """PyTorch's default nn.Linear init: kernel and bias ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1.0 / math.sqrt(fan_in)

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)
    return init


def _dense(features, dtype, name, kernel_init=INIT):
    return nn.Dense(features, dtype=dtype, param_dtype=jnp.float32, name=name,
                    kernel_init=kernel_init, bias_init=nn.initializers.zeros)


def _layer_norm(name):
    return nn.LayerNorm(epsilon=PROBE_LN_EPS, dtype=jnp.float32, param_dtype=jnp.float32, name=name)


class CrossAttention(nn.Module):
    """Queries [B, Q, D] attend to tokens [B, L, D] -> [B, Q, D]; no output projection (V-JEPA 1)."""
    num_heads: int
    dtype: jnp.dtype = jnp.bfloat16
    attention: str = "xla"

    @nn.compact
    def __call__(self, q, x):
        b, nq, d = q.shape
        heads, head_dim = self.num_heads, d // self.num_heads
        q = _dense(d, self.dtype, "q")(q.astype(self.dtype)).reshape(b, nq, heads, head_dim)
        # kv output columns are (k|v) x head x head_dim, the reference's row order.
        kv = _dense(2 * d, self.dtype, "kv")(x.astype(self.dtype))
        k, v = jnp.moveaxis(kv.reshape(b, x.shape[1], 2, heads, head_dim), 2, 0)
        backend = resolve_backend(self.attention, self.dtype)
        return attention(q, k, v, backend).reshape(b, nq, d)


class CrossAttentionBlock(nn.Module):
    """q + xattn(q, LN(x)), then q + MLP(LN(q)): q [B, Q, D], x [B, L, D] -> [B, Q, D] float32.

    fc2_layer_id: fc2 starts at std 0.02 / sqrt(2 * fc2_layer_id) (1 in V-JEPA 1; in V-JEPA 2 the
    number of self-attention blocks before it, or 1 without any).
    """
    num_heads: int
    mlp_ratio: float = 4.0
    dtype: jnp.dtype = jnp.bfloat16
    attention: str = "xla"
    fc2_layer_id: int = 1

    @nn.compact
    def __call__(self, q, x):
        d = q.shape[-1]
        # Only the encoder tokens are normalised before the cross-attention, not the query.
        y = CrossAttention(self.num_heads, self.dtype, self.attention, name="xattn")(
            q, _layer_norm("norm1")(x))
        q = q.astype(jnp.float32) + y.astype(jnp.float32)
        y = _layer_norm("norm2")(q).astype(self.dtype)
        y = _dense(int(d * self.mlp_ratio), self.dtype, "fc1")(y)
        y = jax.nn.gelu(y, approximate=False)  # exact erf GELU, as torch nn.GELU()
        fc2 = _dense(d, self.dtype, "fc2", rescaled_init(self.fc2_layer_id))
        return q + fc2(y).astype(jnp.float32)


class SelfAttentionBlock(nn.Module):
    """V-JEPA 2's probe block on the encoder tokens: x + Attn(LN(x)), then x + MLP(LN(x)).

    x [B, L, D] -> [B, L, D] float32. An ordinary pre-norm transformer block (fused qkv, output
    projection `proj`, exact GELU), but with the probe's LayerNorm eps 1e-5; `proj` and `fc2`
    start at std 0.02 / sqrt(2 * layer_id) (layer_id 1-based), as the reference rescales them.
    """
    num_heads: int
    mlp_ratio: float = 4.0
    dtype: jnp.dtype = jnp.bfloat16
    attention: str = "xla"
    layer_id: int = 1

    @nn.compact
    def __call__(self, x):
        b, length, d = x.shape
        heads = self.num_heads
        x = x.astype(jnp.float32)
        y = _layer_norm("norm1")(x).astype(self.dtype)
        # qkv output columns are (q|k|v) x head x head_dim, the reference's row order.
        qkv = _dense(3 * d, self.dtype, "qkv")(y)
        q, k, v = jnp.moveaxis(qkv.reshape(b, length, 3, heads, d // heads), 2, 0)
        y = attention(q, k, v, resolve_backend(self.attention, self.dtype)).reshape(b, length, d)
        x = x + _dense(d, self.dtype, "proj", rescaled_init(self.layer_id))(y).astype(jnp.float32)
        y = _layer_norm("norm2")(x).astype(self.dtype)
        y = jax.nn.gelu(_dense(int(d * self.mlp_ratio), self.dtype, "fc1")(y), approximate=False)
        return x + _dense(d, self.dtype, "fc2", rescaled_init(self.layer_id))(y).astype(jnp.float32)


class AttentiveClassifier(nn.Module):
    """Tokens [B, L, D] -> logits [B, num_classes] float32 (query token, cross-attention, linear).

    form 'vjepa' (V-JEPA 1, num_blocks 1) or 'vjepa2': num_blocks - 1 self-attention blocks
    `blocks_{i}` on the tokens before the cross-attention (VJEPA_SPEC §9.2).
    """
    num_classes: int
    num_heads: int
    mlp_ratio: float = 4.0
    dtype: jnp.dtype = jnp.bfloat16
    attention: str = "xla"
    # Not in the reference (its probe is position-blind): a token grid (T', H', W') here adds the
    # fixed sin-cos table of that grid (the encoder's recipe, `uniform_power` included) to every
    # segment's tokens before the cross-attention.
    pos_grid: tuple = ()
    uniform_power: bool = True
    form: str = "vjepa"
    num_blocks: int = 1

    @nn.compact
    def __call__(self, x):
        check_form(self.form, self.num_blocks)
        b, length, d = x.shape
        if self.pos_grid:
            table = pos_embed.sincos_3d(d, self.pos_grid, self.uniform_power)
            if length % len(table):
                raise ValueError(f"{length} tokens are not whole segments of the {self.pos_grid} "
                                 f"grid ({len(table)} tokens)")
            x = x.astype(jnp.float32) + jnp.tile(table, (length // len(table), 1))
        query = self.param("query_tokens", INIT, (1, 1, d), jnp.float32)
        for i in range(self.num_blocks - 1):  # V-JEPA 2: self-attention on the tokens first
            x = SelfAttentionBlock(self.num_heads, self.mlp_ratio, self.dtype, self.attention,
                                   layer_id=i + 1, name=f"blocks_{i}")(x)
        q = jnp.broadcast_to(query, (b, 1, d))
        pooled = CrossAttentionBlock(self.num_heads, self.mlp_ratio, self.dtype, self.attention,
                                     fc2_layer_id=max(self.num_blocks - 1, 1),
                                     name="cross_attention_block")(q, x)[:, 0]
        # The head lives outside the pooler and keeps PyTorch's default Linear init.
        head = nn.Dense(self.num_classes, dtype=jnp.float32, param_dtype=jnp.float32, name="linear",
                        kernel_init=torch_linear_init(d), bias_init=torch_linear_init(d))
        return head(pooled)


class LinearClassifier(nn.Module):
    """Tokens [B, L, D] -> logits [B, num_classes]: the mean token through one linear layer.

    I-JEPA's evaluation (IJEPA_SPEC §7): average-pooled target-encoder tokens, a linear head.
    """
    num_classes: int

    @nn.compact
    def __call__(self, x):
        d = x.shape[-1]
        head = nn.Dense(self.num_classes, dtype=jnp.float32, param_dtype=jnp.float32, name="linear",
                        kernel_init=torch_linear_init(d), bias_init=torch_linear_init(d))
        return head(x.astype(jnp.float32).mean(axis=1))


def check_form(form, num_blocks):
    """Raise ValueError unless (probe.form, probe.num_blocks) is a probe this module builds."""
    if form not in FORMS:
        raise ValueError(f"probe.form={form!r}: expected one of {FORMS}")
    if not isinstance(num_blocks, int) or num_blocks < 1:
        raise ValueError(f"probe.num_blocks={num_blocks!r}: expected an integer >= 1")
    if form == "vjepa" and num_blocks != 1:
        raise ValueError(f"probe.num_blocks={num_blocks} with probe.form='vjepa': V-JEPA 1's extra "
                         "blocks (after the cross-attention, unused by its evals) are not built "
                         "here; probe.form='vjepa2' puts them before it, as V-JEPA 2 does")


def probe_from_config(config, encoder_shape, num_classes):
    """The probe of an eval config: probe.kind 'attentive' (AttentiveClassifier, heads 0 = the
    encoder's, dtype = probe.dtype, probe.form / probe.num_blocks) or 'linear' (LinearClassifier
    on the mean token)."""
    p = config.probe
    if num_classes < 1:
        raise ValueError(f"data.num_classes={num_classes} must be >= 1")
    if p.kind == "linear":
        return LinearClassifier(num_classes)
    if p.kind != "attentive":
        raise ValueError(f"probe.kind={p.kind!r}: expected 'attentive' or 'linear'")
    if p.pos_embed and encoder_shape.num_frames == 1:
        raise ValueError("probe.pos_embed adds the video encoders' 3-D table; it is not "
                         "available for image encoders")
    heads = p.num_heads or encoder_shape.num_heads
    if encoder_shape.width % heads:
        raise ValueError(f"probe.num_heads={heads} does not divide the encoder width "
                         f"{encoder_shape.width}")
    form, num_blocks = p.get("form", "vjepa"), p.get("num_blocks", 1)  # older metas lack them
    check_form(form, num_blocks)
    return AttentiveClassifier(num_classes, heads, p.mlp_ratio, jnp.dtype(p.dtype),
                               config.model.attention,
                               tuple(encoder_shape.grid) if p.pos_embed else (),
                               config.model.uniform_power if p.pos_embed else True,
                               form=form, num_blocks=num_blocks)


# ----------------------------------------------------------------------------- protocol
def as_clips(video, num_frames):
    """uint8 [B, S, V, T, H, W, 3] -> same with T = num_frames; an image (T = 1) is repeated."""
    if video.ndim != 7:
        raise ValueError(f"expected video [B, segments, views, T, H, W, 3], got shape {video.shape}")
    if video.shape[3] == 1 and num_frames > 1:
        # The reference encodes an image as a clip of the same frame repeated num_frames times.
        video = jnp.repeat(video, num_frames, axis=3)
    if video.shape[3] != num_frames:
        raise ValueError(f"clips have {video.shape[3]} frames, the encoder expects {num_frames}")
    return video


def frozen_features(encoder, params, video, feature_dtype=jnp.bfloat16, encoder_batch=0):
    """Clips uint8 [B, S, V, T, H, W, 3] -> tokens [B, V, S * N, D] in feature_dtype, no gradient.

    Every segment and view is encoded independently as its own clip; for each view the tokens of
    all segments are concatenated. encoder_batch > 0 encodes that many clips at a time.
    """
    video = as_clips(video, encoder.shape.num_frames)
    b, s, v = video.shape[:3]
    clips = video.reshape((b * s * v,) + video.shape[3:])

    def encode(x):
        return encoder.apply({"params": params}, preprocess.normalize(x)).astype(feature_dtype)

    if encoder_batch and encoder_batch < clips.shape[0]:
        if clips.shape[0] % encoder_batch:
            raise ValueError(f"probe.encoder_batch={encoder_batch} must divide the {clips.shape[0]} "
                             f"clips of a batch ({b} x {s} segments x {v} views)")
        chunks = clips.reshape((-1, encoder_batch) + clips.shape[1:])
        tokens = jax.lax.map(encode, chunks)
        tokens = tokens.reshape((-1,) + tokens.shape[2:])
    else:
        tokens = encode(clips)
    n, d = tokens.shape[1:]
    tokens = tokens.reshape(b, s, v, n, d).transpose(0, 2, 1, 3, 4).reshape(b, v, s * n, d)
    return jax.lax.stop_gradient(tokens)


def view_logits(probe, probe_params, tokens):
    """Tokens [B, V, L, D] -> logits [B, V, C] float32, each view classified on its own."""
    b, v = tokens.shape[:2]
    logits = probe.apply({"params": probe_params}, tokens.reshape((b * v,) + tokens.shape[2:]))
    return logits.reshape(b, v, -1)


def view_loss(logits, labels):
    """Mean over views (and batch) of the cross-entropy: logits [B, V, C], labels [B] -> [B]."""
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    nll = -jnp.take_along_axis(logp, labels[:, None, None].astype(jnp.int32), axis=-1)[..., 0]
    return nll.mean(axis=1)


def view_probs(logits):
    """Prediction of the multi-view protocol: mean over views of the softmax, [B, V, C] -> [B, C]."""
    return jax.nn.softmax(logits.astype(jnp.float32), axis=-1).mean(axis=1)


def topk_correct(probs, labels, k):
    """[B] float32: 1 where the label is among the k highest probabilities (k capped at C)."""
    k = min(k, probs.shape[-1])
    label_p = jnp.take_along_axis(probs, labels[:, None].astype(jnp.int32), axis=-1)
    # Rank = number of classes strictly more probable than the label; ties count in its favour.
    rank = jnp.sum(probs > label_p, axis=-1)
    return (rank < k).astype(jnp.float32)
