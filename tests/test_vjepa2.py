"""V-JEPA 2, the third method (VJEPA_SPEC §9): sizes, init, predictor conditioning and sorting,
schedules, configs and progressive resolution (a cooldown restarting from a checkpoint)."""
import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from common import load_config
from vjepa_jax import config as config_lib, methods, mismatch, optim, train, workdir as workdir_lib
from vjepa_jax.models import predictor as predictor_lib, vit

DEMO = "configs/pretrain/vjepa2_demo.py"


def count(tree):
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def v2_config(**model):
    c = config_lib.base_config("vjepa2")
    c.model.update(model)
    return c


def encoder_count(width, depth, mlp, tubelet=2, patch=16):
    """Trainable parameters of a RoPE video ViT, derived from the size table by hand.

    patch conv: 3*tubelet*patch^2 weights per output + bias; per block: two LayerNorms (2*2D),
    qkv D x 3D + 3D, proj D x D + D, fc1 D x M + M, fc2 M x D + D; final LayerNorm 2D; no
    position table (RoPE).
    """
    conv = 3 * tubelet * patch * patch * width + width
    block = 4 * width + (3 * width * width + 3 * width) + (width * width + width) \
        + (width * mlp + mlp) + (mlp * width + width)
    return conv + depth * block + 2 * width


def predictor_count(enc_width, width=384, depth=12, mask_tokens=6):
    """predictor_embed D x Dp + Dp, mask tokens, blocks of width Dp (MLP 4 Dp), predictor_norm,
    predictor_proj Dp x D + D; no table."""
    block = 4 * width + (3 * width * width + 3 * width) + (width * width + width) \
        + (width * 4 * width + 4 * width) + (4 * width * width + width)
    return (enc_width * width + width) + mask_tokens * width + depth * block + 2 * width \
        + (width * enc_width + enc_width)


# ----------------------------------------------------------------------------- sizes and init
@pytest.mark.parametrize("variant, width, depth, heads, mlp", [
    ("large", 1024, 24, 16, 4096), ("huge", 1280, 32, 16, 5120),
    ("giant_xformers", 1408, 40, 22, 6144)])
def test_parameter_counts_follow_the_size_table(variant, width, depth, heads, mlp):
    c = v2_config(variant=variant)
    shape = vit.shape_from_config(c.model)
    assert (shape.width, shape.depth, shape.num_heads, shape.mlp_hidden) == (width, depth, heads, mlp)
    assert shape.width // shape.num_heads == (80 if variant == "huge" else 64)
    c.data.index = ("unused.csv",)
    params = workdir_lib.abstract_params(methods.get("vjepa2").build(c))
    assert count(params["encoder"]) == encoder_count(width, depth, mlp)
    assert count(params["predictor"]) == predictor_count(width)
    assert "pos_embed" not in str(jax.tree_util.tree_structure(params))
    if variant == "large":  # the V-JEPA 1 ViT-L's trainable count (VJEPA_SPEC §1.6)
        assert count(params["encoder"]) == 303_885_312
    if variant == "giant_xformers":
        assert 1.0e9 < count(params["encoder"]) < 1.02e9  # "ViT-g ~ 1B"


def test_init_keeps_the_depth_rescale_of_proj_and_fc2():
    # V-JEPA 2 keeps std 0.02 / sqrt(2 l) on attn.proj and mlp.fc2 of block l (1-based); V-JEPA 1's
    # re-initialisation erases it (VJEPA_SPEC §1.4), so there every Linear has std 0.02.
    model = dict(variant="small", depth=3, num_frames=2, crop_size=32)
    for method, rescaled in (("vjepa2", True), ("vjepa", False)):
        c = config_lib.base_config(method)
        c.model.update(model)
        enc = vit.encoder_from_config(c.model)
        params = jax.jit(lambda k: vit.init_params(enc, k))(jax.random.key(0))
        params = jax.tree.map(lambda x: getattr(x, "value", x), params,
                              is_leaf=lambda x: hasattr(x, "value"))
        for layer in (1, 2, 3):
            block = params[f"blocks_{layer - 1}"]
            want = 0.02 / math.sqrt(2 * layer) if rescaled else 0.02
            for name in ("proj", "fc2"):  # 384x384 and 1536x384: std within 1.5 %
                assert float(jnp.std(block[name]["kernel"])) == pytest.approx(want, rel=0.015)
            assert float(jnp.std(block["qkv"]["kernel"])) == pytest.approx(0.02, rel=0.015)


# ----------------------------------------------------------------------------- predictor
def _predictor(sort_tokens, rope="tiled"):
    return predictor_lib.Predictor(width=32, depth=2, num_heads=2, out_width=24, grid=(2, 4, 4),
                                   num_mask_tokens=2, dtype=jnp.float32, rope=rope,
                                   sort_tokens=sort_tokens)


def test_sorted_predictor_equals_the_unsorted_one_with_the_permutation_applied():
    rng = np.random.default_rng(0)
    perm = rng.permutation(32)
    ctx = jnp.asarray(np.stack([np.sort(perm[:12]), perm[:12]]))  # sorted, and shuffled
    tgt = jnp.asarray(np.stack([np.sort(perm[12:20]), perm[12:20]]))
    z = jnp.asarray(rng.standard_normal((1, 12, 24)), jnp.float32)
    z = jnp.concatenate([z, z[:, np.argsort(np.argsort(perm[:12]))]])  # same tokens, same order as ctx
    sorted_pred, plain = _predictor(True), _predictor(False)
    params = sorted_pred.init(jax.random.key(1), z, ctx, tgt, 0)["params"]
    params = jax.tree.map(lambda x: x + 0.05 * jax.random.normal(jax.random.key(2), x.shape), params)
    a = jax.jit(sorted_pred.apply, static_argnums=4)({"params": params}, z, ctx, tgt, 1)
    b = jax.jit(plain.apply, static_argnums=4)({"params": params}, z, ctx, tgt, 1)
    np.testing.assert_allclose(a, b, atol=2e-5)  # sorting changes nothing but the rounding
    # The shuffled example (row 1) predicts the same targets as the sorted one (row 0), permuted.
    order = np.argsort(np.argsort(perm[12:20]))
    np.testing.assert_allclose(a[1], a[0][order], atol=2e-5)
    assert not np.allclose(a[0], a[0][::-1], atol=1e-3)  # the targets are distinguishable


def test_every_generator_uses_mask_token_0_as_the_reference():
    # VJEPA_SPEC §9.2: 6 mask tokens are held, indexed by frame-count group, so with one clip
    # length only mask_tokens.0 receives a gradient; 'generator' gives generator i token i.
    config = load_config(DEMO, "smoke")
    for choice, used in (("group", {0}), ("generator", {0, 1})):
        config.model.pred_mask_token = choice
        bundle = methods.get("vjepa2").build(config)
        params = jax.jit(bundle.init)(jax.random.key(0))
        params = jax.tree.map(lambda x: getattr(x, "value", x), params,
                              is_leaf=lambda x: hasattr(x, "value"))
        video = jax.random.normal(jax.random.key(1), (2,) + bundle.encoder.shape.clip(1)[1:])
        masks = bundle.sample_masks(jax.random.key(2), 2)
        grads = jax.jit(jax.grad(lambda p: bundle.loss(p, p["encoder"], video, masks)[0]))(params)
        norms = {i: float(jnp.abs(grads["predictor"][f"mask_tokens_{i}"]).sum()) for i in range(6)}
        assert {i for i, n in norms.items() if n > 0} == used, (choice, norms)


def test_config_errors_name_the_key():
    for key, value in (("rope", "none"), ("pred_mask_token", "mask"), ("pred_num_mask_tokens", 0)):
        c2 = load_config(DEMO, "smoke")
        c2.model[key] = value
        with pytest.raises(ValueError, match=f"config.model.{key}="):
            config_lib.validate(c2)
    c = load_config(DEMO, "smoke")
    c.model.update(pred_width=48, pred_num_heads=12)  # head_dim 4: too small for 3-D RoPE
    with pytest.raises(ValueError, match="config.model.pred_num_heads=12"):
        config_lib.validate(c)
    c = load_config(DEMO, "smoke")
    c.optim.schedule = "cosine"
    with pytest.raises(ValueError, match="config.optim.schedule="):
        config_lib.validate(c)
    c = load_config(DEMO, "smoke_cooldown")
    c.optim.warmup = 1
    with pytest.raises(ValueError, match="optim.warmup=1"):
        optim.schedules(c.optim)(1)


# ----------------------------------------------------------------------------- schedules
def test_pretrain_schedule_is_warmup_then_constant():
    o = load_config("configs/pretrain/vjepa2_vitl_256px_16f.py").optim
    at = optim.schedules(o)
    for s in (1, 6000, 11999, 12000, 12001, 100_000, 240_000):
        v = jax.device_get(at(s))
        lr = 1e-4 + (s / 12_000) * (5.25e-4 - 1e-4) if s < 12_000 else 5.25e-4  # §9.3
        assert float(v["lr"]) == pytest.approx(lr, rel=1e-6), s
        assert float(v["wd"]) == pytest.approx(0.04, rel=1e-6)
        assert float(v["momentum"]) == pytest.approx(0.99925, rel=1e-7)
    assert o.clip_grad == 0 and 240_000 == o.epochs * o.ipe
    assert not bool(optim.clip_active(o, 200_000))


@pytest.mark.parametrize("name, frames, crop, per_gpu", [
    ("vjepa2_vitl_cooldown_256px_64f", 64, 256, 12), ("vjepa2_vith_cooldown_256px_64f", 64, 256, 12),
    ("vjepa2_vitg_cooldown_256px_64f", 64, 256, 6), ("vjepa2_vitg_cooldown_384px_64f", 64, 384, 6)])
def test_cooldown_configs_decay_linearly(name, frames, crop, per_gpu):
    c = load_config(f"configs/pretrain/{name}.py")
    assert (c.model.num_frames, c.model.crop_size, c.mask_reference_batch) == (frames, crop, per_gpu)
    assert c.data.batch_size == 3072 and tuple(c.data.weights) == (0.335, 0.100, 0.565)
    t_max = int(1.25 * c.optim.epochs * c.optim.ipe)
    at = optim.schedules(c.optim)
    for s in (1, 1000, c.optim.epochs * c.optim.ipe):
        lr = 5.25e-4 + (s / t_max) * (1e-6 - 5.25e-4)  # LinearDecaySchedule, §9.3
        assert float(at(s)["lr"]) == pytest.approx(lr, rel=1e-5), s
    last = float(at(c.optim.epochs * c.optim.ipe)["lr"])
    assert last == pytest.approx(5.25e-4 - 0.8 * (5.25e-4 - 1e-6), rel=1e-5)  # 80 % of the way


def test_pretrain_configs_hold_the_released_sizes():
    for name, variant in (("vitl", "large"), ("vith", "huge"), ("vitg", "giant_xformers")):
        c = load_config(f"configs/pretrain/vjepa2_{name}_256px_16f.py")
        assert (c.method, c.model.variant, c.model.num_frames, c.model.crop_size) == (
            "vjepa2", variant, 16, 256)
        assert (c.model.pred_num_heads, c.model.pred_width, c.model.pred_depth) == (12, 384, 12)


# ----------------------------------------------------------------------------- progressive resolution
@pytest.fixture(scope="module")
def main_run(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("vjepa2") / "main")
    config = load_config(DEMO, "smoke")
    config.mesh.update(data=1, fsdp=1)
    train.run(config, workdir)
    return config, workdir


def test_cooldown_restarts_from_the_main_run_at_a_larger_clip(main_run, tmp_path):
    _, main = main_run
    tree, _, _, main_step = workdir_lib.read_workdir(main, parts=("params", "target_params"))
    config = load_config(DEMO, "smoke_cooldown")  # 4 -> 8 frames, 32 -> 48 px
    config.mesh.update(data=1, fsdp=1)
    config.train.update(init_from=main, stop_after=1)
    # The state the cooldown starts from: the main run's weights and target, step 0.
    from vjepa_jax import sharding, train_state
    bundle = methods.get("vjepa2").build(config)
    mesh = sharding.make_mesh(config.mesh)
    abstract, shardings, _ = train_state.create(bundle.init, config.optim, mesh, jax.random.key(0))
    state, step = workdir_lib.init_from(main, None, abstract, shardings, config)
    assert step == main_step and int(state.step) == 0 and int(state.skipped) == 0
    for part in ("params", "target_params"):
        for a, b in zip(jax.tree.leaves(getattr(state, part)), jax.tree.leaves(tree[part])):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # The run itself: recompiled for 8 x 48 clips, first step on the linear decay from lr.
    cooldown = str(tmp_path / "cooldown")
    train.run(config, cooldown)
    rows = [json.loads(line) for line in open(os.path.join(cooldown, "metrics.jsonl"))]
    t_max = int(config.optim.ipe_scale * config.optim.epochs * config.optim.ipe)
    assert rows[0]["step"] == 1
    assert rows[0]["lr"] == pytest.approx(3e-4 + (1 / t_max) * (1e-6 - 3e-4), rel=1e-5)
    meta = workdir_lib.config_from_meta(workdir_lib.read_workdir(cooldown, parts=("step",))[2])
    assert (meta.model.num_frames, meta.model.crop_size) == (8, 48)
    # Resuming the cooldown takes its own checkpoint (step 1), not the main run again.
    config.train.stop_after = 1
    train.run(config, cooldown)
    assert [json.loads(l)["step"] for l in open(os.path.join(cooldown, "metrics.jsonl"))] == [1, 2]


def test_init_from_refuses_another_model_or_method(main_run, tmp_path):
    from vjepa_jax import sharding, train_state
    _, main = main_run
    for change, match in ((dict(pred_width=48, pred_num_heads=2), "predictor"), (None, "'vjepa2' run")):
        if change is None:
            config = load_config("configs/pretrain/demo.py", "smoke")
        else:
            config = load_config(DEMO, "smoke_cooldown")
            config.model.update(change)
        config.mesh.update(data=1, fsdp=1)
        bundle = methods.get(config.method).build(config)
        abstract, shardings, _ = train_state.create(bundle.init, config.optim,
                                                    sharding.make_mesh(config.mesh), jax.random.key(0))
        with pytest.raises((ValueError, mismatch.StrictLoadError), match=match):
            workdir_lib.init_from(main, None, abstract, shardings, config)
    with pytest.raises(FileNotFoundError, match="train.init_from="):
        workdir_lib.init_from(str(tmp_path), None, abstract, shardings, config)
    with pytest.raises(ValueError, match=r"no checkpoint at step 99 \(it has checkpoints at steps \[\d"):
        workdir_lib.init_from(main, 99, abstract, shardings, config)
    os.makedirs(tmp_path / "checkpoints")  # a directory without one complete checkpoint
    with pytest.raises(FileNotFoundError, match="holds no complete checkpoint"):
        workdir_lib.init_from(str(tmp_path), None, abstract, shardings, config)
