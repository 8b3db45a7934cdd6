"""PyTorch interop: official layout, parity with an independent PyTorch model, exact round trips."""
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")

import torch_reference as ref  # noqa: E402
from common import ROOT  # noqa: E402
from workdirs import STEP, make_workdir  # noqa: E402
from vjepa_jax import checkpoint, convert, loader, methods, mismatch, sharding  # noqa: E402
from vjepa_jax import train_state, workdir as workdir_lib  # noqa: E402
from vjepa_jax.interop import files, state_dicts  # noqa: E402
from vjepa_jax.methods.vjepa import layout  # noqa: E402
from vjepa_jax.models import vit  # noqa: E402

SMOKE = os.path.join(ROOT, "configs/pretrain/demo.py") + ":smoke"

# VJEPA_SPEC §6.1 / §6.2, written out here rather than taken from the code under test.
SPEC_TOP_LEVEL = {"encoder", "predictor", "target_encoder", "opt", "scaler", "epoch", "loss",
                  "batch_size", "world_size", "lr"}


def spec_encoder_shapes(d, depth, hidden, t, p, n):
    shapes = {"pos_embed": (1, n, d), "patch_embed.proj.weight": (d, 3, t, p, p),
              "patch_embed.proj.bias": (d,), "norm.weight": (d,), "norm.bias": (d,)}
    for i in range(depth):
        shapes.update(spec_block_shapes(f"blocks.{i}", d, hidden))
    return shapes


def spec_block_shapes(prefix, d, hidden):
    return {f"{prefix}.norm1.weight": (d,), f"{prefix}.norm1.bias": (d,),
            f"{prefix}.attn.qkv.weight": (3 * d, d), f"{prefix}.attn.qkv.bias": (3 * d,),
            f"{prefix}.attn.proj.weight": (d, d), f"{prefix}.attn.proj.bias": (d,),
            f"{prefix}.norm2.weight": (d,), f"{prefix}.norm2.bias": (d,),
            f"{prefix}.mlp.fc1.weight": (hidden, d), f"{prefix}.mlp.fc1.bias": (hidden,),
            f"{prefix}.mlp.fc2.weight": (d, hidden), f"{prefix}.mlp.fc2.bias": (d,)}


def spec_predictor_shapes(d, dp, depth, n, tokens):
    shapes = {"predictor_embed.weight": (dp, d), "predictor_embed.bias": (dp,),
              "predictor_pos_embed": (1, n, dp), "predictor_norm.weight": (dp,),
              "predictor_norm.bias": (dp,), "predictor_proj.weight": (d, dp),
              "predictor_proj.bias": (d,)}
    shapes.update({f"mask_tokens.{i}": (1, 1, dp) for i in range(tokens)})
    for i in range(depth):
        shapes.update(spec_block_shapes(f"predictor_blocks.{i}", dp, 4 * dp))
    return shapes


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(config, encoder, predictor, state, workdir, .pth.tar path, loaded torch dict)."""
    root = tmp_path_factory.mktemp("interop")
    workdir = str(root / "run")
    config, encoder, predictor, state = make_workdir(workdir)
    out = str(root / "export.pth.tar")
    convert.to_torch(workdir, out)
    ckpt = torch.load(out, map_location="cpu", weights_only=True)
    return config, encoder, predictor, state, workdir, out, ckpt


def test_export_has_the_official_keys_names_and_shapes(exported):
    config, encoder, predictor, state, _, _, ckpt = exported
    assert set(ckpt) == SPEC_TOP_LEVEL
    s = encoder.shape
    enc = spec_encoder_shapes(s.width, s.depth, s.mlp_hidden, s.tubelet_size, s.patch_size,
                              s.num_tokens)
    pred = spec_predictor_shapes(s.width, predictor.width, predictor.depth, s.num_tokens, 2)
    for key, shapes in (("encoder", enc), ("target_encoder", enc), ("predictor", pred)):
        sd = ckpt[key]
        assert all(k.startswith("module.backbone.") for k in sd), key
        assert {k[len("module.backbone."):]: tuple(v.shape) for k, v in sd.items()} == shapes
        assert all(v.dtype == torch.float32 and v.is_contiguous() for v in sd.values())
    # Plain Python metadata (weights_only torch.load already refused anything else).
    assert ckpt["epoch"] == STEP // config.optim.ipe and type(ckpt["epoch"]) is int
    assert ckpt["loss"] == 0.25 and ckpt["lr"] == config.optim.lr
    assert ckpt["batch_size"] * ckpt["world_size"] == config.data.batch_size
    assert ckpt["scaler"]["scale"] == 65536.0


def test_exported_tables_are_the_spec_sincos(exported):
    _, encoder, predictor, _, _, _, ckpt = exported
    grid = encoder.shape.grid
    want = ref.sincos_table(encoder.shape.width, grid)
    np.testing.assert_allclose(ckpt["encoder"]["module.backbone.pos_embed"][0], want, atol=1e-6)
    np.testing.assert_allclose(ckpt["predictor"]["module.backbone.predictor_pos_embed"][0],
                               ref.sincos_table(predictor.width, grid), atol=1e-6)


def _torch_models(encoder, predictor):
    s = encoder.shape
    enc = ref.VisionTransformer(s.width, s.depth, s.num_heads, s.mlp_hidden, s.num_frames,
                                s.crop_size, s.patch_size, s.tubelet_size)
    pred = ref.Predictor(s.width, predictor.width, predictor.depth, predictor.num_heads, s.grid)
    return enc, pred


def test_reference_pytorch_model_loads_strictly_and_matches_jax(exported):
    _, encoder, predictor, state, _, _, ckpt = exported
    enc_t, pred_t = _torch_models(encoder, predictor)
    tgt_t = _torch_models(encoder, predictor)[0]
    for model, key in ((enc_t, "encoder"), (tgt_t, "target_encoder"), (pred_t, "predictor")):
        result = ref.ddp_wrapped(model).load_state_dict(ckpt[key], strict=True)
        assert not result.missing_keys and not result.unexpected_keys

    s = encoder.shape
    rng = np.random.default_rng(0)
    video = rng.normal(size=(2, s.num_frames, s.crop_size, s.crop_size, 3)).astype(np.float32)
    ctx = np.sort(rng.permutation(s.num_tokens)[:12])[None].repeat(2, 0)
    tgt = np.sort(rng.permutation(s.num_tokens)[:9])[None].repeat(2, 0)
    ctx_t, tgt_t_idx = torch.from_numpy(ctx).long(), torch.from_numpy(tgt).long()
    video_t = torch.from_numpy(video).permute(0, 4, 1, 2, 3)  # channels first for Conv3d

    apply_enc = jax.jit(encoder.apply)
    apply_pred = jax.jit(predictor.apply, static_argnums=4)
    errors = {}
    with torch.no_grad():
        full = apply_enc({"params": state.target_params}, video)
        errors["target encoder"] = np.abs(np.asarray(full) - tgt_t(video_t).numpy()).max()
        z = apply_enc({"params": state.params["encoder"]}, video, jnp.asarray(ctx))
        errors["encoder, masked"] = np.abs(np.asarray(z) - enc_t(video_t, ctx_t).numpy()).max()
        z_t = torch.from_numpy(np.array(z))
        for i in range(2):  # both mask tokens
            pred = apply_pred({"params": state.params["predictor"]}, z, jnp.asarray(ctx),
                              jnp.asarray(tgt), i)
            want = pred_t(z_t, ctx_t, tgt_t_idx, i).numpy()
            errors[f"predictor {i}"] = np.abs(np.asarray(pred) - want).max()
    print("max abs error, float32:", errors)
    assert max(errors.values()) < 1e-4, errors
    assert np.asarray(full).std() > 0.1  # non-trivial outputs


def test_adamw_state_loads_into_torch_with_the_reference_groups(exported):
    _, encoder, predictor, state, _, _, ckpt = exported
    enc_t, pred_t = _torch_models(encoder, predictor)
    ref.ddp_wrapped(enc_t).load_state_dict(ckpt["encoder"])
    ref.ddp_wrapped(pred_t).load_state_dict(ckpt["predictor"])
    opt = torch.optim.AdamW(ref.official_param_groups(enc_t, pred_t))
    opt.load_state_dict(ckpt["opt"])
    adam = state.opt_state.inner_state[0]
    mu, nu = adam.mu["encoder"], adam.nu["predictor"]
    got = opt.state[enc_t.blocks[1].attn.qkv.weight]
    np.testing.assert_array_equal(got["exp_avg"].numpy(), np.asarray(mu["blocks_1"]["qkv"]["kernel"]).T)
    assert float(got["step"]) == STEP
    got = opt.state[pred_t.mask_tokens[1]]
    np.testing.assert_array_equal(got["exp_avg_sq"].numpy(), np.asarray(nu["mask_tokens_1"]))
    got = opt.state[enc_t.patch_embed.proj.weight]
    np.testing.assert_array_equal(got["exp_avg"].numpy(),
                                  np.asarray(mu["patch_embed"]["kernel"]).transpose(4, 3, 0, 1, 2))
    assert enc_t.pos_embed not in opt.state  # frozen: no gradient, no state (as the reference)
    assert opt.param_groups[2]["weight_decay"] == 0 and opt.param_groups[0]["weight_decay"] > 0


def test_torch_round_trip_is_exact_and_train_can_resume(exported, tmp_path):
    config, encoder, predictor, state, _, out, _ = exported
    workdir = str(tmp_path / "imported")
    convert.from_torch(out, workdir, SMOKE)
    tree, _, meta, step = workdir_lib.read_workdir(
        workdir, parts=("step", "params", "target_params", "opt_state", "skipped"))
    assert step == STEP and int(tree["step"]) == STEP
    same = lambda a, b: jax.tree.all(jax.tree.map(lambda x, y: np.array_equal(x, y), a, b))
    assert same(tree["params"], state.params)
    assert same(tree["target_params"], state.target_params)
    adam_in, adam_out = state.opt_state.inner_state[0], tree["opt_state"].inner_state[0]
    assert same((adam_in.mu, adam_in.nu), (adam_out.mu, adam_out.nu))
    assert int(adam_out.count) == STEP
    # What train.run does on resume: the meta check, then the restore onto its own shardings.
    vjepa = methods.get("vjepa").build(config)
    workdir_lib.check_resumable(meta, workdir_lib.model_meta(config, vjepa), workdir)
    mesh = sharding.make_mesh(config.mesh, jax.devices()[:1])
    abstract, shardings, _ = train_state.create(vjepa.init, config.optim, mesh, jax.random.key(0))
    mngr = checkpoint.manager(workdir, 2, read_only=True)
    restored = checkpoint.restore(mngr, STEP, abstract, shardings)
    mngr.close()
    assert same(restored.params, state.params) and int(restored.step) == STEP


def test_import_accepts_any_prefix_and_either_encoder(exported):
    _, encoder, _, state, _, _, ckpt = exported
    abstract = vit.abstract_params(encoder)
    table = layout.tables(encoder)[0]
    full = ckpt["target_encoder"]
    variants = {"module.backbone.": full,
                "backbone.": {k[len("module."):]: v for k, v in full.items()},
                "module.": {k.replace("backbone.", ""): v for k, v in full.items()},
                "": {k[len("module.backbone."):]: v for k, v in full.items()}}
    for name, sd in variants.items():
        params = state_dicts.module_from_torch(sd, abstract, layout.ENCODER, table, name or "bare")
        assert jax.tree.all(jax.tree.map(np.array_equal, params, jax.device_get(state.target_params))), name
    # Only one of the two encoders in the file: 'target' falls back to 'encoder' like the eval loader.
    only_online = {"encoder": ckpt["encoder"], "epoch": 1}
    assert files.pick_encoder(only_online, "target", "f") is ckpt["encoder"]
    assert files.pick_encoder({"target_encoder": full}, "target", "f") is full
    with pytest.raises(ValueError, match="'encoder'"):
        files.pick_encoder({"target_encoder": full}, "encoder", "f")


def test_strict_loading_lists_every_bad_key(exported):
    _, encoder, _, _, _, _, ckpt = exported
    sd = dict(ckpt["encoder"])
    del sd["module.backbone.blocks.1.mlp.fc2.bias"]
    del sd["module.backbone.norm.weight"]
    sd["module.backbone.blocks.0.attn.rope.freqs"] = torch.zeros(3)
    sd["module.backbone.blocks.0.attn.qkv.weight"] = torch.zeros(5, 5)
    with pytest.raises(mismatch.StrictLoadError) as e:
        state_dicts.module_from_torch(sd, vit.abstract_params(encoder), layout.ENCODER,
                                      layout.tables(encoder)[0], "test file")
    msg = str(e.value)
    for name in ("blocks.1.mlp.fc2.bias", "norm.weight", "blocks.0.attn.rope.freqs",
                 "blocks.0.attn.qkv.weight: file (5, 5), model (576, 192)"):
        assert name in msg, msg
    assert e.value.missing == ["blocks.1.mlp.fc2.bias", "norm.weight"]


def test_geometry_is_inferred_from_shapes_and_tables(exported):
    _, encoder, _, _, _, _, ckpt = exported
    geo = layout.infer_model(ckpt["target_encoder"], ckpt["predictor"])
    s = encoder.shape
    assert (geo["width"], geo["depth"], geo["num_frames"], geo["crop_size"], geo["patch_size"]) == (
        s.width, s.depth, s.num_frames, s.crop_size, s.patch_size)
    assert geo["num_mask_tokens"] == 2 and geo["uniform_power"] is True
    # The default model takes the variant by width and leaves the table depth at 0.
    m = layout.model_config(geo)
    assert (m.variant, m.depth, m.crop_size, m.num_frames) == ("tiny", 2, 32, 4)
    with pytest.raises(ValueError, match="num_frames=8"):
        layout.infer_model(ckpt["target_encoder"], num_frames=8, crop_size=32)
    # Both flags consistent with the 32-token table: accepted.
    assert layout.infer_model(ckpt["target_encoder"], num_frames=4)["crop_size"] == 32


def test_safetensors_export_holds_the_target_encoder(exported, tmp_path):
    _, _, _, _, workdir, _, ckpt = exported
    out = str(tmp_path / "enc.safetensors")
    convert.to_torch(workdir, out, fmt="safetensors")
    want = {k[len("module.backbone."):]: v.numpy() for k, v in ckpt["target_encoder"].items()}
    got, meta = files.read_safetensors(out)
    assert got.keys() == want.keys()
    assert all(np.array_equal(got[k], want[k]) for k in want)
    assert json.loads(meta["vjepa_jax.model"])["variant"] == "tiny"
    st = pytest.importorskip("safetensors.numpy")  # the reference reader agrees
    other = st.load_file(out)
    assert all(np.array_equal(other[k], want[k]) for k in want)


def test_conversion_errors_name_the_problem(exported, tmp_path):
    workdir = exported[4]
    garbage = tmp_path / "garbage.pth.tar"
    garbage.write_bytes(b"not a checkpoint")
    cases = [(lambda: convert.to_torch(str(tmp_path / "nope"), "x.pth.tar"), "no checkpoints"),
             (lambda: convert.to_torch(workdir, "x.pth.tar", step=5), r"steps \[6\]"),
             (lambda: convert.from_torch(str(tmp_path / "missing.pth.tar"), str(tmp_path / "w1")),
              "no such file"),
             (lambda: convert.from_torch(str(garbage), str(tmp_path / "w2")),
              "is not a PyTorch checkpoint")]
    for call, message in cases:
        with pytest.raises((ValueError, FileNotFoundError), match=message):
            call()


def test_cli_error_is_one_line_without_traceback(exported, tmp_path):
    for argv, message in (
            (["to-torch", "--workdir", exported[4], "--step", "5", "--out", "x.pth.tar"],
             "steps [6]"),
            (["to-torch", "--workdir", exported[4]], "to-torch needs --out")):
        r = subprocess.run([sys.executable, "-m", "vjepa_jax.convert", *argv], cwd=str(tmp_path),
                           capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=ROOT))
        assert r.returncode != 0
        assert "vjepa_jax.convert: error:" in r.stderr or "FATAL" in r.stderr, r.stderr
        assert message in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_import_of_a_file_written_by_the_reference_model(tmp_path):
    """An 'official' file from the PyTorch reference (16x224, one AdamW step) -> JAX, default config."""
    torch.manual_seed(0)
    grid = (8, 14, 14)
    enc = ref.VisionTransformer(192, 1, 3, 768, num_frames=16, crop=224, patch=16)
    pred = ref.Predictor(192, 48, 1, 3, grid)
    for p in list(enc.parameters()) + list(pred.parameters()):
        if p.requires_grad:
            torch.nn.init.normal_(p, std=0.05)
    opt = torch.optim.AdamW(ref.official_param_groups(enc, pred))
    video = torch.randn(1, 3, 16, 224, 224)
    ctx, tgt = torch.arange(0, 40)[None], torch.arange(100, 130)[None]
    pred(enc(video, ctx), ctx, tgt, 1).square().mean().backward()
    opt.step()
    path = str(tmp_path / "official.pth.tar")
    sd = lambda m: ref.ddp_wrapped(m).state_dict()
    torch.save({"encoder": sd(enc), "predictor": sd(pred), "target_encoder": sd(enc),
                "opt": opt.state_dict(), "scaler": None, "epoch": 3, "loss": 0.5,
                "batch_size": 24, "world_size": 128, "lr": 6.25e-4}, path)

    workdir = str(tmp_path / "w")
    convert.from_torch(path, workdir)
    tree, config, meta, step = workdir_lib.read_workdir(workdir, parts=("params", "opt_state"))
    assert step == 3 * 300  # epoch * ipe of the reference recipe
    m = meta["model"]
    assert (m["variant"], m["depth"], m["num_frames"], m["crop_size"], m["pred_width"],
            m["pred_depth"]) == ("tiny", 1, 16, 224, 48, 1)  # frames and crop read off the table
    adam = tree["opt_state"].inner_state[0]
    torch_state = opt.state[enc.blocks[0].mlp.fc1.weight]
    np.testing.assert_array_equal(adam.mu["encoder"]["blocks_0"]["fc1"]["kernel"],
                                  torch_state["exp_avg"].numpy().T)
    assert int(adam.count) == 1

    jax_enc = loader.load_encoder(workdir)
    clip = np.random.default_rng(0).normal(size=(1, 16, 224, 224, 3)).astype(np.float32)
    with torch.no_grad():
        want = enc(torch.from_numpy(clip).permute(0, 4, 1, 2, 3)).numpy()
    assert np.abs(np.asarray(jax_enc(clip)) - want).max() < 1e-4
    assert np.abs(np.asarray(loader.load_encoder(path)(clip)) - want).max() < 1e-4
