"""Multi-process training: 2 processes x 4 CPU devices joined by jax.distributed train exactly
like 1 process with 8 devices; start-up flags and cluster detection."""
import os
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from common import ROOT, smoke_config
from vjepa_jax import checkpoint, distributed, logger, methods, sharding, train_state

SMOKE = "configs/pretrain/demo.py:smoke"
# 3 of the 6 smoke steps (a checkpoint at step 3) and one encoder block: three runs on 2 cores.
OVERRIDES = ["--config.train.stop_after=3", "--config.model.depth=1"]
# Test-only: no LLVM optimisation roughly halves compile time; results agree to float rounding.
FAST_XLA = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"


def free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def start(log_path, workdir, devices, *flags):
    """`python -m vjepa_jax.train` on `devices` CPU devices, output to log_path."""
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               XLA_FLAGS=f"--xla_force_host_platform_device_count={devices} {FAST_XLA}")
    # The shared persistent cache stays on: one process may load the step while the other
    # compiles it, which train.compile_step's barrier must absorb (gloo alone waits ~30 s).
    log = open(log_path, "w")
    return subprocess.Popen([sys.executable, "-m", "vjepa_jax.train", "--config", SMOKE,
                             "--workdir", workdir, *OVERRIDES, *flags],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT), log


def wait_all(runs, timeout):
    """Wait for every process; on a failure or timeout kill the rest and fail with the logs."""
    deadline = time.time() + timeout
    pending = dict(runs)
    while pending:
        for name, (proc, log) in list(pending.items()):
            code = proc.poll()
            if code is None:
                continue
            log.close()
            del pending[name]
            if code != 0:
                failed = name
                break
        else:
            if time.time() < deadline:
                time.sleep(0.5)
                continue
            failed = "timeout"
        for proc, log in pending.values():
            proc.kill()
            proc.wait()
            log.close()
        logs = {n: open(log.name).read()[-3000:] for n, (_, log) in runs.items()}
        pytest.fail(f"{failed} failed:\n" + "\n".join(f"--- {n}\n{t}" for n, t in logs.items()))


def restored_params(workdir, step):
    """Params of checkpoint `step` in workdir, restored onto one device of this process."""
    config = smoke_config()
    config.model.depth = 1
    config.mesh.update(data=1, fsdp=1)
    mesh = sharding.make_mesh(config.mesh)
    model = methods.get(config.method).build(config)
    abstract, shardings, _ = train_state.create(model.init, config.optim, mesh, jax.random.key(0))
    mngr = checkpoint.manager(workdir, keep=1, read_only=True)
    state = checkpoint.restore(mngr, step, abstract, shardings)
    mngr.close()
    return jax.device_get(state.params)


@pytest.mark.slow
def test_two_processes_reproduce_one_process_with_8_devices(tmp_path):
    multi, single = str(tmp_path / "multi"), str(tmp_path / "single")
    coordinator = ["--coordinator_address", f"localhost:{free_port()}", "--num_processes", "2"]
    # The pair runs alone, so that neither process falls behind the other while compiling.
    wait_all({f"process {i}": start(tmp_path / f"log{i}.txt", multi, 4, *coordinator,
                                    "--process_id", str(i)) for i in range(2)}, timeout=400)
    wait_all({"single process": start(tmp_path / "single.txt", single, 8)}, timeout=300)

    assert "2 processes, 8 devices" in (tmp_path / "log0.txt").read_text()
    got = {r["step"]: r["loss"] for r in logger.read(multi)}
    want = {r["step"]: r["loss"] for r in logger.read(single)}
    # Only process 0 writes metrics: one record per step, not two.
    assert len(logger.read(multi)) == 3 and sorted(got) == sorted(want) == [1, 2, 3]
    # Each process fed its own 4 rows of every global batch: the same batches, masks and losses.
    np.testing.assert_allclose([got[s] for s in (1, 2, 3)], [want[s] for s in (1, 2, 3)],
                               rtol=1e-5)

    # Both processes wrote their shards of one checkpoint; it restores onto a single device.
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5),
                 restored_params(multi, 3), restored_params(single, 3))


def damage_largest_state_file(workdir, step):
    """4 KiB of random bytes in the middle of the largest OCDBT data file of either process."""
    state = os.path.join(workdir, "checkpoints", str(step), "state")
    files = [os.path.join(d, f) for d, _, names in os.walk(state) for f in names
             if os.path.basename(d) == "d"]  # ocdbt.process_<i>/d/<data file>
    path = max(files, key=os.path.getsize)
    with open(path, "r+b") as f:
        f.seek(os.path.getsize(path) // 2)
        f.write(np.random.default_rng(0).bytes(4096))
    return path


@pytest.mark.slow
def test_two_processes_fall_back_together_from_a_damaged_latest_checkpoint(tmp_path):
    """2 processes train steps 1-6 (checkpoints 3 and 6); bytes of checkpoint 6 are damaged;
    the same 2-process command then finds the damage on both processes, moves 6 aside once
    (one 6.corrupt, process 0 renames it between two barriers), resumes both from 3 and
    re-trains 4-6 to the first run's losses."""
    workdir = str(tmp_path / "run")

    def pair(name):
        coordinator = ["--coordinator_address", f"localhost:{free_port()}", "--num_processes", "2",
                       "--config.train.stop_after=6"]
        logs = [tmp_path / f"{name}{i}.txt" for i in range(2)]
        wait_all({f"{name} process {i}": start(logs[i], workdir, 4, *coordinator,
                                               "--process_id", str(i)) for i in range(2)},
                 timeout=400)
        return [log.read_text() for log in logs]

    pair("first")
    first = {r["step"]: r["loss"] for r in logger.read(workdir)}
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["3", "6"]
    damaged = os.path.basename(damage_largest_state_file(workdir, 6))

    logs = pair("second")
    corrupt = os.path.join(workdir, "checkpoints", "6.corrupt")
    for i, log in enumerate(logs):
        moved = [l for l in log.splitlines() if "moved to" in l]
        assert len(moved) == 1, f"process {i}:\n{log[-3000:]}"
        assert "checkpoints/6: item 'state'" in moved[0] and damaged in moved[0], moved[0]
        assert f"moved to {corrupt}, falling back" in moved[0], moved[0]
        assert f"resumed from {workdir}/checkpoints/3" in log, f"process {i}:\n{log[-3000:]}"
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["3", "6", "6.corrupt"]
    again = {r["step"]: r["loss"] for r in logger.read(workdir)}
    assert sorted(again) == [1, 2, 3, 4, 5, 6]
    np.testing.assert_allclose([again[s] for s in (4, 5, 6)], [first[s] for s in (4, 5, 6)],
                               rtol=1e-5)


def test_importing_the_programs_leaves_jax_uninitialised():
    # jax.distributed.initialize() refuses to run once the backend is up; a module-level
    # jnp constant in anything the programs import would break every multi-process launch.
    code = ("import vjepa_jax.train, vjepa_jax.eval, vjepa_jax.bench, jax; "
            f"jax.distributed.initialize('localhost:{free_port()}', num_processes=1, process_id=0); "
            "print(jax.process_count(), jax.device_count())")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       env=dict(os.environ, JAX_PLATFORMS="cpu"), timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split() == ["1", "8"]


SRUN_2 = {"SLURM_JOB_ID": "7", "SLURM_STEP_NODELIST": "node[01-02]", "SLURM_NTASKS": "2",
          "SLURM_PROCID": "1", "SLURM_LOCALID": "0"}


def test_initialize_args_from_flags_and_environment():
    args = distributed.initialize_args
    assert args(environ={}) is None  # a laptop: one process, no jax.distributed
    assert args("h:1234", 2, 1, ["0", "1"], environ={}) == {
        "coordinator_address": "h:1234", "num_processes": 2, "process_id": 1,
        "local_device_ids": [0, 1]}
    # Under srun with 2 tasks JAX reads everything from SLURM; a bare sbatch script is 1 process.
    assert args(environ=SRUN_2) == {"coordinator_address": None, "num_processes": None,
                                    "process_id": None, "local_device_ids": None}
    assert args(environ={k: v for k, v in SRUN_2.items() if k != "SLURM_STEP_NODELIST"}) is None
    assert args(environ={"SLURM_STEP_NODELIST": "n1", "SLURM_PROCID": "0", "SLURM_NTASKS": "1"}) is None
    assert args(environ={"OMPI_COMM_WORLD_SIZE": "4"}) is not None
    assert args(environ={"TPU_WORKER_HOSTNAMES": "w0,w1"}) is not None
    assert args(environ={"TPU_WORKER_HOSTNAMES": "w0"}) is None
    assert args(environ={"JAX_COORDINATOR_ADDRESS": "h:1"}) is not None
    assert args(distributed=True, environ={}) is not None  # a Cloud TPU pod VM (tpu_pod.sh)
    assert args(distributed=False, environ=SRUN_2) is None


@pytest.mark.parametrize("kwargs,message", [
    (dict(coordinator_address="h:1"), "also needs --num_processes, --process_id"),
    (dict(num_processes=2, process_id=0), "also needs --coordinator_address"),
    (dict(coordinator_address="h:1", num_processes=2, process_id=2), "--process_id=2"),
    (dict(coordinator_address="h:1", num_processes=0, process_id=0), "--num_processes=0"),
    (dict(coordinator_address="h:1", num_processes=2, process_id=0, local_device_ids=["x"]),
     "--local_device_ids=x"),
    (dict(coordinator_address="h:1", distributed=False), "--nodistributed contradicts"),
])
def test_bad_multiprocess_flags_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        distributed.initialize_args(environ={}, **kwargs)
