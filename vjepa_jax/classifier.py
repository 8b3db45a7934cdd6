"""A frozen encoder and an attentive probe as one video classifier, with the reference protocol.

    from vjepa_jax import load_classifier
    clf = load_classifier("/ckpt/vitl16.pth.tar", "/ckpt/k400-probe.pth.tar", segments=8, views=3)
    probs = clf.predict("video.mp4")       # [num_classes]: mean over views of the softmax
    logits = clf(clips)                    # uint8 [B, T, H, W, 3] -> [B, num_classes]

The encoder is a pretraining workdir or an official .pth.tar / .safetensors (`load_encoder`);
the probe an eval workdir (`python -m vjepa_jax.eval`, its latest probe checkpoint) or an
official probe file (interop/probe.py). A long video is classified as the reference's evals do
(VJEPA_SPEC §7.3): `segments` clips of the encoder's frame count spread over the video, each cut
into `views` square crops along its long side; each clip is encoded on its own, the tokens of a
view's segments are concatenated, the probe scores each view, and the prediction is the mean
over views of the per-view softmax (probabilities, not logits, as the reference averages).
Everything runs in float32.
"""
import json
import logging
import os

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from vjepa_jax import checkpoint, loader, methods, mismatch
from vjepa_jax.data import transforms, video as video_lib
from vjepa_jax.evaluation import configs as eval_configs
from vjepa_jax.interop import probe as probe_interop
from vjepa_jax.models import probe as probe_lib

_log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


class Probe:
    """A loaded attentive probe: Flax `module` and `params`, its form, the V-JEPA 1 `unused`
    xattn.proj values of an imported file, the protocol (segments, views, frame step) of the run
    that trained it and the final validation top-1 / top-5 it reported (None when unknown)."""

    def __init__(self, module, params, source, *, unused=None, protocol=None, reported=None,
                 eval_config=None):
        self.module, self.params, self.source = module, params, source
        self.unused = unused or {}
        self.protocol = protocol or {}
        self.reported = reported
        self.eval_config = eval_config  # the eval config of a probe workdir, else None

    @property
    def num_classes(self):
        return int(self.params["linear"]["bias"].shape[0])

    @property
    def form(self):
        return self.module.form if isinstance(self.module, probe_lib.AttentiveClassifier) else None


def _abstract_params(module, width, length=1):
    """Param shapes of a probe on `length` tokens (a probe with positions needs whole segments)."""
    tokens = jax.ShapeDtypeStruct((1, length, width), jnp.float32)
    return jax.eval_shape(module.init, jax.random.key(0), tokens)["params"]


def _probe_from_workdir(path, dtype, step=None):
    """The latest (or `step`) probe of an eval workdir with the eval config it was trained with."""
    mngr = checkpoint.manager(path, 1, read_only=True, folder="probe_checkpoints")
    try:
        steps = sorted(mngr.all_steps())
        if not steps:
            raise FileNotFoundError(f"{path}: no probe checkpoint in {mngr.directory} (an eval "
                                    "workdir holds probe_checkpoints/<step>/)")
        step = steps[-1] if step is None else step
        if step not in steps:
            raise ValueError(f"probe step {step}: {path} has probe checkpoints at steps {steps}")
        checkpoint.verify(mngr.directory, step)
        meta = checkpoint.read_meta(mngr, step)
        item_dir = os.path.join(str(mngr.directory), str(step), "state")
    finally:
        mngr.close()
    config = eval_configs.base_eval_config()
    config.update(json.loads(meta["config"]))
    if dtype is not None:
        config.probe.dtype = str(jnp.dtype(dtype))
    shape = methods.get(config.method).encoder_from_config(config.model).shape
    module = probe_lib.probe_from_config(config, shape, config.data.num_classes)
    cpu = jax.sharding.SingleDeviceSharding(jax.devices("cpu")[0])
    item = {"params": jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=cpu),
                                   _abstract_params(module, shape.width, shape.num_tokens))}
    try:
        params = ocp.PyTreeCheckpointer().restore(item_dir, args=ocp.args.PyTreeRestore(
            item=item,
            restore_args=jax.tree.map(lambda _: ocp.ArrayRestoreArgs(sharding=cpu), item),
            partial_restore=True))["params"]
    except Exception as e:  # corrupt or foreign data: name the directory, not an Orbax internal
        raise ValueError(f"{item_dir}: cannot restore the probe params: {type(e).__name__}: {e}"
                         ) from e
    mismatch.check_finite(params, f"{item_dir}: probe weights")
    protocol = {"segments": config.data.num_segments, "views": config.data.num_views,
                "frame_step": config.data.frame_step}
    return Probe(module, jax.device_get(params), f"{path} step {step}", protocol=protocol,
                 reported=_reported(path, step), eval_config=config)


def _reported(path, step):
    """{'val_top1', 'val_top5', 'epoch'} of the metrics row an eval run wrote at `step`, or None."""
    rows = os.path.join(path, "eval_metrics.jsonl")
    if not os.path.isfile(rows):
        return None
    with open(rows) as f:
        for line in f:
            row = json.loads(line)
            if row.get("step") == step:
                return {k: row[k] for k in ("epoch", "val_top1", "val_top5") if k in row}
    return None


def load_probe(path, num_heads, *, head=0, dtype="float32", attention="xla", step=None,
               allow_pickle=False):
    """A Probe from an eval workdir or an official probe file (.pth.tar / .pt).

    num_heads: the probe's head count, which an official file does not record (the official
    evals use the encoder's); a workdir's own setting wins. head: which probe of a V-JEPA 2 file's
    `classifiers` list. dtype: compute dtype of the probe; None: a workdir's own (probe.dtype of
    its run), float32 for a file.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        return _probe_from_workdir(path, dtype, step)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such probe file or eval workdir")
    sd, info = probe_interop.read_file(path, head, allow_pickle)
    if info["width"] % num_heads:
        raise ValueError(f"{path}: probe width {info['width']} is not divisible by "
                         f"num_heads={num_heads}")
    module = probe_lib.AttentiveClassifier(info["num_classes"], num_heads, info["mlp_ratio"],
                                           jnp.dtype(dtype or "float32"), attention,
                                           form=info["form"],
                                           num_blocks=info["num_blocks"])
    params, unused = probe_interop.from_torch(sd, _abstract_params(module, info["width"]),
                                              info["form"], path)
    _log.info("probe %s: form %s, %d blocks, %d classes, width %d", path, info["form"],
              info["num_blocks"], info["num_classes"], info["width"])
    return Probe(module, params, path, unused=unused)


class Classifier:
    """Encoder + probe: __call__(clips uint8 [B, T, H, W, 3]) -> logits [B, C], predict(path)."""

    def __init__(self, encoder, probe, *, segments=1, views=1, frame_step=4):
        self.encoder, self.probe = encoder, probe
        self.segments, self.views, self.frame_step = int(segments), int(views), int(frame_step)
        width = int(probe.params["linear"]["kernel"].shape[0])  # [D, C] in either probe kind
        if width != encoder.shape.width:
            raise ValueError(f"probe {probe.source} has width {width}, the encoder "
                             f"{encoder.source} {encoder.shape.width}: not a probe of this encoder")
        module, enc = probe.module, encoder.module

        def view_logits(enc_params, probe_params, video):
            tokens = probe_lib.frozen_features(enc, enc_params, video, jnp.float32)
            return probe_lib.view_logits(module, probe_params, tokens)

        self._view_logits = jax.jit(view_logits)

    @property
    def num_classes(self):
        return self.probe.num_classes

    def view_logits(self, video):
        """uint8 [B, segments, views, T, H, W, 3] -> logits [B, views, C] float32 (T = 1: images,
        repeated to the encoder's clip length)."""
        video = np.asarray(video)
        if video.dtype != np.uint8 or video.ndim != 7 or video.shape[-1] != 3:
            raise ValueError(f"expected uint8 video [B, segments, views, T, H, W, 3], got "
                             f"{video.dtype} {video.shape}")
        return self._view_logits(self.encoder.params, self.probe.params, video)

    def __call__(self, clips):
        """uint8 clips [B, T, H, W, 3] -> logits [B, C] (one clip, one view each); a protocol
        batch [B, segments, views, T, H, W, 3] -> per-view logits [B, views, C]."""
        clips = np.asarray(clips)
        if clips.ndim == 5:
            return self.view_logits(clips[:, None, None])[:, 0]
        return self.view_logits(clips)

    def probabilities(self, video):
        """uint8 [B, segments, views, T, H, W, 3] -> [B, C]: the mean over views of the softmax."""
        return np.asarray(probe_lib.view_probs(self.view_logits(video)))

    def clips(self, path, segments=None, views=None, frame_step=None, seed=0):
        """The protocol's input for one file: uint8 [segments, views, T, S, S, 3], S the encoder's
        crop. Videos: `segments` clips of the encoder's frame count (evenly shifted when the video
        is short, random inside each partition otherwise, fixed by `seed`), each cut into `views`
        crops; images: one centre view of one frame (segments and views ignored)."""
        s = self.encoder.shape
        path = os.fspath(path)
        if path.lower().endswith(IMAGE_SUFFIXES):
            from PIL import Image  # noqa: PLC0415 - only for image files

            try:
                image = np.asarray(Image.open(path).convert("RGB"))
            except OSError as e:
                raise ValueError(f"{path}: unreadable image: {e}") from e
            return transforms.eval_views(image[None], s.crop_size, 1)[None]
        segments = self.segments if segments is None else segments
        views = self.views if views is None else views
        frame_step = self.frame_step if frame_step is None else frame_step
        try:
            clips = video_lib.load_clips(path, np.random.default_rng(seed),
                                         frames_per_clip=s.num_frames, frame_step=frame_step,
                                         num_clips=segments, allow_overlap=True)
        except video_lib.VideoError as e:
            raise ValueError(f"{path}: unusable video: {e}") from e
        return np.stack([transforms.eval_views(c, s.crop_size, views) for c in clips])

    def predict(self, path, segments=None, views=None, frame_step=None, seed=0):
        """Class probabilities [C] of a video or image file: the mean over views of the softmax
        of each view's logits (VJEPA_SPEC §7.3); defaults from load_classifier."""
        return self.probabilities(self.clips(path, segments, views, frame_step, seed)[None])[0]

    def __repr__(self):
        return (f"Classifier({self.encoder.source} + {self.probe.source}: {self.num_classes} "
                f"classes, {self.segments} segments x {self.views} views)")


def top_k(probs, k):
    """(class indices [k], probabilities [k]) of the k most probable classes, best first."""
    probs = np.asarray(probs)
    order = np.argsort(-probs, kind="stable")[:k]
    return order, probs[order]


def load_classifier(encoder, probe, *, which="target", segments=None, views=None,
                    frame_step=None, num_heads=0, head=0, allow_pickle=False):
    """Classifier from an encoder (workdir, official file or a loaded `Encoder`) and a probe (eval
    workdir or official probe file).

    encoder None: the one a probe workdir was trained on (its `config.pretrained`). segments /
    views / frame_step: the protocol; default that of a probe workdir's run, else 1 x 1 and 4
    (K400 uses 8 x 3, SSv2 2 x 3, images 1 x 1). num_heads: the probe's heads (0: the encoder's).
    """
    probe_path = os.fspath(probe)
    if not os.path.exists(probe_path):
        raise FileNotFoundError(f"{probe_path}: no such probe file or eval workdir")
    saved = None
    if os.path.isdir(probe_path):
        saved = _probe_from_workdir(probe_path, "float32")
    if encoder is None:
        if saved is None:
            raise ValueError("encoder=None needs a probe workdir (it records its encoder); "
                             f"{probe_path} is a file")
        encoder, which = saved.eval_config.pretrained, saved.eval_config.which
        if not encoder:
            raise ValueError(f"{probe_path} probed a random-init encoder; pass the encoder")
    if not isinstance(encoder, loader.Encoder):
        encoder = loader.load_encoder(encoder, which=which, attention="xla",
                                      allow_pickle=allow_pickle)
    probe = saved or load_probe(probe_path, num_heads or encoder.shape.num_heads, head=head,
                                allow_pickle=allow_pickle)
    protocol = {"segments": 1, "views": 1, "frame_step": 4, **probe.protocol}
    for key, value in (("segments", segments), ("views", views), ("frame_step", frame_step)):
        if value is not None:
            protocol[key] = value
    return Classifier(encoder, probe, **protocol)
