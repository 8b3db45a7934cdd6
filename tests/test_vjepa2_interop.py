"""V-JEPA 2 interop: the official layout (no position tables), parity with an independent PyTorch
V-JEPA 2 (torch_reference_vjepa2.py) for both RoPE layouts, exact round trips, load_encoder, and
the Hugging Face transformers VJEPA2 directory."""
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")

import torch_reference as ref1  # noqa: E402
import torch_reference_vjepa2 as ref  # noqa: E402
from common import ROOT  # noqa: E402
from workdirs import make_workdir  # noqa: E402
from vjepa_jax import checkpoint, config as config_lib, convert, loader, methods, mismatch  # noqa: E402
from vjepa_jax import workdir as workdir_lib  # noqa: E402
from vjepa_jax.interop import files, hf, state_dicts  # noqa: E402
from vjepa_jax.methods.vjepa import layout as vjepa_layout  # noqa: E402
from vjepa_jax.methods.vjepa2 import layout  # noqa: E402
from vjepa_jax.models import vit  # noqa: E402

STEP = 6
PREFIX = "module.backbone."
LAYOUTS = ("tiled", "interleaved")


def tiny_config(rope="tiled"):
    """A V-JEPA 2 model at test size: encoder heads of 64 (20 + 20 + 20 + 4 rotated as ViT-L's),
    predictor heads of 32 (10 x 3 + 2 as the reference predictor's), 6 mask tokens."""
    c = config_lib.base_config("vjepa2")
    c.model.update(variant="tiny", depth=2, num_frames=4, crop_size=32, patch_size=8,
                   pred_width=64, pred_depth=2, pred_num_heads=2, dtype="float32", rope=rope)
    c.mask_count_multiple = 8
    c.data.update(source="synthetic", batch_size=8, num_workers=0, synthetic_size=64)
    c.optim.update(epochs=2, ipe=3, warmup=1)
    c.mesh.update(data=1, fsdp=1)
    return c


def make_vjepa2_workdir(path, config):
    """A checkpoint of `config` with every array non-trivial, saved directly (nothing compiled)."""
    state = make_workdir(path, STEP, config=config)[3]
    return methods.get("vjepa2").build(config), state


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(config, model bundle, state, workdir, .pth.tar path, torch dict, clip, root)."""
    root = tmp_path_factory.mktemp("vjepa2_interop")
    workdir = str(root / "run")
    config = tiny_config()
    model, state = make_vjepa2_workdir(workdir, config)
    out = str(root / "export.pt")
    convert.to_torch(workdir, out)
    ckpt = torch.load(out, map_location="cpu", weights_only=True)
    s = model.encoder.shape
    clip = np.random.default_rng(1).normal(
        size=(2, s.num_frames, s.crop_size, s.crop_size, 3)).astype(np.float32)
    return config, model, state, workdir, out, ckpt, clip, root


@pytest.fixture(scope="module")
def apply_fns():
    """Jitted encoder / predictor applies per RoPE layout (compiled once for the module)."""
    out = {}
    for rope in LAYOUTS:
        model = methods.get("vjepa2").build(tiny_config(rope))
        out[rope] = (jax.jit(model.encoder.apply), jax.jit(model.predictor.apply, static_argnums=4))
    return out


def spec_shapes(d, depth, hidden, t, p, dp, pred_depth, tokens):
    """VJEPA_SPEC §6.2 names and shapes without the two tables (§9.1: RoPE, no pos_embed)."""
    def block(prefix, w, h):
        return {f"{prefix}.norm1.weight": (w,), f"{prefix}.norm1.bias": (w,),
                f"{prefix}.attn.qkv.weight": (3 * w, w), f"{prefix}.attn.qkv.bias": (3 * w,),
                f"{prefix}.attn.proj.weight": (w, w), f"{prefix}.attn.proj.bias": (w,),
                f"{prefix}.norm2.weight": (w,), f"{prefix}.norm2.bias": (w,),
                f"{prefix}.mlp.fc1.weight": (h, w), f"{prefix}.mlp.fc1.bias": (h,),
                f"{prefix}.mlp.fc2.weight": (w, h), f"{prefix}.mlp.fc2.bias": (w,)}
    enc = {"patch_embed.proj.weight": (d, 3, t, p, p), "patch_embed.proj.bias": (d,),
           "norm.weight": (d,), "norm.bias": (d,)}
    for i in range(depth):
        enc.update(block(f"blocks.{i}", d, hidden))
    pred = {"predictor_embed.weight": (dp, d), "predictor_embed.bias": (dp,),
            "predictor_norm.weight": (dp,), "predictor_norm.bias": (dp,),
            "predictor_proj.weight": (d, dp), "predictor_proj.bias": (d,)}
    pred.update({f"mask_tokens.{i}": (1, 1, dp) for i in range(tokens)})
    for i in range(pred_depth):
        pred.update(block(f"predictor_blocks.{i}", dp, 4 * dp))
    return enc, pred


def _torch_models(model, rope):
    s, p = model.encoder.shape, model.predictor
    enc = ref.VisionTransformer(s.width, s.depth, s.num_heads, s.mlp_hidden, s.patch_size,
                                s.tubelet_size, rope)
    pred = ref.Predictor(s.width, p.width, p.depth, p.num_heads, s.grid, p.num_mask_tokens, rope)
    return enc, pred


def _same(a, b):
    return jax.tree.all(jax.tree.map(lambda x, y: np.array_equal(np.asarray(x), np.asarray(y)), a, b))


def _stripped(sd):
    return {k[len(PREFIX):]: np.asarray(v) for k, v in sd.items()}


# ---------------------------------------------------------------------------------------------
# Official layout


def test_export_has_the_official_names_without_tables(exported):
    config, model, _, _, _, ckpt, _, _ = exported
    s, p = model.encoder.shape, model.predictor
    enc, pred = spec_shapes(s.width, s.depth, s.mlp_hidden, s.tubelet_size, s.patch_size, p.width,
                            p.depth, config.model.pred_num_mask_tokens)
    for key, shapes in (("encoder", enc), ("target_encoder", enc), ("predictor", pred)):
        assert all(k.startswith(PREFIX) for k in ckpt[key]), key
        assert {k[len(PREFIX):]: tuple(v.shape) for k, v in ckpt[key].items()} == shapes, key
    assert ckpt["epoch"] == STEP // config.optim.ipe and ckpt["loss"] == 0.25


@pytest.mark.parametrize("rope", LAYOUTS)
def test_reference_pytorch_vjepa2_loads_strictly_and_matches_jax(exported, apply_fns, rope):
    _, model, state, _, _, ckpt, video, _ = exported
    enc_t, pred_t = _torch_models(model, rope)
    tgt_t = _torch_models(model, rope)[0]
    for module, key in ((enc_t, "encoder"), (tgt_t, "target_encoder"), (pred_t, "predictor")):
        result = ref.ddp_wrapped(module).load_state_dict(ckpt[key], strict=True)
        assert not result.missing_keys and not result.unexpected_keys

    n = model.encoder.shape.num_tokens
    rng = np.random.default_rng(0)
    # Context and targets interleave in index order, so the predictor's sort really permutes.
    perm = rng.permutation(n)
    ctx = np.stack([np.sort(perm[:12]), np.sort(rng.permutation(n)[:12])])
    tgt = np.stack([np.sort(perm[12:21]), np.sort(np.setdiff1d(np.arange(n), ctx[1])[:9])])
    video_t = torch.from_numpy(video).permute(0, 4, 1, 2, 3)
    apply_enc, apply_pred = apply_fns[rope]
    errors = {}
    with torch.no_grad():
        full = np.asarray(apply_enc({"params": state.target_params}, video))
        errors["target encoder"] = np.abs(full - tgt_t(video_t).numpy()).max()
        z = apply_enc({"params": state.params["encoder"]}, video, jnp.asarray(ctx))
        errors["encoder, masked"] = np.abs(
            np.asarray(z) - enc_t(video_t, torch.from_numpy(ctx)).numpy()).max()
        for i in (0, 1):
            got = apply_pred({"params": state.params["predictor"]}, z, jnp.asarray(ctx),
                             jnp.asarray(tgt), i)
            want = pred_t(torch.from_numpy(np.array(z)), torch.from_numpy(ctx),
                          torch.from_numpy(tgt), i).numpy()
            errors[f"predictor {i}"] = np.abs(np.asarray(got) - want).max()
    print(f"max abs error, float32, {rope}:", errors)
    assert max(errors.values()) < 1e-4, errors
    assert full.std() > 0.1  # non-trivial outputs
    # The layout matters: the other layout's reference disagrees with these tokens.
    other = _torch_models(model, LAYOUTS[1 - LAYOUTS.index(rope)])[0]
    ref.ddp_wrapped(other).load_state_dict(ckpt["target_encoder"], strict=True)
    with torch.no_grad():
        assert np.abs(full - other(video_t).numpy()).max() > 1e-2


def test_adamw_state_loads_into_torch_with_the_reference_groups(exported):
    _, model, state, _, _, ckpt, _, _ = exported
    enc_t, pred_t = _torch_models(model, "tiled")
    ref.ddp_wrapped(enc_t).load_state_dict(ckpt["encoder"])
    ref.ddp_wrapped(pred_t).load_state_dict(ckpt["predictor"])
    opt = torch.optim.AdamW(ref1.official_param_groups(enc_t, pred_t))
    opt.load_state_dict(ckpt["opt"])
    adam = state.opt_state.inner_state[0]
    got = opt.state[enc_t.blocks[1].attn.qkv.weight]
    np.testing.assert_array_equal(got["exp_avg"].numpy(),
                                  np.asarray(adam.mu["encoder"]["blocks_1"]["qkv"]["kernel"]).T)
    got = opt.state[pred_t.mask_tokens[5]]
    np.testing.assert_array_equal(got["exp_avg_sq"].numpy(),
                                  np.asarray(adam.nu["predictor"]["mask_tokens_5"]))
    assert float(got["step"]) == STEP


def test_torch_round_trip_is_exact(exported, tmp_path):
    config, _, state, _, out, _, _, _ = exported
    workdir = str(tmp_path / "imported")
    assert convert.from_torch(out, workdir, tiny_config()) == STEP
    tree, got_config, _, step = workdir_lib.read_workdir(
        workdir, parts=("step", "params", "target_params", "opt_state"))
    assert step == STEP and got_config.method == "vjepa2"
    assert _same(tree["params"], state.params) and _same(tree["target_params"], state.target_params)
    adam_in, adam_out = state.opt_state.inner_state[0], tree["opt_state"].inner_state[0]
    assert _same((adam_in.mu, adam_in.nu), (adam_out.mu, adam_out.nu))
    assert int(adam_out.count) == STEP


def test_detect_tells_vjepa1_from_vjepa2(exported):
    ckpt = exported[5]
    v2 = ckpt["target_encoder"]
    v1 = dict(v2, **{PREFIX + "pos_embed": torch.zeros(1, 32, 192)})
    assert methods.detect(v2) == "vjepa2" and methods.detect(v1) == "vjepa"
    assert layout.matches(v2) and not layout.matches(v1)
    assert vjepa_layout.matches(v1) and not vjepa_layout.matches(v2)
    with pytest.raises(ValueError, match="pos_embed table: a V-JEPA 1 file"):
        layout.infer_model(v1)


def test_geometry_defaults_to_the_pretraining_clip(exported):
    _, model, _, _, _, ckpt, _, _ = exported
    geo = layout.infer_model(ckpt["target_encoder"], ckpt["predictor"])
    s = model.encoder.shape
    assert (geo["width"], geo["depth"], geo["mlp_hidden"], geo["patch_size"]) == (
        s.width, s.depth, s.mlp_hidden, s.patch_size)
    assert (geo["num_frames"], geo["crop_size"]) == (16, 256)  # not in the file: §9.3's clip
    assert (geo["pred_width"], geo["pred_depth"], geo["num_mask_tokens"]) == (64, 2, 6)
    m = layout.model_config(layout.infer_model(ckpt["target_encoder"], num_frames=4, crop_size=32))
    assert (m.variant, m.depth, m.num_frames, m.crop_size, m.rope) == ("tiny", 2, 4, 32, "tiled")
    # 1408 wide is V-JEPA 2's 22-head ViT-g, not V-JEPA 1's 16-head 'giant'.
    big = layout.model_config(dict(geo, width=1408, depth=40, mlp_hidden=6144))
    assert big.variant == "giant_xformers" and vit.shape_from_config(big).num_heads == 22


def test_strict_loading_names_every_bad_key(exported):
    _, model, _, _, _, ckpt, _, _ = exported
    sd = dict(ckpt["encoder"])
    del sd[PREFIX + "blocks.1.mlp.fc2.bias"]
    sd[PREFIX + "pos_embed"] = torch.zeros(1, 32, 192)
    sd[PREFIX + "blocks.0.attn.qkv.weight"] = torch.zeros(5, 5)
    with pytest.raises(mismatch.StrictLoadError) as e:
        state_dicts.module_from_torch(sd, vit.abstract_params(model.encoder), layout.ENCODER,
                                      None, "test file")
    msg = str(e.value)
    for name in ("test file", "blocks.1.mlp.fc2.bias", "pos_embed",
                 "blocks.0.attn.qkv.weight: file (5, 5), model (576, 192)"):
        assert name in msg, msg
    pred = {k: v for k, v in ckpt["predictor"].items() if "mask_tokens.5" not in k}
    with pytest.raises(ValueError, match="has 5 mask tokens"):
        convert.from_torch(_save(dict(ckpt, predictor=pred), exported[7] / "five.pt"),
                           str(exported[7] / "w5"), tiny_config())


def _save(ckpt, path):
    torch.save(ckpt, str(path))
    return str(path)


def test_load_encoder_of_an_official_file(exported):
    _, model, state, workdir, out, _, clip, _ = exported
    want = np.asarray(loader.load_encoder(workdir)(clip))
    enc = loader.load_encoder(out, num_frames=4, crop_size=32)
    assert (enc.shape.num_frames, enc.shape.crop_size) == (4, 32)
    np.testing.assert_allclose(enc(clip), want, atol=1e-6)
    # The training clip is not in the file and RoPE does not depend on it: 16 x 256 by default,
    # the same features.
    default = loader.load_encoder(out)
    assert (default.shape.num_frames, default.shape.crop_size, default.shape.num_heads) == (16, 256, 3)
    np.testing.assert_allclose(default(clip), want, atol=1e-6)
    interleaved = loader.load_encoder(out, rope="interleaved")
    again = methods.get("vjepa2").build(tiny_config("interleaved")).encoder
    np.testing.assert_allclose(interleaved(clip), jax.jit(again.apply)(
        {"params": state.target_params}, clip), atol=1e-5)
    assert np.abs(np.asarray(interleaved(clip)) - want).max() > 1e-2


def test_rope_flag_refuses_a_vjepa1_file(tmp_path):
    workdir = str(tmp_path / "v1")
    make_workdir(workdir)
    convert.to_torch(workdir, str(tmp_path / "v1.pth.tar"))
    with pytest.raises(ValueError, match="not V-JEPA 2's RoPE"):
        loader.load_encoder(str(tmp_path / "v1.pth.tar"), rope="tiled")
    with pytest.raises(ValueError, match="transformers' VJEPA2 layout is V-JEPA 2's"):
        convert.to_torch(workdir, str(tmp_path / "hf"), fmt="hf")


# ---------------------------------------------------------------------------------------------
# Hugging Face transformers VJEPA2


def hf_names(depth, pred_depth):
    """VJEPA2Model's parameter names (transformers models/vjepa2/modeling_vjepa2.py), written out."""
    def layer(prefix):
        leaves = ["norm1", "attention.query", "attention.key", "attention.value", "attention.proj",
                  "norm2", "mlp.fc1", "mlp.fc2"]
        return [f"{prefix}.{m}.{w}" for m in leaves for w in ("weight", "bias")]
    names = ["encoder.embeddings.patch_embeddings.proj.weight",
             "encoder.embeddings.patch_embeddings.proj.bias",
             "encoder.layernorm.weight", "encoder.layernorm.bias",
             "predictor.embeddings.predictor_embeddings.weight",
             "predictor.embeddings.predictor_embeddings.bias", "predictor.embeddings.mask_tokens",
             "predictor.layernorm.weight", "predictor.layernorm.bias",
             "predictor.proj.weight", "predictor.proj.bias"]
    for i in range(depth):
        names += layer(f"encoder.layer.{i}")
    for i in range(pred_depth):
        names += layer(f"predictor.layer.{i}")
    return set(names)


@pytest.fixture(scope="module")
def hf_dir(exported):
    _, _, _, workdir, _, _, _, root = exported
    return convert.to_torch(workdir, str(root / "hf"), fmt="hf")


def test_hf_export_names_config_and_split_qkv(exported, hf_dir):
    config, model, _, _, _, ckpt, _, _ = exported
    s, p = model.encoder.shape, model.predictor
    tensors, _ = files.read_safetensors(os.path.join(hf_dir, "model.safetensors"))
    assert set(tensors) == hf_names(s.depth, p.depth)
    target, pred = _stripped(ckpt["target_encoder"]), _stripped(ckpt["predictor"])
    qkv = target["blocks.1.attn.qkv.weight"]
    d = s.width
    for j, part in enumerate(("query", "key", "value")):  # rows q | k | v of the fused Linear
        np.testing.assert_array_equal(tensors[f"encoder.layer.1.attention.{part}.weight"],
                                      qkv[j * d:(j + 1) * d])
        np.testing.assert_array_equal(tensors[f"predictor.layer.0.attention.{part}.bias"],
                                      pred["predictor_blocks.0.attn.qkv.bias"][j * p.width:(j + 1) * p.width])
    assert tensors["predictor.embeddings.mask_tokens"].shape == (6, 1, 1, p.width)
    np.testing.assert_array_equal(tensors["predictor.embeddings.mask_tokens"][4], pred["mask_tokens.4"])
    with open(os.path.join(hf_dir, "config.json")) as f:
        cfg = json.load(f)
    want = {"model_type": "vjepa2", "hidden_size": 192, "num_hidden_layers": 2,
            "num_attention_heads": 3, "patch_size": 8, "tubelet_size": 2, "frames_per_clip": 4,
            "crop_size": 32, "mlp_ratio": 4.0, "layer_norm_eps": 1e-6, "hidden_act": "gelu",
            "qkv_bias": True, "pred_hidden_size": 64, "pred_num_hidden_layers": 2,
            "pred_num_attention_heads": 2, "pred_num_mask_tokens": 6, "pred_mlp_ratio": 4.0}
    assert {k: cfg[k] for k in want} == want


def test_hf_round_trip_is_exact_and_load_encoder_serves_it(exported, hf_dir, tmp_path):
    _, model, state, workdir, _, _, clip, _ = exported
    enc_sd, pred_sd, cfg, _ = hf.read_model_dir(hf_dir)
    enc = state_dicts.module_from_torch(enc_sd, vit.abstract_params(model.encoder), layout.ENCODER,
                                        None, "hf encoder")
    abstract = workdir_lib.abstract_params(model)
    pred = state_dicts.module_from_torch(pred_sd, abstract["predictor"], layout.PREDICTOR, None,
                                         "hf predictor")
    assert _same(enc, state.target_params) and _same(pred, state.params["predictor"])
    # The directory alone (config.json, no vjepa_jax metadata) gives the same model.
    m = hf.model_config(hf.geometry(cfg, "config.json"))
    assert (m.variant, m.depth, m.num_frames, m.crop_size, m.pred_width, m.pred_num_heads,
            m.pred_num_mask_tokens, m.rope) == ("tiny", 2, 4, 32, 64, 2, 6, "tiled")
    want = np.asarray(loader.load_encoder(workdir)(clip))
    np.testing.assert_allclose(loader.load_encoder(hf_dir)(clip), want, atol=1e-6)
    # from-torch reads it into a workdir: the encoder as online and target, moments from zero
    # (the base config's mask counts do not fit the tiny grid: the test config is passed).
    out = str(tmp_path / "from_hf")
    assert convert.from_torch(hf_dir, out, tiny_config()) == 0
    with pytest.raises(mismatch.CheckpointMismatch, match="pred_num_heads: checkpoint 2"):
        other = tiny_config()
        other.model.update(pred_width=64, pred_num_heads=4)
        convert.from_torch(hf_dir, str(tmp_path / "from_hf_4_heads"), other)
    tree, config, _, _ = workdir_lib.read_workdir(out, parts=("params", "target_params"))
    assert config.method == "vjepa2" and config.model.pred_num_heads == 2
    assert _same(tree["params"]["encoder"], state.target_params)
    assert _same(tree["params"]["predictor"], state.params["predictor"])


def test_hf_names_are_checked_strictly(exported, hf_dir):
    tensors, _ = files.read_safetensors(os.path.join(hf_dir, "model.safetensors"))
    bad = dict(tensors)
    del bad["encoder.layer.0.attention.key.bias"]
    bad["encoder.layer.0.attention.rope.freqs"] = np.zeros(3, np.float32)
    bad["encoder.extra.weight"] = np.zeros(3, np.float32)
    bad["encoder.layer.x.norm1.weight"] = np.zeros(3, np.float32)
    with pytest.raises(mismatch.StrictLoadError) as e:
        hf.from_hf(bad, "hf file")
    for name in ("hf file", "encoder.layer.0.attention.key.bias",
                 "encoder.layer.0.attention.rope.freqs", "encoder.extra.weight",
                 "encoder.layer.x.norm1.weight"):
        assert name in str(e.value), str(e.value)
    # A classification model's keys: the model under vjepa2., its probe skipped.
    wrapped = {"vjepa2." + k: v for k, v in tensors.items()}
    wrapped["classifier.weight"] = np.zeros((2, 192), np.float32)
    enc, pred = hf.from_hf(wrapped, "cls file")
    assert "blocks.0.attn.qkv.weight" in enc and "mask_tokens.5" in pred
    model_cfg = exported[0].model
    with pytest.raises(ValueError, match="only the reference's 'tiled'"):
        hf.config_json(dict(model_cfg.to_dict(), rope="interleaved"), exported[1].encoder.shape,
                       exported[1].predictor)


def test_cli_writes_the_hf_directory(exported, tmp_path):
    workdir = exported[3]
    out = str(tmp_path / "cli_hf")
    r = subprocess.run([sys.executable, "-m", "vjepa_jax.convert", "to-torch", "--workdir",
                        workdir, "--format", "hf", "--out", out], cwd=str(tmp_path),
                       capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=ROOT),
                       timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert sorted(os.listdir(out)) == ["config.json", "model.safetensors"]


def test_transformers_vjepa2model_matches_the_export(exported, hf_dir):
    transformers = pytest.importorskip("transformers")
    _, model, state, _, _, _, clip, _ = exported
    hf_model, info = transformers.VJEPA2Model.from_pretrained(hf_dir, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    hf_model.eval()
    n = model.encoder.shape.num_tokens
    rng = np.random.default_rng(3)
    ctx = np.stack([np.sort(rng.permutation(n)[:10]) for _ in range(2)])
    tgt = np.stack([np.sort(np.setdiff1d(np.arange(n), c))[:8] for c in ctx])
    with torch.no_grad():
        out = hf_model(torch.from_numpy(clip).permute(0, 1, 4, 2, 3),  # [B, T, C, H, W]
                       context_mask=[torch.from_numpy(ctx)], target_mask=[torch.from_numpy(tgt)])
    apply_enc = jax.jit(model.encoder.apply)
    tokens = np.asarray(apply_enc({"params": state.target_params}, clip))
    errors = {"encoder": np.abs(out.last_hidden_state.numpy() - tokens).max()}
    # transformers' predictor runs on the full encoder output gathered at the context and uses
    # mask token 1 (its mask_index default).
    z = jnp.take_along_axis(jnp.asarray(tokens), jnp.asarray(ctx)[..., None], axis=1)
    want = model.predictor.apply({"params": state.params["predictor"]}, z, jnp.asarray(ctx),
                                 jnp.asarray(tgt), 1)
    errors["predictor"] = np.abs(out.predictor_output.last_hidden_state.numpy() - np.asarray(want)).max()
    print("max abs error against transformers, float32:", errors)
    assert max(errors.values()) < 1e-4, errors
