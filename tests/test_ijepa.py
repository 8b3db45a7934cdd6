"""I-JEPA, the second method: sizes, 2-D table, masks, replication order, loss, schedules,
interop with an independent PyTorch encoder, and the demo config (IJEPA_SPEC)."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from common import ROOT, demo_ridge_scores, load_config
from vjepa_jax import checkpoint, config as config_lib, convert, loader, methods, optim
from vjepa_jax import train_state, workdir as workdir_lib
from vjepa_jax.interop import state_dicts
from vjepa_jax.methods.ijepa import layout, loss as loss_lib, masks
from vjepa_jax.models import image_predictor, image_vit, pos_embed, vit

SMOKE = os.path.join(ROOT, "configs/pretrain/ijepa_demo.py") + ":smoke"


def count(tree):
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def ijepa_model(**model):
    c = config_lib.base_config("ijepa")
    c.model.update(model)
    return c


# ----------------------------------------------------------------------------- model
def test_parameter_counts_match_the_reference():
    # IJEPA_SPEC §1.6 and §2 (trainable parameters; the frozen tables are not parameters here).
    for model, want in ((dict(), 630_434_560), (dict(variant="tiny", patch_size=16), 5_486_400),
                        (dict(variant="giant", patch_size=16), 1_011_092_608)):
        enc = image_vit.encoder_from_config(ijepa_model(**model).model)
        assert count(vit.abstract_params(enc)) == want, model
    c = ijepa_model()
    c.masks.update(num_target=44, num_context=68)  # counts do not change parameter shapes
    bundle = methods.get("ijepa").build(c)
    assert count(workdir_lib.abstract_params(bundle)["predictor"]) == 22_279_424
    # IJEPA_SPEC §6.2: 389 encoder and 152 predictor tensors (tables included).
    order = state_dicts.torch_order(workdir_lib.abstract_params(bundle), layout.SPECS,
                                    layout.tables(bundle.encoder, bundle.predictor))
    assert (len(order["encoder"]), len(order["predictor"])) == (389, 152)
    assert order["predictor"][:3] == [("mask_token", (1, 1, 384)),
                                      ("predictor_pos_embed", (1, 256, 384)),
                                      ("predictor_embed.weight", (384, 1280))]


def test_2d_table_follows_the_spec_formula_with_the_column_first():
    width, side = 16, 5
    table = pos_embed.sincos_2d_ijepa(width, side)
    omega = 10000.0 ** (-np.arange(width // 4) / (width // 4))
    for n in (0, 3, 7, 24):
        r, c = divmod(n, side)
        want = np.concatenate([np.sin(c * omega), np.cos(c * omega), np.sin(r * omega),
                               np.cos(r * omega)])
        np.testing.assert_allclose(table[n], want, rtol=1e-6, atol=1e-6)
    # The first half is constant down a column of the grid and varies along a row.
    grid = table.reshape(side, side, width)
    assert np.allclose(grid[0, :, :width // 2], grid[3, :, :width // 2])
    assert not np.allclose(grid[:, 0, :width // 2], grid[:, 3, :width // 2])


# ----------------------------------------------------------------------------- masks
def test_block_size_distribution_is_the_reference_one():
    """One uniform drives scale and aspect ratio (IJEPA_SPEC §3.2, the 224/14 table)."""
    gen = masks.BlockMasks(side=16, num_target=44, num_context=68)
    u = (jnp.arange(20000) + 0.5) / 20000
    h, w = jax.vmap(lambda x: gen.block_size(x, gen.target_scale, gen.aspect_ratio))(u)
    sizes = {}
    for hw in zip(np.asarray(h).tolist(), np.asarray(w).tolist()):
        sizes[hw] = sizes.get(hw, 0) + 1 / len(u)
    want = {(5, 7): 0.047, (6, 6): 0.016, (6, 7): 0.279, (7, 6): 0.289, (8, 6): 0.296,
            (9, 6): 0.073}
    assert sizes.keys() == want.keys()
    assert all(abs(sizes[k] - want[k]) < 0.003 for k in want), sizes
    ch, cw = jax.vmap(lambda x: gen.block_size(x, gen.context_scale, (1.0, 1.0)))(u)
    assert set(np.asarray(ch).tolist()) == {15} and set(np.asarray(cw).tolist()) == {15}


def test_reference_collator_reproduces_the_spec_statistics():
    """The NumPy re-implementation at 224/14, B = 128 (IJEPA_SPEC §3.7: K_enc 68.5, K_pred 44.2,
    union 44.9 %), on 20 batches."""
    gen = masks.BlockMasks(side=16)
    rng = np.random.default_rng(0)
    stats = [masks.mask_stats(*masks.reference_masks(rng, 128, gen), 16) for _ in range(20)]
    k_enc = 256 * np.mean([s["context_fraction"] for s in stats])
    union = 100 * np.mean([s["union_fraction"] for s in stats])
    assert abs(k_enc - 68.5) < 4 and abs(union - 44.9) < 1.5, (k_enc, union)


def test_masks_are_static_disjoint_and_avoid_the_last_row_and_column():
    config = load_config("configs/pretrain/ijepa_vith14_in1k.py")
    gen = masks.generators_from_config(config)[0]
    # The reference's means (IJEPA_SPEC §3.7: 68.5 and 44.2), rounded.
    kc = gen.num_context
    assert 67 <= kc <= 70 and gen.num_target == 44
    ctx, tgt = jax.jit(gen.sample, static_argnums=1)(jax.random.key(0), 128)
    ctx, tgt = np.asarray(ctx), np.asarray(tgt)
    assert ctx.shape == (128, kc) and tgt.shape == (4, 128, 44)
    union = np.zeros((128, 256), bool)
    for block in tgt:
        np.put_along_axis(union, block, True, axis=1)
    for b in range(128):
        assert not union[b, ctx[b]].any()  # context never holds a target token
        used = np.concatenate([ctx[b], tgt[:, b].ravel()])
        assert not np.any((used // 16 == 15) | (used % 16 == 15))  # last row / column unused
        assert len(np.unique(ctx[b])) == kc and all(len(np.unique(t)) == 44 for t in tgt[:, b])
    # Within 2 points of the reference statistics (IJEPA_SPEC §3.7).
    s = masks.mask_stats(ctx, tgt, 16)
    assert abs(100 * s["context_fraction"] - 26.8) < 2 and abs(100 * s["target_fraction"] - 17.3) < 2
    assert abs(100 * s["union_fraction"] - 44.9) < 2, s
    # 'first' keeps the lowest indices, as the reference's truncation (the bottom rows go).
    first = masks.BlockMasks(side=16, num_target=44, num_context=kc, truncation="first")
    ctx_first = np.asarray(jax.jit(first.sample, static_argnums=1)(jax.random.key(0), 128)[0])
    assert np.mean(ctx_first // 16) < np.mean(ctx // 16)


# ----------------------------------------------------------------------------- predictor, loss
def test_each_target_block_is_paired_with_the_context_of_its_own_image():
    """Row i * B + b of the predictor's output is block i of image b, computed as if alone."""
    pred = image_predictor.ImagePredictor(width=16, depth=1, num_heads=2, out_width=8, side=4,
                                          dtype=jnp.float32)
    rng = np.random.default_rng(0)
    b, m = 3, 2
    z = jnp.asarray(rng.normal(size=(b, 5, 8)), jnp.float32)
    ctx = jnp.asarray(np.stack([np.sort(rng.choice(16, 5, replace=False)) for _ in range(b)]))
    tgt = jnp.asarray(np.stack([np.stack([np.sort(rng.choice(16, 3, replace=False))
                                          for _ in range(b)]) for _ in range(m)]))
    params = pred.init(jax.random.key(0), z, ctx, tgt)
    out = pred.apply(params, z, ctx, tgt)
    for i in range(m):
        for j in range(b):
            alone = pred.apply(params, z[j:j + 1], ctx[j:j + 1], tgt[i:i + 1, j:j + 1])[0]
            np.testing.assert_allclose(out[i * b + j], alone, rtol=1e-5, atol=1e-5)
    h = jnp.asarray(rng.normal(size=(b, 16, 8)), jnp.float32)
    stacked = loss_lib.block_targets(h, tgt)
    np.testing.assert_array_equal(stacked[1 * b + 2], h[2, tgt[1, 2]])


def test_smooth_l1_is_the_reference_formula():
    d = np.array([-2.0, -0.5, 0.0, 0.3, 1.0, 1.5], np.float32)
    want = np.array([1.5, 0.125, 0.0, 0.045, 0.5, 1.0], np.float32)  # 0.5 d^2 / |d| - 0.5
    np.testing.assert_allclose(loss_lib.smooth_l1(jnp.asarray(d), jnp.zeros(6)), want, rtol=1e-6)


def test_schedules_match_the_reference_values():
    """IJEPA_SPEC §4.9 (in1k_vith14_ep300, ipe 625), computed with the official classes."""
    c = load_config("configs/pretrain/ijepa_vith14_in1k.py")
    rows = [(1, 2.00032e-4, 0.040000, 0.99600000), (625, 2.2e-4, 0.040010, 0.99601331),
            (12500, 6.0e-4, 0.043933, 0.99626665), (24999, 9.99968e-4, 0.055561, 0.99653329),
            (25000, 1.0e-3, 0.055562, 0.99653331), (50000, 9.42785e-4, 0.099556, 0.99706665),
            (93750, 6.20038e-4, 0.220000, 0.99799998), (100000, 5.60708e-4, 0.238815, 0.99813331),
            (150000, 1.26619e-4, 0.365623, 0.99919998), (186875, 1.03646e-6, 0.399990, 0.99998665),
            (187500, 1.0e-6, 0.400000, 0.99999998)]
    sched = jax.jit(optim.schedules(c.optim))(jnp.asarray([r[0] for r in rows]))
    for k, (s, lr, wd, m) in enumerate(rows):
        assert float(sched["lr"][k]) == pytest.approx(lr, rel=2e-5), s
        assert float(sched["wd"][k]) == pytest.approx(wd, abs=2e-6), s
        assert float(sched["momentum"][k]) == pytest.approx(m, abs=1e-7), s
    assert not np.any(optim.clip_active(c.optim, jnp.asarray([1, 30000, 187500])))


# ----------------------------------------------------------------------------- interop
def _random_workdir(path, step=6):
    """An I-JEPA smoke checkpoint with every array non-trivial, saved directly."""
    config = load_config("configs/pretrain/ijepa_demo.py", "smoke")
    config.mesh.update(data=1, fsdp=1)
    bundle = methods.get("ijepa").build(config)
    abstract = workdir_lib.abstract_params(bundle)
    rng = np.random.default_rng(0)
    noise = lambda t, s: jax.tree.map(lambda x: jnp.asarray(s * rng.standard_normal(x.shape),
                                                            x.dtype), t)
    params = noise(abstract, 0.05)
    tx = optim.make_optimizer(config.optim, abstract)
    state = train_state.TrainState(step=jnp.asarray(step, jnp.int32), apply_fn=None,
                                   params=params, tx=tx, opt_state=jax.jit(tx.init)(params),
                                   target_params=noise(abstract["encoder"], 0.05),
                                   skipped=jnp.zeros((), jnp.int32))
    mngr = checkpoint.manager(str(path), 2)
    checkpoint.save(mngr, state, None, workdir_lib.model_meta(config, bundle), force=True)
    mngr.wait_until_finished()
    mngr.close()
    return config, bundle, state


def test_export_import_round_trip_and_an_independent_torch_encoder(tmp_path):
    torch = pytest.importorskip("torch")
    import torch_reference_ijepa as ref

    workdir = str(tmp_path / "run")
    config, bundle, state = _random_workdir(workdir)
    out = str(tmp_path / "ijepa.pth.tar")
    convert.to_torch(workdir, out)
    ckpt = torch.load(out, map_location="cpu", weights_only=True)
    assert all(k.startswith("module.") and not k.startswith("module.backbone.")
               for k in ckpt["target_encoder"])
    s = bundle.encoder.shape
    enc = ref.VisionTransformer(s.width, s.depth, s.num_heads, s.mlp_hidden, s.crop_size,
                                s.patch_size)
    enc.load_state_dict({k[len("module."):]: v for k, v in ckpt["target_encoder"].items()},
                        strict=True)
    pred = ref.Predictor(s.width, bundle.predictor.width, bundle.predictor.depth,
                         bundle.predictor.num_heads, s.grid[1])
    pred.load_state_dict({k[len("module."):]: v for k, v in ckpt["predictor"].items()},
                         strict=True)
    images = np.random.default_rng(1).normal(size=(2, s.crop_size, s.crop_size, 3)).astype(np.float32)
    with torch.no_grad():
        want = enc(torch.from_numpy(images).permute(0, 3, 1, 2)).numpy()
    got = np.asarray(bundle.encoder.apply({"params": state.target_params}, jnp.asarray(images)))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    # load_encoder reads the file (layout detected from the 2-D patch conv) and the workdir.
    for path in (out, workdir):
        tokens = np.asarray(loader.load_encoder(path)(images))
        np.testing.assert_allclose(tokens, want, rtol=1e-4, atol=1e-4)
    # Import into a new workdir: bit-exact params, target and AdamW moments.
    back = str(tmp_path / "imported")
    convert.from_torch(out, back, SMOKE)
    tree, _, meta, step = workdir_lib.read_workdir(back, parts=("params", "target_params",
                                                                "opt_state"))
    same = lambda a, b: jax.tree.all(jax.tree.map(lambda x, y: np.array_equal(x, y), a, b))
    assert step == 6 and meta["method"] == "ijepa"
    assert same(tree["params"], state.params) and same(tree["target_params"], state.target_params)


def test_demo_config_trains_and_its_masks_are_drawn(tmp_path):
    from vjepa_jax import masks as masks_program, train

    config = load_config("configs/pretrain/ijepa_demo.py", "smoke")
    config.mesh.update(data=1, fsdp=1)
    train.run(config, str(tmp_path / "run"))
    rows = [r for r in __import__("vjepa_jax.logger", fromlist=["read"]).read(str(tmp_path / "run"))
            if "loss" in r]
    assert len(rows) == 6 and all(np.isfinite(r["loss"]) for r in rows)
    assert {"loss_0", "loss_3", "baseline_loss", "target_rank"} <= set(rows[0])
    report = masks_program.describe(load_config("configs/pretrain/ijepa_demo.py"), out=str(
        tmp_path / "m.png"), reference_batches=3)
    assert "4 x 11 target" in report and os.path.getsize(tmp_path / "m.png") > 1000


# ----------------------------------------------------------------------------- data and eval
def _images(root, classes=("a", "b"), per_class=3):
    from PIL import Image

    for ci, cls in enumerate(classes):
        os.makedirs(root / "train" / cls)
        for i in range(per_class):
            Image.fromarray(np.full((40, 50, 3), 60 * ci + i, np.uint8)).save(
                root / "train" / cls / f"{cls}_{i}.png")


def test_pretraining_reads_image_folders_and_tfds_images(tmp_path):
    from vjepa_jax.data import pipeline

    _images(tmp_path)
    c = load_config("configs/pretrain/ijepa_demo.py", "smoke")
    c.data.update(source="imagefolder", root=str(tmp_path), batch_size=4)
    batch = next(iter(pipeline.make_dataset(c)))
    assert batch["video"].shape == (4, 1, 48, 48, 3) and batch["video"].dtype == np.uint8
    tfds = pytest.importorskip("tensorflow_datasets")
    c.data.update(source="tfds", tfds_name="imagenet2012", tfds_split="train")
    with tfds.testing.mock_data(num_examples=8):
        batch = next(iter(pipeline.make_dataset(c)))
    assert batch["video"].shape == (4, 1, 48, 48, 3)


def test_one_percent_subset_keeps_the_listed_images(tmp_path):
    from vjepa_jax.data import imagefolder

    _images(tmp_path)
    subset = tmp_path / "1pct.txt"
    subset.write_text("a_0.png\nb_2.png\n")
    source = imagefolder.ImageFolder(str(tmp_path), "train", subset=str(subset))
    assert [os.path.basename(p) for p in source.paths] == ["a_0.png", "b_2.png"]
    assert source.labels.tolist() == [0, 1]
    subset.write_text("a_0.png\nnot_there.png\n")
    with pytest.raises(ValueError, match="1 of its 2 image names"):
        imagefolder.ImageFolder(str(tmp_path), "train", subset=str(subset))


def test_linear_probe_eval_of_an_image_encoder(tmp_path):
    from vjepa_jax import eval as eval_lib

    c = load_config("configs/evals/ijepa.py", "vith14,in1k_linear")
    assert (c.method, c.probe.kind, c.model.patch_size) == ("ijepa", "linear", 14)
    # The same program on a tiny random-init image encoder and generated images.
    c.model.update(variant="tiny", depth=1, patch_size=8, crop_size=32, dtype="float32",
                   attention="xla")
    c.data.update(source="synthetic", num_classes=16, synthetic_train_size=16,
                  synthetic_val_size=8, batch_size=8, num_workers=0)
    c.probe.update(dtype="float32", cache_features=True)
    c.optim.update(epochs=2)
    c.mesh.update(data=1)
    rows = eval_lib.run(c, str(tmp_path / "eval"))
    assert len(rows) == 2 and all(0 <= r["val_top1"] <= 100 for r in rows)
    assert rows[0]["val_count"] == 8


def test_bench_counts_the_ijepa_step():
    from vjepa_jax import bench

    config = load_config("configs/pretrain/ijepa_demo.py", "smoke")
    config.mesh.update(data=1)
    r = bench.bench(config, steps=1, warmup=0, peak_tflops=1.0)
    bundle = methods.get("ijepa").build(config)
    assert r["model_tflop_per_step"] == pytest.approx(bundle.flops(8) / 1e12)
    assert bundle.flops(16) == 2 * bundle.flops(8) > 0 and np.isfinite(r["loss"])


# ----------------------------------------------------------------------------- the demo's margin
@pytest.mark.slow
def test_demo_pretrained_encoder_beats_random_init(tmp_path):
    """The I-JEPA demo's readout (ridge on all tokens of 4096 images, scored on 4096 others) of
    the demo-pretrained EMA target must beat the same readout of each of three random-init
    encoders, on the demo's labelled split and on two more splits of fresh images.

    Uses $VJEPA_IJEPA_DEMO_WORKDIR (a finished `configs/pretrain/ijepa_demo.py` run) or
    pretrains one here. About 12 minutes on a 2-core CPU with the workdir, 15 without; README has
    the measured margins.
    """
    config = load_config("configs/pretrain/ijepa_demo.py")
    assert (config.online_eval.num_train, config.online_eval.num_val) == (4096, 4096)
    scores = demo_ridge_scores(config, "VJEPA_IJEPA_DEMO_WORKDIR", tmp_path,
                               (config.online_eval.seed, 3000, 4000))
    for pretrained, random_init in scores.values():
        assert pretrained > max(random_init), scores
