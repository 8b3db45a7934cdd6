"""The training program: artifacts, exact resume, pre-emption, and clear errors for bad input."""
import json
import os
import signal
import subprocess
import sys
import threading

import numpy as np
import pytest

from common import ROOT, smoke_config
from vjepa_jax import checkpoint, logger, mismatch, train, workdir as workdir_lib
from vjepa_jax.cli import EXIT_PREEMPTED

SMOKE = "configs/pretrain/demo.py:smoke"


def cli(*args, timeout=300):
    """Run `python -m vjepa_jax.train ARGS`; returns the CompletedProcess."""
    return subprocess.run([sys.executable, "-m", "vjepa_jax.train", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def losses(workdir):
    return {r["step"]: r["loss"] for r in logger.read(workdir)}


def test_demo_run_writes_artifacts_and_resumes_exactly(tmp_path):
    straight, split = str(tmp_path / "straight"), str(tmp_path / "split")
    train.run(smoke_config(), straight)
    assert sorted(os.listdir(os.path.join(straight, "checkpoints"))) == ["3", "6"]
    assert os.listdir(os.path.join(straight, "tensorboard"))
    assert os.path.getsize(os.path.join(straight, "metrics.png")) > 10_000
    full = losses(straight)
    assert sorted(full) == [1, 2, 3, 4, 5, 6]
    assert full[6] < full[1]  # the loss drops even in 6 smoke steps

    # Interrupted after 3 steps (as a pre-empted job would be), then resumed from the workdir.
    config = smoke_config()
    config.train.stop_after = 3
    train.run(config, split)
    assert sorted(losses(split)) == [1, 2, 3]
    train.run(smoke_config(), split)
    resumed = losses(split)
    assert sorted(resumed) == [1, 2, 3, 4, 5, 6]
    np.testing.assert_allclose([resumed[s] for s in range(1, 7)], [full[s] for s in range(1, 7)],
                               rtol=1e-6)


def test_rerunning_a_finished_run_says_so_and_changes_nothing(tmp_path, caplog, capsys):
    workdir = str(tmp_path / "done")
    config = smoke_config()  # 6 steps
    train.run(config, workdir)
    before = losses(workdir)
    capsys.readouterr()
    with caplog.at_level("INFO", logger="vjepa_jax"):
        train.run(config, workdir)
    assert "already complete (step 6 of 6)" in caplog.text
    assert "100%" not in capsys.readouterr().err  # no second progress bar
    assert losses(workdir) == before


def test_sigterm_saves_a_checkpoint_and_exits(tmp_path):
    """SIGTERM right after compilation, before the first log row: saved, exit 75, no plot."""
    workdir = str(tmp_path / "run")
    proc = subprocess.Popen([sys.executable, "-m", "vjepa_jax.train", "--config", SMOKE,
                             "--workdir", workdir, "--config.optim.epochs=100",
                             "--config.train.log_every=1000", "--config.mesh.data=1"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines, compiled = [], threading.Event()

    def read_until_compiled():  # the handler is installed before the step is compiled
        for line in proc.stdout:
            lines.append(line)
            if "train step compiled" in line:
                compiled.set()
                return

    threading.Thread(target=read_until_compiled, daemon=True).start()
    assert compiled.wait(240) and proc.poll() is None, "training did not start: " + "".join(lines)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    out = "".join(lines) + out
    assert proc.returncode == EXIT_PREEMPTED == 75, out  # "resume me", not "finished"
    assert "received signal" in out and "vjepa_jax.train: error" not in out, out
    # The library logs at INFO (compile time, the signal); Orbax's per-file INFO lines do not.
    assert "checkpoint_manager" not in out, out
    steps = [int(s) for s in os.listdir(os.path.join(workdir, "checkpoints"))]
    assert steps and max(steps) < 300  # saved where it stopped, long before the end
    assert not logger.read(workdir) and not os.path.exists(os.path.join(workdir, "metrics.png"))


def test_unknown_config_file_is_reported():
    r = cli("--config", "configs/pretrain/nope.py", "--workdir", "/tmp/unused")
    assert r.returncode != 0
    assert "nope.py" in r.stderr and "Traceback" not in r.stderr


def test_unknown_override_key_is_reported():
    r = cli("--config", SMOKE, "--workdir", "/tmp/unused", "--config.model.widht=3")
    assert r.returncode != 0
    assert "widht" in r.stderr and "Traceback" not in r.stderr
    r = cli("--config", SMOKE, "--workdir", "/tmp/unused", "--config.modle.width=3")
    assert r.returncode != 0
    assert "unknown config section in an override" in r.stderr and "modle" in r.stderr, r.stderr


def test_wrong_override_type_is_reported():
    r = cli("--config", SMOKE, "--workdir", "/tmp/unused", "--config.data.batch_size=many")
    assert r.returncode != 0
    assert "batch_size" in r.stderr and "Traceback" not in r.stderr


def test_bad_config_value_is_reported(tmp_path):
    r = cli("--config", SMOKE, "--workdir", str(tmp_path), "--config.data.source=youtube")
    assert r.returncode != 0
    assert "data.source" in r.stderr and "Traceback" not in r.stderr


def test_unwritable_workdir_is_reported(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    r = cli("--config", SMOKE, "--workdir", str(blocker / "run"))
    assert r.returncode != 0
    assert "not writable" in r.stderr and "Traceback" not in r.stderr


def test_checkpoint_of_a_different_model_is_refused_and_kept(tmp_path):
    workdir = str(tmp_path)
    config = smoke_config()
    config.train.stop_after = 1
    train.run(config, workdir)
    ckpt = os.path.join(workdir, "checkpoints")
    before = {f: os.path.getmtime(os.path.join(ckpt, f)) for f in os.listdir(ckpt)}
    r = cli("--config", SMOKE, "--workdir", workdir, "--config.model.depth=3", "--config.mesh.data=1")
    assert r.returncode != 0
    assert "different model" in r.stderr and "depth" in r.stderr and "Traceback" not in r.stderr
    assert {f: os.path.getmtime(os.path.join(ckpt, f)) for f in os.listdir(ckpt)} == before


def test_check_resumable_names_each_difference():
    with pytest.raises(mismatch.CheckpointMismatch, match="masks") as e:
        workdir_lib.check_resumable({"model": 1, "masks": [1], "method": "vjepa"},
                                {"model": 2, "masks": [2], "method": "vjepa", "config": "x"}, "DIR")
    assert "model: checkpoint 1 vs config 2" in str(e.value) and "method" not in str(e.value)


def test_trains_from_real_mp4_files_with_a_csv_index(tmp_path, monkeypatch):
    """The demo model trains a few steps from PyAV-encoded mp4 files listed in an official CSV,
    into a relative --workdir (as the README's demo command uses)."""
    from vjepa_jax.data import synthetic
    config = smoke_config()
    csv = synthetic.write_dataset(str(tmp_path / "videos"), 12, num_frames=24, height=40,
                                  width=48, seed=3)
    config.data.update(source="csv", index=(csv,), frame_step=2)
    config.train.stop_after = 2
    monkeypatch.chdir(tmp_path)
    state = train.run(config, "run")
    rows = logger.read(str(tmp_path / "run"))
    assert sorted(os.listdir(tmp_path / "run" / "checkpoints")) == ["2"]
    assert int(state.step) == 2 and [r["step"] for r in rows] == [1, 2]
    assert all(np.isfinite(r["loss"]) and r["bad_videos"] == 0 for r in rows)


def test_online_eval_every_n_steps_is_logged_and_plotted(tmp_path, capsys):
    config = smoke_config()
    config.train.eval_every = 3
    config.online_eval.update(num_train=32, num_val=16, k=5, linear_steps=20)
    workdir = str(tmp_path / "run")
    train.run(config, workdir)
    # The online eval inside training draws no progress bars (the program's bars would).
    assert "features:" not in capsys.readouterr().err
    rows = logger.read(workdir)
    online = [r for r in rows if "online/knn_top1" in r]
    assert [r["step"] for r in online] == [3, 6]
    for r in online:
        for key in ("knn_top1", "linear_top1", "knn_top1_random_init", "linear_top1_random_init"):
            assert 0.0 <= r[f"online/{key}"] <= 100.0
    # Training rows carry the collapse monitors; the plot copes with the mixed rows.
    train_rows = [r for r in rows if "loss" in r]
    assert [r["step"] for r in train_rows] == [1, 2, 3, 4, 5, 6]
    assert all(1.0 <= r[k] <= 192 for r in train_rows  # tiny encoder width 192
               for k in ("target_rank", "context_rank"))
    assert os.path.getsize(os.path.join(workdir, "metrics.png")) > 10_000
    # The standalone program scores the finished run, with the section overridden from the
    # command line (every pretraining config has it).
    r = subprocess.run([sys.executable, "-m", "vjepa_jax.online_eval", "--config", SMOKE,
                        "--workdir", workdir, "--config.online_eval.num_train=32",
                        "--config.online_eval.num_val=16", "--config.online_eval.k=5",
                        "--config.online_eval.linear_steps=20"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    # Progress bars on stderr, one human line per readout on stdout, the JSON in a file.
    assert "pretrained: 32 train features" in r.stderr and "random init: readouts" in r.stderr
    path = os.path.join(workdir, "online_eval.json")
    assert r.stdout.rstrip().endswith(f"wrote {path}")
    with open(path) as f:
        printed = json.load(f)
    assert printed["encoder"].endswith("step 6 (target)")
    assert printed["knn_top1"] == pytest.approx(online[-1]["online/knn_top1"])
    assert (f"  k-NN on mean-pooled tokens: {printed['knn_top1']:.1f} % vs "
            f"{printed['knn_top1_random_init']:.1f} % random init") in r.stdout
