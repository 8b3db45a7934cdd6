"""launch/tpu_pod.sh without a TPU: its worker loop and its `train` command run against a fake
python (exits with chosen statuses, records its arguments) and a fake gcloud (runs the remote
command here), so the restart-on-75 logic and the quoting are tested as shell, in seconds."""
import os
import signal
import subprocess
import time

import pytest

from common import ROOT

SCRIPT = os.path.join(ROOT, "launch", "tpu_pod.sh")

# Exits with the next status of $FAKE_STATUSES (one per run, the last repeated) and appends
# its arguments, one per line, and a separator to $FAKE_CALLS. With FAKE_WAIT_FOR_TERM it
# instead waits for SIGTERM and exits 75, as the train program does after saving.
FAKE_PYTHON = r"""#!/usr/bin/env bash
n=$(grep -c '^--- end' "$FAKE_CALLS" 2>/dev/null || true)
n=${n:-0}
printf '%s\n' "$@" '--- end' >> "$FAKE_CALLS"
if [[ -n ${FAKE_WAIT_FOR_TERM:-} ]]; then
  trap 'exit 75' TERM
  touch "$FAKE_CALLS.running"
  while true; do sleep 0.1; done
fi
read -r -a statuses <<< "$FAKE_STATUSES"
i=$(( n < ${#statuses[@]} ? n : ${#statuses[@]} - 1 ))
exit "${statuses[$i]}"
"""

# gcloud compute tpus tpu-vm ssh NAME ... --command CMD: log the call, run CMD here.
FAKE_GCLOUD = r"""#!/usr/bin/env bash
printf '%s\n' "$*" >> "$GCLOUD_LOG"
while [[ $# -gt 0 ]]; do
  if [[ $1 == --command ]]; then exec bash -c "$2"; fi
  shift
done
"""


@pytest.fixture
def fakes(tmp_path):
    for name, text in (("python", FAKE_PYTHON), ("gcloud", FAKE_GCLOUD)):
        path = tmp_path / name
        path.write_text(text)
        path.chmod(0o755)
    env = dict(os.environ, PYTHON=str(tmp_path / "python"), GCLOUD=str(tmp_path / "gcloud"),
               FAKE_CALLS=str(tmp_path / "calls"), GCLOUD_LOG=str(tmp_path / "gcloud.log"))
    env.pop("MAX_RESTARTS", None)
    return tmp_path, env


def calls(tmp_path):
    """The argument lists of the fake python's runs."""
    if not (tmp_path / "calls").exists():
        return []
    runs = (tmp_path / "calls").read_text().split("--- end\n")
    return [r.splitlines() for r in runs[:-1]]


def worker(env, *args, **extra):
    return subprocess.run(["bash", SCRIPT, "worker", *args], env=dict(env, **extra),
                          capture_output=True, text=True, timeout=60)


def test_worker_restarts_on_75_and_keeps_the_arguments(fakes):
    tmp_path, env = fakes
    r = worker(env, "--config", "configs/pretrain/demo.py:smoke", "--config.data.index=a b.csv",
               FAKE_STATUSES="75 75 0")
    assert r.returncode == 0, r.stderr
    assert calls(tmp_path) == [["-m", "vjepa_jax.train", "--config",
                                "configs/pretrain/demo.py:smoke",
                                "--config.data.index=a b.csv"]] * 3
    assert "restart 1 of 3" in r.stderr and "restart 2 of 3" in r.stderr
    assert "exited with status 0" in r.stderr


def test_worker_restarts_are_bounded(fakes):
    tmp_path, env = fakes
    r = worker(env, FAKE_STATUSES="75", MAX_RESTARTS="2", PROGRAM="vjepa_jax.eval")
    assert r.returncode == 75, r.stderr
    assert len(calls(tmp_path)) == 3 and calls(tmp_path)[0][:2] == ["-m", "vjepa_jax.eval"]
    assert "all MAX_RESTARTS=2 restarts used" in r.stderr


@pytest.mark.parametrize("status", [1, 137])
def test_worker_does_not_restart_after_an_error_or_a_kill(fakes, status):
    tmp_path, env = fakes
    r = worker(env, FAKE_STATUSES=str(status))
    assert r.returncode == status and len(calls(tmp_path)) == 1, r.stderr


def test_sigterm_to_the_worker_stops_the_program_without_a_restart(fakes):
    """`stop` (SIGTERM to the worker loop): the program gets SIGTERM, saves and exits 75, and the
    loop ends with 75 instead of starting it again."""
    tmp_path, env = fakes
    proc = subprocess.Popen(["bash", SCRIPT, "worker", "--config", "c.py"],
                            env=dict(env, FAKE_WAIT_FOR_TERM="1"), stderr=subprocess.PIPE,
                            text=True)
    deadline = time.time() + 30
    while not (tmp_path / "calls.running").exists():
        assert time.time() < deadline and proc.poll() is None, "the fake program did not start"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 75, stderr
    assert len(calls(tmp_path)) == 1 and "stopped (status 75, checkpoint saved)" in stderr


def test_train_runs_the_worker_loop_on_all_workers(fakes):
    """`train` through a fake gcloud whose `ssh --command` runs here, in a fake home holding the
    copied checkout: the detached worker runs the program with --distributed and the flags
    quoted intact, restarts it after 75, logs to train_<hostname>.log and records its pid."""
    tmp_path, env = fakes
    home = tmp_path / "home"
    (home / "vjepa_jax").mkdir(parents=True)
    os.symlink(os.path.join(ROOT, "launch"), home / "vjepa_jax" / "launch")
    env.update(HOME=str(home), TPU_NAME="pod", ZONE="zone-a", PROJECT="proj",
               FAKE_STATUSES="75 0")
    r = subprocess.run(["bash", SCRIPT, "train", "configs/pretrain/vitl16.py", "--workdir",
                        "/mnt/shared/run one", "--config.data.index=/mnt/k710.csv"],
                       env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "started on all workers of pod" in r.stdout
    ssh = (tmp_path / "gcloud.log").read_text()
    assert ssh.startswith("compute tpus tpu-vm ssh pod --zone zone-a --project proj --worker=all")
    pid = int((home / "vjepa_jax" / "train.pid").read_text())
    deadline = time.time() + 30
    while os.path.exists(f"/proc/{pid}") and open(f"/proc/{pid}/stat").read().split()[2] != "Z":
        assert time.time() < deadline, "the detached worker did not finish"
        time.sleep(0.05)
    assert calls(tmp_path) == [["-m", "vjepa_jax.train", "--distributed", "--config",
                                "configs/pretrain/vitl16.py", "--workdir", "/mnt/shared/run one",
                                "--config.data.index=/mnt/k710.csv"]] * 2
    log = (home / "vjepa_jax" / f"train_{os.uname().nodename}.log").read_text()
    assert "restart 1 of 3" in log and "exited with status 0" in log, log


def test_commands_that_reach_the_pod_need_its_name(fakes):
    _, env = fakes
    env.pop("TPU_NAME", None)
    r = subprocess.run(["bash", SCRIPT, "logs"], env=dict(env, ZONE="z"), capture_output=True,
                       text=True, timeout=30)
    assert r.returncode != 0 and "set TPU_NAME" in r.stderr
