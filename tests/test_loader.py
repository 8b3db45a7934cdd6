"""load_encoder: features from a workdir, an official .pth.tar or safetensors, any clip size."""
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from common import ROOT
from workdirs import make_workdir
from vjepa_jax import convert, loader


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """(encoder module, TrainState with distinct online/target params, workdir, clip)."""
    root = tmp_path_factory.mktemp("loader")
    workdir = str(root / "run")
    _, encoder, _, state = make_workdir(workdir)
    s = encoder.shape
    clip = np.random.default_rng(1).normal(
        size=(2, s.num_frames, s.crop_size, s.crop_size, 3)).astype(np.float32)
    return encoder, state, workdir, clip, root


def test_workdir_target_and_online_encoders(run, caplog):
    encoder, state, workdir, clip, _ = run
    apply = jax.jit(encoder.apply)
    with caplog.at_level("WARNING"):
        target = loader.load_encoder(workdir)
    assert "read only" not in caplog.text and "read_only" not in caplog.text  # no Orbax noise
    tokens = np.asarray(target(clip))
    s = encoder.shape
    assert tokens.shape == (2, s.num_tokens, s.width) and tokens.dtype == np.float32
    np.testing.assert_allclose(tokens, apply({"params": state.target_params}, clip), atol=1e-6)
    online = loader.load_encoder(workdir, which="encoder")
    np.testing.assert_allclose(online(clip), apply({"params": state.params["encoder"]}, clip),
                               atol=1e-6)
    assert np.abs(np.asarray(online(clip)) - tokens).max() > 1e-3  # really the other encoder


def test_pth_tar_and_safetensors_give_the_workdir_features(run):
    pytest.importorskip("torch")
    _, _, workdir, clip, root = run
    want = np.asarray(loader.load_encoder(workdir)(clip))
    pth, st = str(root / "e.pth.tar"), str(root / "e.safetensors")
    convert.to_torch(workdir, pth)
    convert.to_torch(workdir, st, fmt="safetensors")
    for path in (pth, st):
        np.testing.assert_allclose(loader.load_encoder(path)(clip), want, atol=1e-6)


def test_other_clip_sizes_and_images(run):
    encoder, _, workdir, _, _ = run
    enc = loader.load_encoder(workdir)
    s = encoder.shape
    bigger = np.zeros((1, 2 * s.num_frames, s.crop_size + s.patch_size, s.crop_size, 3), np.float32)
    grid = (2 * s.num_frames // s.tubelet_size, s.crop_size // s.patch_size + 1, s.crop_size // s.patch_size)
    out = np.asarray(enc(bigger))
    assert out.shape == (1, int(np.prod(grid)), s.width) and np.isfinite(out).all()
    image = np.zeros((1, 1, s.crop_size, s.crop_size, 3), np.float32)
    assert enc(image).shape == (1, s.num_tokens // (s.num_frames // s.tubelet_size), s.width)
    with pytest.raises(ValueError, match="multiples of the patch"):
        enc(np.zeros((1, s.num_frames, s.crop_size + 1, s.crop_size, 3), np.float32))


def test_preprocess_is_imagenet_normalisation():
    frames = np.array([[[[0, 128, 255]]]], np.uint8)  # [T=1, H=1, W=1, 3]
    want = (np.array([0, 128, 255]) / 255.0 - np.array([0.485, 0.456, 0.406])) / np.array(
        [0.229, 0.224, 0.225])
    np.testing.assert_allclose(loader.Encoder.preprocess(frames)[0, 0, 0], want, rtol=1e-6)
    with pytest.raises(ValueError, match="uint8"):
        loader.Encoder.preprocess(frames.astype(np.float32))


def test_bad_paths_and_arguments(run, tmp_path):
    workdir = run[2]
    with pytest.raises(FileNotFoundError, match="no such workdir"):
        loader.load_encoder(str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="which="):
        loader.load_encoder(workdir, which="ema")
    with pytest.raises(FileNotFoundError, match="no checkpoints"):
        loader.load_encoder(str(tmp_path))


def test_package_import_stays_light_and_training_needs_no_torch():
    # torch made unimportable: training and the safetensors path must still import (tensorboardX
    # imports torch only when present).
    code = ("import sys; sys.modules['torch'] = None; import vjepa_jax; "
            "assert 'vjepa_jax.loader' not in sys.modules; from vjepa_jax import load_encoder; "
            "import vjepa_jax.train, vjepa_jax.convert; print(load_encoder.__name__)")
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                            env=env, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "load_encoder", result.stderr[-2000:]
