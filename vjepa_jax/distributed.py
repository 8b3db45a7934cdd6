"""Multi-process start-up: jax.distributed.initialize under a cluster or with explicit flags.

One process per host (TPU pods, one process per GPU node) or one per GPU (SLURM tasks). On a
TPU pod or under SLURM with more than one task JAX finds the coordinator itself; elsewhere pass
--coordinator_address, --num_processes and --process_id (see launch/README.md).
"""
import os

import jax
from absl import flags

FLAGS = flags.FLAGS


def define_flags():
    """Register the multi-process flags on the program's absl flags."""
    flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (multi-process runs).")
    flags.DEFINE_integer("num_processes", None, "Total number of processes.")
    flags.DEFINE_integer("process_id", None, "This process's index, 0..num_processes-1.")
    flags.DEFINE_list("local_device_ids", None, "GPUs this process drives (one process per node).")


def under_cluster():
    """True when launched by a cluster manager that jax.distributed can read (SLURM, TPU pod)."""
    if int(os.environ.get("SLURM_NTASKS", "1")) > 1:
        return True
    hosts = os.environ.get("TPU_WORKER_HOSTNAMES", "")
    return "," in hosts


def initialize_from_flags():
    """Call jax.distributed.initialize when flags or the environment describe several processes."""
    explicit = FLAGS.coordinator_address is not None
    if not explicit and not under_cluster():
        return
    local = [int(i) for i in FLAGS.local_device_ids] if FLAGS.local_device_ids else None
    jax.distributed.initialize(coordinator_address=FLAGS.coordinator_address,
                               num_processes=FLAGS.num_processes, process_id=FLAGS.process_id,
                               local_device_ids=local)
