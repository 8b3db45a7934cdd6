"""Multi-process start-up: jax.distributed.initialize under a cluster or with explicit flags.

One process per host (TPU pods, one process per GPU node) or one per GPU (SLURM tasks). JAX
finds the coordinator itself under SLURM (inside `srun`), Open MPI (`mpirun`), TPU pods and GKE;
elsewhere pass --coordinator_address, --num_processes and --process_id (launch/README.md).
`initialize_from_flags` must run before anything touches a device: JAX refuses to join a
cluster once its backend is up.
"""
import os
import sys

import jax
from absl import flags

FLAGS = flags.FLAGS


def define_flags():
    """Register the multi-process flags on the program's absl flags."""
    flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (multi-process runs).")
    flags.DEFINE_integer("num_processes", None, "Total number of processes.")
    flags.DEFINE_integer("process_id", None, "This process's index, 0..num_processes-1.")
    flags.DEFINE_list("local_device_ids", None,
                      "GPUs this process drives, e.g. 0,1,2,3,4,5,6,7 for one process per node "
                      "(under SLURM JAX otherwise gives each process only GPU $SLURM_LOCALID).")
    flags.DEFINE_bool("distributed", None,
                      "Force (--distributed) or forbid (--nodistributed) jax.distributed.initialize; "
                      "default: only when flags or the environment describe several processes. "
                      "Cloud TPU pod VMs cannot be told apart from one VM without asking the "
                      "metadata server, so launch/tpu_pod.sh passes --distributed.")


def under_cluster(environ=None):
    """True when a cluster manager that jax.distributed reads started several processes."""
    env = os.environ if environ is None else environ

    def count(name):
        try:
            return int(env.get(name, "1"))
        except ValueError:
            return 1

    if env.get("JAX_COORDINATOR_ADDRESS"):
        return True
    # SLURM: only inside an `srun` step (SLURM_STEP_NODELIST); a bare sbatch script is one process.
    if "SLURM_STEP_NODELIST" in env and "SLURM_PROCID" in env and count("SLURM_NTASKS") > 1:
        return True
    if count("OMPI_COMM_WORLD_SIZE") > 1:
        return True
    hosts = env.get("TPU_PROCESS_ADDRESSES") or env.get("TPU_WORKER_HOSTNAMES") or ""
    return "," in hosts


def initialize_args(coordinator_address=None, num_processes=None, process_id=None,
                    local_device_ids=None, distributed=None, environ=None):
    """Keyword arguments for jax.distributed.initialize, or None for a single-process run.

    Raises ValueError naming the flag when the explicit flags are incomplete or inconsistent.
    """
    explicit = {"--coordinator_address": coordinator_address, "--num_processes": num_processes,
                "--process_id": process_id}
    given = [k for k, v in explicit.items() if v is not None]
    if distributed is False:
        if given:
            raise ValueError(f"--nodistributed contradicts {', '.join(given)}")
        return None
    cluster = distributed or under_cluster(environ)
    if given and not cluster and len(given) < 3:
        missing = [k for k in explicit if k not in given]
        raise ValueError(f"a multi-process run given {', '.join(given)} also needs "
                         f"{', '.join(missing)} (or a cluster launcher such as srun)")
    if not given and not cluster:
        return None
    if num_processes is not None and num_processes < 1:
        raise ValueError(f"--num_processes={num_processes}: expected a positive integer")
    if process_id is not None and (process_id < 0 or (num_processes and process_id >= num_processes)):
        raise ValueError(f"--process_id={process_id}: expected 0 <= process_id < "
                         f"--num_processes={num_processes}")
    local = None
    if local_device_ids:
        try:
            local = [int(i) for i in local_device_ids]
        except ValueError as e:
            raise ValueError(f"--local_device_ids={','.join(map(str, local_device_ids))}: "
                             "expected comma-separated integers") from e
    return {"coordinator_address": coordinator_address, "num_processes": num_processes,
            "process_id": process_id, "local_device_ids": local}


def initialize_from_flags():
    """Call jax.distributed.initialize when flags or the environment describe several processes.

    Exits with a one-line message (no traceback) when the multi-process flags are inconsistent.
    """
    try:
        args = initialize_args(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id,
                               FLAGS.local_device_ids, FLAGS.distributed)
    except ValueError as e:
        sys.exit(f"{os.path.basename(sys.argv[0])}: error: {e}")
    if args is not None:
        jax.distributed.initialize(**args)


def barrier(name, timeout_s=1800):
    """Wait until every process reaches `name` (no-op for one process).

    Uses the coordination service that jax.distributed started, not a device collective, so the
    wait may be long (a slow compile on another host); CPU collectives give up after ~30 s.
    """
    if jax.process_count() > 1:
        import orbax.checkpoint as ocp

        ocp.multihost.get_barrier_sync_fn()(key=name, timeout_ms=int(timeout_s * 1000))


def any_process(flag):
    """True on every process when `flag` is true on any (a collective: all must call it)."""
    if jax.process_count() == 1:
        return bool(flag)
    import numpy as np
    from jax.experimental import multihost_utils

    return bool(np.any(multihost_utils.process_allgather(np.asarray(bool(flag)))))
