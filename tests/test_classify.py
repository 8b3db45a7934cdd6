"""Released-probe workflows on the demo: load_classifier and the multi-view protocol, the
classify program on generated mp4s, and eval.val_only reproducing a probe run's final number.

One module fixture builds a smoke demo pretraining checkpoint (tests/workdirs.py) and trains the
smoke demo probe on it for 2 epochs; every test reuses both.
"""
import csv
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from common import ROOT, load_config
from vjepa_jax import classify, eval as eval_lib, load_classifier
from vjepa_jax.classifier import top_k
from vjepa_jax.data.synthetic import SyntheticVideos, write_mp4
from workdirs import make_workdir


def softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """(pretraining workdir, probe workdir, the probe's eval config, its per-epoch rows, mp4s)."""
    root = tmp_path_factory.mktemp("released")
    make_workdir(root / "pretrain")  # the smoke demo model's checkpoint
    config = load_config("configs/evals/demo.py", "smoke")  # cached features, positions added
    config.pretrained = str(root / "pretrain")
    rows = eval_lib.run(config, str(root / "probe"))
    # Generated videos at another size than the encoder's crop (48 x 32): 3 views along the width.
    videos = SyntheticVideos(3, 16, 32, 48, seed=5)
    mp4s = []
    for i in range(len(videos)):
        path = str(root / f"video_{i}.mp4")
        write_mp4(path, videos[i]["video"], fps=8)
        mp4s.append((path, int(videos[i]["label"])))
    return root / "pretrain", root / "probe", config, rows, mp4s


def test_predict_is_the_mean_of_the_per_view_softmax(demo):
    pretrain, probe_dir, _, _, mp4s = demo
    clf = load_classifier(pretrain, probe_dir, segments=2, views=3)
    assert clf.num_classes == 16 and (clf.segments, clf.views) == (2, 3)
    path = mp4s[0][0]
    clips = clf.clips(path)
    assert clips.shape == (2, 3, 4, 32, 32, 3) and clips.dtype == np.uint8
    # A 2-epoch probe's logits are flat; a sharper head (x 5) widens the gap between averaging
    # probabilities and averaging logits.
    enc, probe = clf.encoder, clf.probe
    probe.params = jax.tree.map(np.copy, probe.params)
    probe.params["linear"] = jax.tree.map(lambda a: 5 * a, probe.params["linear"])
    # By hand: each segment and view encoded alone (the loader's encoder), a view's segment tokens
    # concatenated, the probe applied per view, softmax per view, then the mean over views.
    per_view = []
    for v in range(3):
        tokens = np.concatenate([np.asarray(enc(enc.preprocess(clips[s, v][None])))
                                 for s in range(2)], axis=1)
        per_view.append(np.asarray(probe.module.apply({"params": probe.params}, tokens))[0])
    per_view = np.stack(per_view)
    expected = softmax(per_view.astype(np.float64)).mean(0)
    got = clf.predict(path)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert abs(got.sum() - 1) < 1e-5
    # The reference averages probabilities, not logits: the check above fails for the logit mean.
    assert not np.allclose(softmax(per_view.mean(0)), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(clf.view_logits(clips[None]))[0], per_view, rtol=1e-5,
                               atol=1e-5)
    # One clip per example: clf(clips) is the logits of that single view.
    single = np.asarray(clf(clips[:1, 0]))
    want = probe.module.apply({"params": probe.params},
                              np.asarray(enc(enc.preprocess(clips[0, 0][None]))))
    np.testing.assert_allclose(single, np.asarray(want), rtol=1e-5, atol=1e-5)
    # The protocol of the probe's own run is the default (1 segment x 1 view for the demo).
    own = load_classifier(None, probe_dir)
    assert (own.segments, own.views, own.encoder.source.split(" ")[0]) == (1, 1, str(pretrain))


def test_top_k_orders_by_probability():
    indices, probs = top_k(np.array([0.1, 0.5, 0.15, 0.25]), 3)
    assert indices.tolist() == [1, 3, 2] and probs.tolist() == [0.5, 0.25, 0.15]


def test_classify_program_on_generated_mp4s(demo, tmp_path):
    _, probe_dir, _, _, mp4s = demo
    labels = tmp_path / "classes.txt"
    names = [f"class-{i}" for i in range(16)]
    labels.write_text("\n".join(names) + "\n")
    index = tmp_path / "val.csv"
    index.write_text("".join(f"{p} {y}\n" for p, y in mp4s[1:]))
    out = tmp_path / "pred.csv"
    # No --encoder: the probe workdir names the encoder it was trained on.
    r = subprocess.run([sys.executable, "-m", "vjepa_jax.classify", "--probe", str(probe_dir),
                        "--labels", str(labels), "--top_k", "3", "--views", "3",
                        "--out", str(out), mp4s[0][0], str(index)],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    lines = {line.split(": ", 1)[0]: line.split(": ", 1)[1] for line in r.stdout.splitlines()
             if line.startswith(tuple(p for p, _ in mp4s))}
    assert sorted(lines) == sorted(p for p, _ in mp4s)
    clf = load_classifier(None, probe_dir, views=3)
    for path, _ in mp4s:
        indices, probs = top_k(clf.predict(path), 3)
        assert lines[path] == ", ".join(f"{i} ({names[i]}) {p:.3f}" for i, p in zip(indices, probs))
    assert "accuracy over 2 labelled inputs: top-1" in r.stdout
    rows = list(csv.DictReader(open(out)))
    assert [row["path"] for row in rows] == [p for p, _ in mp4s]
    assert [row["label"] for row in rows] == ["", str(mp4s[1][1]), str(mp4s[2][1])]
    for row, (path, _) in zip(rows, mp4s):
        indices, probs = top_k(clf.predict(path), 3)
        assert [int(row[f"class_{k}"]) for k in (1, 2, 3)] == indices.tolist()
        assert [row[f"name_{k}"] for k in (1, 2, 3)] == [names[i] for i in indices]
        np.testing.assert_allclose([float(row[f"prob_{k}"]) for k in (1, 2, 3)], probs,
                                   atol=1e-6)
        assert row["error"] == ""


def test_classify_inputs_and_labels_are_checked(tmp_path):
    names = tmp_path / "names.txt"
    names.write_text("a\nb\n")
    with pytest.raises(ValueError, match=r"names.txt: 2 names, the probe has 3 classes"):
        classify.read_labels(str(names), 3)
    with pytest.raises(ValueError, match="nope.mp4: no such video"):
        classify.inputs([str(tmp_path / "nope.mp4")])
    r = subprocess.run([sys.executable, "-m", "vjepa_jax.classify", "--help"], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "--probe" in r.stdout and "--labels" in r.stdout


def test_val_only_reproduces_the_probe_runs_final_number(demo, capsys):
    pretrain, probe_dir, config, rows, _ = demo
    c = load_config("configs/evals/demo.py", "smoke")
    c.pretrained = str(pretrain)
    c.eval.update(val_only=True, published_top1=80.8)
    c.probe.checkpoint = str(probe_dir)
    report = eval_lib.run(c, None)
    final = rows[-1]
    assert report["val_count"] == final["val_count"] == c.data.synthetic_val_size
    assert report["val_top1"] == final["val_top1"]
    assert report["val_top5"] == final["val_top5"]
    assert report["val_loss"] == pytest.approx(final["val_loss"], rel=1e-5)
    assert report["reported"]["val_top1"] == final["val_top1"]
    out = capsys.readouterr().out
    assert f"val top-1 {final['val_top1']:.2f} %" in out
    assert f"published top-1 80.8 % (eval.published_top1): difference " \
           f"{final['val_top1'] - 80.8:+.2f}" in out
    assert f"the probe's training run reported top-1 {final['val_top1']:.2f} %" in out
    c.data.num_classes = 10
    with pytest.raises(ValueError, match="has 16 classes, data.num_classes=10"):
        eval_lib.run(c, None)


def test_val_only_config_keys_are_checked():
    c = load_config("configs/evals/demo.py", "smoke")
    c.eval.val_only = True
    with pytest.raises(ValueError, match="config.probe.checkpoint=''"):
        eval_lib.run(c, None)
    c.eval.val_only, c.probe.checkpoint = False, "/x.pth.tar"
    with pytest.raises(ValueError, match="unless eval.val_only=True"):
        eval_lib.run(c, "/tmp/unused")
    c.probe.checkpoint = ""
    with pytest.raises(ValueError, match="--workdir is required"):
        eval_lib.run(c, None)
    assert load_config("configs/evals/probe.py", "vitl16,k400").eval.published_top1 == 80.8
    # Checking a released probe needs the validation index only.
    from vjepa_jax.evaluation import configs as eval_configs

    k400 = load_config("configs/evals/probe.py", "vitl16,k400")
    k400.data.val_index = ("val.csv",)
    k400.eval.val_only, k400.probe.checkpoint = True, "probe.pth.tar"
    eval_configs.validate(k400)
    k400.eval.val_only, k400.probe.checkpoint = False, ""
    with pytest.raises(ValueError, match="data.train_index/val_index"):
        eval_configs.validate(k400)
    assert load_config("configs/evals/probe.py", "vith16_384,ssv2").eval.published_top1 == 72.2


def test_val_only_on_an_official_probe_file(demo, tmp_path, capsys):
    pytest.importorskip("torch")
    from vjepa_jax.evaluation import data as eval_data
    from vjepa_jax.interop import probe as probe_interop

    pretrain, probe_dir, _, _, _ = demo
    # The demo probe written in the official layout (its positions option has no official form:
    # the file's probe is the reference's position-blind one).
    probe = load_classifier(pretrain, probe_dir).probe
    path = tmp_path / "probe.pth.tar"
    probe_interop.write_file(path, probe.params, "vjepa")
    c = load_config("configs/evals/demo.py", "smoke")
    c.pretrained = str(pretrain)
    c.eval.update(val_only=True, published_top1=80.8)
    c.probe.update(checkpoint=str(path), feature_dtype="float32", cache_features=False)
    report = eval_lib.run(c, str(tmp_path / "report"))
    assert report["reported"] is None and "published top-1 80.8 %" in capsys.readouterr().out
    assert os.path.isfile(tmp_path / "report" / "val_only.json")
    # The same number by hand: the classifier's mean-of-softmax over the validation clips.
    clf = load_classifier(pretrain, path)
    hits = count = 0
    for batch in eval_data.make_val_dataset(c, eval_data.make_source(c, train=False)):
        probs = clf.probabilities(batch["video"])
        valid = batch["valid"].astype(bool)
        hits += int(np.sum((probs.argmax(-1) == batch["label"])[valid]))
        count += int(valid.sum())
    assert report["val_count"] == count == 16
    assert report["val_top1"] == pytest.approx(100.0 * hits / count)
