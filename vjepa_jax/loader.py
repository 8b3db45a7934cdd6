"""Features from a trained V-JEPA encoder in a few lines.

    from vjepa_jax import load_encoder
    encoder = load_encoder("/path/to/workdir")          # or an official .pth.tar / .safetensors
    tokens = encoder(encoder.preprocess(frames_uint8))  # [B, T, H, W, 3] -> [B, N, D]

The path may also be a transformers VJEPA2 directory (model.safetensors + config.json).
Clips may differ from the training size (T a multiple of the tubelet, H and W of the patch):
the sin-cos position table is resized like the reference's interpolate_pos_encoding; V-JEPA 2's
RoPE takes the positions of whatever grid the clip gives.
"""
import json
import logging
import os

import jax
import jax.numpy as jnp
import numpy as np

from vjepa_jax import config as config_lib, methods, mismatch, preprocess, workdir
from vjepa_jax.interop import files, hf, state_dicts
from vjepa_jax.models import vit

_log = logging.getLogger(__name__)


class Encoder:
    """A frozen encoder: __call__(clips [B, T, H, W, 3] normalised float32) -> tokens [B, N, D]."""

    def __init__(self, module, params, model_config, source):
        self.module = module  # vit.VisionTransformer
        self.params = params  # Flax params on the default device
        self.model_config = model_config  # the `config.model` dict it was trained with
        self.source = source
        self._apply = jax.jit(lambda p, x: module.apply({"params": p}, x))

    @property
    def shape(self):
        """Geometry (width, depth, heads, patch/tubelet, training frames and crop)."""
        return self.module.shape

    def __call__(self, clips):
        """Normalised clips [B, T, H, W, 3] (or images [B, H, W, 3] / [B, 1, H, W, 3]) -> [B, N, D]."""
        clips = jnp.asarray(clips)
        s = self.shape
        if clips.ndim == 4 and clips.shape[-1] == 3:  # images [B, H, W, 3]: one-frame clips
            clips = clips[:, None]
        if clips.ndim != 5 or clips.shape[-1] != 3:
            raise ValueError(f"clips must be [B, T, H, W, 3], got shape {tuple(clips.shape)}")
        _, t, h, w, _ = clips.shape
        if (t != 1 and t % s.tubelet_size) or h % s.patch_size or w % s.patch_size:
            raise ValueError(f"clip shape {tuple(clips.shape)}: T must be 1 or a multiple of the "
                             f"tubelet {s.tubelet_size}, H and W multiples of the patch {s.patch_size}")
        if not jnp.issubdtype(clips.dtype, jnp.floating):
            raise ValueError(f"clips have dtype {clips.dtype}; pass uint8 frames through "
                             "encoder.preprocess first")
        return self._apply(self.params, clips.astype(jnp.float32))

    @staticmethod
    def preprocess(frames):
        """uint8 frames [..., H, W, 3] in 0..255 -> float32 with ImageNet mean/std normalisation."""
        frames = jnp.asarray(frames)
        if frames.dtype != jnp.uint8 or frames.shape[-1:] != (3,):
            raise ValueError(f"preprocess expects uint8 RGB frames [..., H, W, 3], got "
                             f"{frames.dtype} {tuple(frames.shape)}")
        return preprocess.normalize(frames)

    def __repr__(self):
        s = self.shape
        return (f"Encoder({self.source}: width {s.width}, depth {s.depth}, {s.num_heads} heads, "
                f"trained on {s.num_frames}x{s.crop_size}x{s.crop_size})")


def _module(method, model_cfg, dtype, attention):
    """The encoder module of a stored `config.model` (keys added since at their defaults)."""
    m = config_lib.base_config(method).model
    m.update(model_cfg)
    m.update(dtype=str(jnp.dtype(dtype)), attention=attention)
    return methods.get(method).encoder_from_config(m), m.to_dict()


def _from_workdir(path, which, step):
    part = "target_params" if which == "target" else "params/encoder"
    tree, config, _, step = workdir.read_workdir(path, step, (part,))
    params = tree["target_params"] if which == "target" else tree["params"]["encoder"]
    return config.method, config.model.to_dict(), params, f"{path} step {step} ({which})"


def _from_state_dict(sd, num_frames, crop_size, where, model_cfg, method, rope=None):
    """Geometry (unless stored) and strict params of an official-layout encoder state dict."""
    layout = methods.get(method).layout
    if model_cfg is None:
        geometry = layout.infer_model(sd, None, num_frames, crop_size)
        model_cfg = layout.model_config(geometry).to_dict()
    if rope is not None:
        if model_cfg.get("rope", "none") == "none":
            raise ValueError(f"rope={rope!r}: {where} is a {method} encoder with a position "
                             "table, not V-JEPA 2's RoPE")
        model_cfg = dict(model_cfg, rope=rope)
    encoder, _ = _module(method, model_cfg, "float32", "xla")
    params = state_dicts.module_from_torch(sd, vit.abstract_params(encoder),
                                           layout.SPECS["encoder"], layout.tables(encoder)[0],
                                           where)
    return model_cfg, params


def _from_hf_dir(path, which, num_frames, crop_size, rope):
    """(model config, params, source) of a transformers VJEPA2 directory (one encoder)."""
    sd, _, hf_config, meta = hf.read_model_dir(path)
    if which != meta.get("vjepa_jax.which", which):
        _log.warning("%s holds the %s encoder (which=%r ignored)", path, meta["vjepa_jax.which"],
                     which)
    if "vjepa_jax.model" in meta:  # our own export: the exact config.model
        model_cfg = json.loads(meta["vjepa_jax.model"])
    else:
        geometry = hf.geometry(hf_config, os.path.join(path, hf.CONFIG))
        geometry.update(num_frames=num_frames or geometry["num_frames"],
                        crop_size=crop_size or geometry["crop_size"])
        model_cfg = hf.model_config(geometry).to_dict()
    model_cfg, params = _from_state_dict(sd, None, None, os.path.join(path, hf.WEIGHTS), model_cfg,
                                         hf.METHOD, rope)
    return model_cfg, params, path


def load_encoder(path, which="target", *, step=None, num_frames=None, crop_size=None,
                 dtype="float32", attention="auto", allow_pickle=False, rope=None):
    """Encoder from a workdir, an official .pth.tar, a .safetensors export or a transformers
    VJEPA2 directory (model.safetensors + config.json).

    which: 'target' (EMA target encoder, the one the reference evaluates) or 'encoder' (online).
    step: workdir checkpoint (default latest). num_frames / crop_size: training clip size of a
    .pth.tar when its position table is ambiguous (default: read from the table); a V-JEPA 2
    file has no table (default 16 x 256). rope: 'tiled' (default) or 'interleaved' (V-JEPA 2.1)
    for an official V-JEPA 2 file, which does not record it. dtype: compute dtype ('float32' or
    'bfloat16'); params stay float32.
    """
    if which not in ("target", "encoder"):
        raise ValueError(f"which={which!r}: use 'target' (EMA target encoder) or 'encoder'")
    path = os.fspath(path)
    if hf.is_model_dir(path):
        method = hf.METHOD
        model_cfg, params, source = _from_hf_dir(path, which, num_frames, crop_size, rope)
    elif os.path.isdir(path):
        method, model_cfg, params, source = _from_workdir(path, which, step)
    elif path.endswith(".safetensors"):
        tensors, meta = files.read_safetensors(path)
        if which != meta.get("vjepa_jax.which", which):
            _log.warning("%s holds the %s encoder (which=%r ignored)", path,
                         meta["vjepa_jax.which"], which)
        stored = json.loads(meta["vjepa_jax.model"]) if "vjepa_jax.model" in meta else None
        method = meta.get("vjepa_jax.method") or methods.detect(tensors)
        model_cfg, params = _from_state_dict(tensors, num_frames, crop_size, path, stored, method)
        source = path
    elif os.path.isfile(path):
        ckpt = files.read_torch_file(path, allow_pickle)
        sd = files.pick_encoder(ckpt, which, path)
        method = methods.detect(sd)
        model_cfg, params = _from_state_dict(sd, num_frames, crop_size, f"{path} ({which})",
                                             None, method, rope)
        source = f"{path} ({which})"
    else:
        raise FileNotFoundError(f"{path}: no such workdir or checkpoint file")
    module, model_cfg = _module(method, model_cfg, dtype, attention)
    params = jax.tree.map(lambda x: jnp.asarray(np.asarray(x), jnp.float32), params)
    mismatch.check_finite(params, f"{source}: encoder weights")  # NaN weights: NaN features
    return Encoder(module, params, model_cfg, source)
