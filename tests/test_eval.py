"""Frozen evaluation program, eval data sources, eval configs and the online k-NN / linear probe."""
import glob
import json
import math
import os
import shutil

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from common import ROOT, demo_ridge_scores, load_config
from vjepa_jax import checkpoint, eval as eval_lib, loader, mismatch, optim
from vjepa_jax.evaluation import configs as eval_configs, data as eval_data, online
from vjepa_jax.evaluation import probe_steps, readouts
from vjepa_jax.models import vit


def tiny_config(**data):
    """configs/evals/demo.py:smoke shrunk further: 1 block, 8 fake devices, batch 8."""
    c = load_config("configs/evals/demo.py", "smoke")
    c.model.update(depth=1, width=48, num_heads=3)
    c.data.update(synthetic_train_size=16, synthetic_val_size=12, batch_size=8, **data)
    c.eval.update(keep_checkpoints=3)
    return c


def _final_params(workdir):
    import orbax.checkpoint as ocp

    mngr = ocp.CheckpointManager(os.path.join(workdir, "probe_checkpoints"),
                                 item_names=("state", "data", "meta"))
    state = mngr.restore(mngr.latest_step(), args=ocp.args.Composite(
        state=ocp.args.StandardRestore()))["state"]
    mngr.close()
    return jax.device_get(state["params"])


# ----------------------------------------------------------------------------- program
@pytest.mark.parametrize("cache_features", [False, True])
def test_resume_matches_uninterrupted_run(tmp_path, cache_features):
    full_dir, resumed_dir = tmp_path / "full", tmp_path / "resumed"
    c = tiny_config()
    c.probe.cache_features = cache_features
    full = eval_lib.run(c, str(full_dir))
    assert [r["epoch"] for r in full] == [1, 2]
    assert all(r["val_count"] == 12 for r in full)  # padding examples are not counted
    assert 0 <= full[-1]["val_top1"] <= full[-1]["val_top5"] <= 100
    # Generated videos also get shape and direction scored apart; a right class has both right.
    for r in full:
        assert r["val_top1"] <= min(r["val_top1_shape"], r["val_top1_direction"]) <= 100
    assert sorted(os.listdir(full_dir / "probe_checkpoints")) == ["2", "4"]  # one per epoch

    # A run killed after its first epoch: the epoch-1 checkpoint is the last one on disk, and
    # the metrics file may hold rows written after it.
    shutil.copytree(full_dir, resumed_dir)
    shutil.rmtree(resumed_dir / "probe_checkpoints" / "4")
    # ... written by an older version, whose stored probe settings lack keys added since: they
    # take their defaults, so the resume is not refused.
    step_dir = resumed_dir / "probe_checkpoints" / "2"
    meta = json.load(open(step_dir / "meta" / "metadata"))
    for key in ("form", "num_blocks", "checkpoint"):
        del meta["probe"][key]
    json.dump(meta, open(step_dir / "meta" / "metadata", "w"))
    checkpoint.write_manifest(str(step_dir))
    resumed = eval_lib.run(c, str(resumed_dir))
    assert [r["epoch"] for r in resumed] == [1, 2]
    for a, b in zip(full, resumed):
        for key in ("train_loss", "train_top1", "val_loss", "val_top1", "val_top5", "lr", "wd"):
            assert a[key] == pytest.approx(b[key], rel=1e-6, abs=1e-7), key
    jax.tree.map(np.testing.assert_array_equal, _final_params(str(full_dir)),
                 _final_params(str(resumed_dir)))
    rows = [json.loads(line) for line in open(resumed_dir / "eval_metrics.jsonl")]
    assert [r["epoch"] for r in rows] == [1, 2]
    summary = json.load(open(resumed_dir / "eval_summary.json"))
    assert summary["final_val_top1"] == resumed[-1]["val_top1"]
    assert summary["final_val_top1_shape"] == resumed[-1]["val_top1_shape"]
    assert "random-init" in summary["encoder"]


def test_factor_hits_score_each_part_of_the_label():
    from vjepa_jax.data.synthetic import label_factors, label_of

    labels = jnp.array([label_of(1, 2), label_of(3, 0), label_of(0, 1)])
    # Predicted: right shape wrong direction, all right, wrong shape right direction.
    probs = jax.nn.one_hot(jnp.array([label_of(1, 3), label_of(3, 0), label_of(2, 1)]), 16)
    hits = probe_steps.factor_hits(probs, labels, label_factors)
    np.testing.assert_array_equal(hits["top1_shape"], [1, 1, 0])
    np.testing.assert_array_equal(hits["top1_direction"], [0, 1, 1])
    assert probe_steps.factor_hits(probs, labels, None) == {}


def test_probe_schedules_follow_the_reference_formulas():
    c = eval_configs.base_eval_config()
    ipe = 7
    sched = probe_steps.schedule(c.optim, ipe)
    total = c.optim.epochs * ipe
    for s in (1, total // 3, total):
        # Warmup 0: cosine from lr to final_lr over epochs * ipe steps, indexed from 1.
        lr = 0.0 + (1e-3 - 0.0) * 0.5 * (1 + math.cos(math.pi * s / total))
        wd = 1e-6 + (0.01 - 1e-6) * 0.5 * (1 + math.cos(math.pi * s / total))
        got_lr, got_wd = sched(s)
        assert float(got_lr) == pytest.approx(lr, rel=1e-5, abs=1e-9)
        assert float(got_wd) == pytest.approx(max(wd, 1e-6), rel=1e-5)


def test_probe_weight_decay_groups():
    from vjepa_jax.models import probe as probe_lib

    probe = probe_lib.AttentiveClassifier(5, 2)
    shapes = jax.eval_shape(probe.init, jax.random.key(0), jnp.zeros((1, 3, 8)))["params"]
    mask = optim.decay_mask(shapes)
    blk = mask["cross_attention_block"]
    # Decayed: matrices and the query token; not decayed: biases and LayerNorm scales.
    assert mask["query_tokens"] and mask["linear"]["kernel"] and blk["xattn"]["kv"]["kernel"]
    assert not (mask["linear"]["bias"] or blk["fc1"]["bias"] or blk["norm1"]["scale"]
                or blk["norm2"]["bias"])


def test_architecture_mismatch_is_named():
    c = eval_configs.eval_config("vitl16", "k400")
    saved = dict(c.model.to_dict(), variant="huge")
    with pytest.raises(ValueError, match="width: checkpoint 1280 vs config 1024"):
        probe_steps.check_architecture(saved, c.model, "ckpt")
    # Frames and resolution may differ: the position table is rebuilt for the eval grid.
    probe_steps.check_architecture(dict(c.model.to_dict(), crop_size=384, num_frames=8), c.model, "ckpt")


def test_parameter_mismatch_names_every_key():
    enc = vit.encoder_from_config(tiny_config().model)
    abstract = jax.eval_shape(enc.init, jax.random.key(0), jnp.zeros((1, 4, 32, 32, 3)))["params"]
    abstract = jax.tree.map(lambda x: getattr(x, "value", x), abstract,
                            is_leaf=lambda x: hasattr(x, "value"))
    params = jax.tree.map(lambda x: np.zeros(x.shape, x.dtype), abstract)
    mismatch.check_tree_shapes(params, abstract, "ckpt")
    del params["norm"]
    params["extra"] = np.zeros(3)
    params["blocks_0"]["fc1"]["bias"] = np.zeros(5)
    with pytest.raises(ValueError) as err:
        mismatch.check_tree_shapes(params, abstract, "ckpt")
    msg = str(err.value)
    assert "missing (2): norm/bias, norm/scale" in msg and "unexpected (1): extra" in msg
    want = tuple(abstract["blocks_0"]["fc1"]["bias"].shape)
    assert f"blocks_0/fc1/bias: file (5,), model {want}" in msg


# ----------------------------------------------------------------------------- data sources
def test_tfds_mock_imagenet_batches():
    tfds = pytest.importorskip("tensorflow_datasets")
    c = eval_configs.eval_config("vitl16", "in1k")
    c.model.update(crop_size=32)
    c.data.update(batch_size=4, num_workers=0)
    with tfds.testing.mock_data(num_examples=6):
        train_source = eval_data.make_source(c, train=True)
        batch = next(iter(eval_data.make_train_dataset(c, train_source)))
        val = list(eval_data.make_val_dataset(c, eval_data.make_source(c, train=False)))
    # Images stay single frames on the host: [B, segments, views, T=1, S, S, 3].
    assert batch["video"].shape == (4, 1, 1, 1, 32, 32, 3) and batch["video"].dtype == np.uint8
    assert batch["label"].shape == (4,) and np.all((batch["label"] >= 0) & (batch["label"] < 1000))
    assert [b["video"].shape for b in val] == [(4, 1, 1, 1, 32, 32, 3)] * 2
    assert sum(int(b["valid"].sum()) for b in val) == 6  # 6 examples, 2 padding


def test_tfds_class_count_is_checked():
    tfds = pytest.importorskip("tensorflow_datasets")
    c = eval_configs.eval_config("vitl16", "in1k")
    c.data.num_classes = 10
    with tfds.testing.mock_data(num_examples=2):
        with pytest.raises(ValueError, match="imagenet2012' has 1000 classes"):
            eval_data.make_source(c, train=True)


def _write_image_folder(root, classes, per_class=2):
    from PIL import Image

    for split in ("train", "val"):
        for ci, cls in enumerate(classes):
            os.makedirs(root / split / cls)
            for i in range(per_class):
                pixels = np.full((20, 30, 3), 40 * ci + i, np.uint8)
                Image.fromarray(pixels).save(root / split / cls / f"{i}.png")


def test_image_folder_labels_and_views(tmp_path):
    _write_image_folder(tmp_path, ["cat", "ant", "bee"])
    c = eval_configs.eval_config("vitl16", "places205")
    c.model.update(crop_size=16)
    c.data.update(root=str(tmp_path), num_classes=3, batch_size=2, num_workers=0)
    source = eval_data.make_source(c, train=True)
    assert source.classes == ("ant", "bee", "cat")  # sorted, like torchvision's ImageFolder
    clip, label = source.load(0, None)
    assert clip.shape == (1, 1, 20, 30, 3) and label == 0 and int(clip[0, 0, 0, 0, 0]) == 40
    val = list(eval_data.make_val_dataset(c, eval_data.make_source(c, train=False)))
    labels = np.concatenate([b["label"] for b in val])
    assert labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert val[0]["video"].shape == (2, 1, 1, 1, 16, 16, 3)
    # A flat-coloured image stays flat through the centre crop.
    assert int(val[1]["video"][0].min()) == int(val[1]["video"][0].max()) == 80
    c.data.num_classes = 4
    with pytest.raises(ValueError, match="3 class folders, config data.num_classes=4"):
        eval_data.make_source(c, train=True)


def test_csv_labels_are_validated(tmp_path):
    c = eval_configs.eval_config("vitl16", "ssv2")
    good, bad = tmp_path / "train.csv", tmp_path / "bad.csv"
    good.write_text("".join(f"/v/{i}.mp4 {i % 174}\n" for i in range(348)))
    bad.write_text("/v/a.mp4 3\n/v/b.mp4 174\n")
    c.data.update(train_index=(str(good),), val_index=(str(bad),))
    assert len(eval_data.make_source(c, train=True)) == 348
    with pytest.raises(ValueError, match=r"bad.csv.*outside \[0, 174\).*label 174"):
        eval_data.make_source(c, train=False)
    c.data.train_index = (str(tmp_path / "few.csv"),)
    (tmp_path / "few.csv").write_text("/v/a.mp4 0\n/v/b.mp4 1\n")
    with pytest.raises(ValueError, match="cover 2 of data.num_classes=174"):
        eval_data.make_source(c, train=True)
    c.data.require_all_classes = False
    assert len(eval_data.make_source(c, train=True)) == 2


def test_synthetic_train_and_val_videos_differ():
    c = tiny_config()
    train = eval_data.make_source(c, train=True)
    val = eval_data.make_source(c, train=False)
    a, b = train.load(0, None)[0], val.load(0, None)[0]
    assert a.shape == (1, 4, 32, 32, 3) and not np.array_equal(a, b)
    batch = next(iter(eval_data.make_train_dataset(c, train)))
    assert batch["video"].shape == (8, 1, 1, 4, 32, 32, 3)


# ----------------------------------------------------------------------------- configs
def test_every_eval_config_loads_and_matches_the_reference():
    for model in ("vitl16", "vith16", "vith16_384"):
        for data in ("k400", "ssv2", "in1k", "places205", "inat21"):
            c = load_config("configs/evals/probe.py", f"{model},{data}")
            if c.data.source == "csv":  # index files are given on the command line
                c.data.update(train_index=("a.csv",), val_index=("b.csv",))
            if c.data.source == "imagefolder":
                c.data.root = "/data"
            eval_configs.validate(c)
            assert c.optim.lr == 1e-3 and c.optim.final_lr == 0 and c.optim.warmup == 0
            assert c.optim.final_weight_decay == 1e-6 and c.optim.clip_grad == 1.0
    k400 = load_config("configs/evals/probe.py", "vith16_384,k400")
    assert (k400.data.num_segments, k400.data.num_views, k400.data.batch_size) == (8, 3, 256)
    assert (k400.model.variant, k400.model.crop_size, k400.model.num_frames) == ("huge", 384, 16)
    assert (k400.optim.epochs, k400.optim.weight_decay, k400.data.num_classes) == (20, 0.01, 400)
    ssv2 = load_config("configs/evals/probe.py", "vitl16,ssv2")
    assert (ssv2.data.num_segments, ssv2.data.num_classes, ssv2.model.variant) == (2, 174, "large")
    inat = load_config("configs/evals/probe.py", "vith16,inat21")
    assert (inat.data.batch_size, inat.optim.weight_decay) == (1024, 1e-3)
    assert inat.data.num_classes == 10000
    assert (inat.data.num_segments, inat.data.num_views) == (1, 1)
    with pytest.raises(ValueError, match="MODEL,DATASET"):
        load_config("configs/evals/probe.py")
    with pytest.raises(ValueError, match="unknown dataset 'k700'"):
        load_config("configs/evals/probe.py", "vitl16,k700")


def test_probe_config_docstring_lists_every_pair_with_its_published_top1():
    import importlib.util

    spec = importlib.util.spec_from_file_location("probe_cfg",
                                                  os.path.join(ROOT, "configs/evals/probe.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    doc = module.__doc__
    # VJEPA_SPEC §8.1, written out here rather than taken from the code under test.
    published = {("vitl16", "k400"): 80.8, ("vitl16", "ssv2"): 69.5, ("vitl16", "in1k"): 74.8,
                 ("vitl16", "places205"): 60.3, ("vitl16", "inat21"): 67.8,
                 ("vith16", "k400"): 82.0, ("vith16", "ssv2"): 71.4, ("vith16", "in1k"): 75.9,
                 ("vith16", "places205"): 61.7, ("vith16", "inat21"): 67.9,
                 ("vith16_384", "k400"): 81.9, ("vith16_384", "ssv2"): 72.2,
                 ("vith16_384", "in1k"): 77.4, ("vith16_384", "places205"): 62.8,
                 ("vith16_384", "inat21"): 72.6}
    rows = {}
    for line in doc.splitlines():
        words = line.split()
        if len(words) == 2 and words[0].count(",") == 1:
            rows[tuple(words[0].split(","))] = float(words[1])
    assert rows == published
    assert eval_configs.PUBLISHED == {m: {d: v for (mm, d), v in published.items() if mm == m}
                                      for m in ("vitl16", "vith16", "vith16_384")}


def test_config_errors_name_the_key():
    c = eval_configs.eval_config("vitl16", "k400")
    with pytest.raises(ValueError, match="data.train_index/val_index"):
        eval_configs.validate(c)
    c = load_config("configs/evals/demo.py")
    c.data.num_segments = 0
    with pytest.raises(ValueError, match="data.num_segments"):
        eval_configs.validate(c)


# ----------------------------------------------------------------------------- online eval
def test_knn_matches_numpy_reference():
    rng = np.random.default_rng(0)
    tx, ty, vx = rng.normal(size=(40, 6)), rng.integers(0, 3, 40), rng.normal(size=(9, 6))
    got = np.asarray(readouts.knn_predict(jnp.asarray(tx), jnp.asarray(ty), jnp.asarray(vx),
                                              k=5, num_classes=3, temperature=0.1))
    n = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)
    sim = n(vx) @ n(tx).T
    expect = []
    for row in sim:
        top = np.argsort(-row)[:5]
        votes = np.zeros(3)
        np.add.at(votes, ty[top], np.exp(row[top] / 0.1))
        expect.append(votes.argmax())
    np.testing.assert_array_equal(got, expect)


def test_linear_probe_separates_separable_classes():
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(4, 16)) * 3
    y = rng.integers(0, 4, 200)
    x = centres[y] + rng.normal(size=(200, 16))
    pred = readouts.linear_predict(jnp.asarray(x[:150]), jnp.asarray(y[:150]),
                                      jnp.asarray(x[150:]), num_classes=4, steps=200, lr=1e-2,
                                      weight_decay=1e-4)
    assert np.mean(np.asarray(pred) == y[150:]) > 0.95


def _standardise(x, v):
    mean, std = x.mean(0), x.std(0) + 1e-6
    return (x - mean) / std, (v - mean) / std


def _primal_ridge(a, y, b, k, lam):
    """Independent reference on standardised a: W = (A'A + lam F I)^-1 A'Y, labels argmax bW."""
    targets = np.eye(k)[y] - 1.0 / k
    w = np.linalg.solve(a.T @ a + lam * a.shape[1] * np.eye(a.shape[1]), a.T @ targets)
    return (b @ w).argmax(-1)


def test_ridge_matches_primal_solution_and_explicit_leave_one_out():
    rng = np.random.default_rng(2)
    centres = rng.normal(size=(3, 12))
    y = rng.integers(0, 3, 40)
    x = (centres[y] + 1.5 * rng.normal(size=(40, 12))).astype(np.float32)
    v = rng.normal(size=(15, 12)).astype(np.float32)
    lambdas = (1e-3, 0.1, 10.0)
    pred, lam, loo = readouts.ridge_predict(x, y, v, num_classes=3, lambdas=lambdas)
    a, b = _standardise(x.astype(np.float64), v.astype(np.float64))
    # Leave-one-out by refitting without each example (standardised once, on all N, as there).
    for lam_i, acc in zip(lambdas, loo):
        hits = [_primal_ridge(np.delete(a, i, 0), np.delete(y, i), a[i:i + 1], 3, lam_i)[0] == y[i]
                for i in range(len(a))]
        assert acc == pytest.approx(np.mean(hits)), lam_i
    assert len(set(np.round(loo, 6))) > 1  # the choice below is a real one
    assert lam == lambdas[int(np.argmax(loo))]
    np.testing.assert_array_equal(pred, _primal_ridge(a, y, b, 3, lam))


def test_ridge_on_tokens_reads_where_pooling_cannot():
    """Labels set by which token holds a bump: the mean over tokens loses them, ridge does not."""
    rng = np.random.default_rng(3)
    y = rng.integers(0, 4, 240)
    tokens = rng.normal(size=(240, 4, 8)) * 0.3
    tokens[np.arange(240), y] += 2.0  # same feature vector, different token
    pred, _, _ = readouts.ridge_predict(tokens[:200].reshape(200, -1), y[:200],
                                           tokens[200:].reshape(40, -1), num_classes=4)
    pooled, _, _ = readouts.ridge_predict(tokens[:200].mean(1), y[:200],
                                             tokens[200:].mean(1), num_classes=4)
    assert np.mean(pred == y[200:]) > 0.95
    assert np.mean(pooled == y[200:]) < 0.5


def test_online_eval_reports_scores_and_random_baseline(capsys):
    c = load_config("configs/pretrain/demo.py", "smoke")
    c.model.update(depth=1)
    c.online_eval.update(num_train=24, num_val=8, batch_size=8, k=5, linear_steps=20)
    enc = vit.encoder_from_config(c.model)
    params = enc.init(jax.random.key(3), jnp.zeros((1, 4, 32, 32, 3)))["params"]
    params = jax.tree.map(lambda x: getattr(x, "value", x), params,
                          is_leaf=lambda x: hasattr(x, "value"))
    out = online.online_eval(enc, params, c)
    assert c.online_eval.token_ridge  # the demo config's setting: ridge on all tokens too
    assert set(out) == {"knn_top1", "linear_top1", "feature_std", "ridge_top1",
                        "knn_top1_random_init", "linear_top1_random_init",
                        "feature_std_random_init", "ridge_top1_random_init"}
    assert all(0 <= out[k] <= 100 for k in out if "top1" in k)
    # Seed 3 differs from the baseline's seed 0: different features, different spread.
    assert out["feature_std"] != out["feature_std_random_init"]
    # Quiet by default: train.py calls it every train.eval_every steps.
    assert "features" not in capsys.readouterr().err
    # Cached split and baseline: same numbers; with progress bars (stderr) for the pretrained
    # encoder's features and readouts (the cached baseline computes nothing).
    again = online.online_eval(enc, params, c, progress=True)
    assert again == out
    err = capsys.readouterr().err
    assert "pretrained: 24 train features" in err and "pretrained: 8 val features" in err
    assert "pretrained: readouts" in err and "3/3" in err and "random init" not in err
    # One line per readout beside its baseline, the demo's readout (ridge) first and named so.
    lines = online.summary(out)
    assert len(lines) == 4
    assert lines[0] == (f"ridge on all tokens (the demo's readout, the one README reports): "
                        f"{out['ridge_top1']:.1f} % vs {out['ridge_top1_random_init']:.1f} % "
                        f"random init ({out['ridge_top1'] - out['ridge_top1_random_init']:+.1f})")
    assert lines[1].startswith("k-NN on mean-pooled tokens: ") and "random init" in lines[1]
    assert lines[2].startswith("linear on mean-pooled tokens: ") and "random init" in lines[2]
    no_baseline = online.summary({k: v for k, v in out.items() if "random_init" not in k})
    assert len(no_baseline) == 4 and not any("random init" in line for line in no_baseline)
    # Params sharded on a mesh: the batches are split over its 8 devices, same features.
    from vjepa_jax import sharding

    mesh = sharding.make_mesh(ml_collections.ConfigDict(dict(data=-1, fsdp=1)))
    on_mesh = jax.device_put(params, sharding.replicated(mesh))
    clips = online.labelled_split(c, c.online_eval)[1][0]
    np.testing.assert_allclose(online.clip_features(enc, on_mesh, clips, 8),
                               online.clip_features(enc, params, clips, 8), rtol=1e-5,
                               atol=1e-5)


# ----------------------------------------------------------------------------- the key check
@pytest.mark.slow
def test_demo_pretrained_encoder_beats_random_init(tmp_path):
    """The demo's readout (ridge on all tokens, `online_eval.token_ridge`) of the demo-pretrained
    EMA target must beat the same readout of every one of three random-init encoders, on the
    demo's labelled split and on a second split of fresh clips.

    Uses $VJEPA_DEMO_WORKDIR (a finished `configs/pretrain/demo.py:causal` run) or pretrains
    one here.
    About 15 minutes on a 2-core CPU; docs/EVAL.md has the measured margin.
    """
    config = load_config("configs/pretrain/demo.py", "causal")
    scores = demo_ridge_scores(config, "VJEPA_DEMO_WORKDIR", tmp_path,
                               (config.online_eval.seed, 3000))
    for pretrained, random_init in scores.values():
        assert pretrained > max(random_init), scores
