#!/usr/bin/env bash
# N processes of one program on this machine, joined by jax.distributed (coordinator on localhost).
#
#   launch/local_multiprocess.sh N [program flags...]
#
#   # 2 processes x 4 fake CPU devices: the multi-host code path on a laptop
#   CPU_DEVICES=4 launch/local_multiprocess.sh 2 \
#       --config configs/pretrain/demo.py:smoke --workdir /tmp/vjepa_mp
#   # 2 processes x 4 GPUs of an 8-GPU machine
#   GPUS_PER_PROCESS=4 launch/local_multiprocess.sh 2 --config configs/pretrain/vitl16.py ...
#
# Environment:
#   PROGRAM           python module to run (default vjepa_jax.train; vjepa_jax.eval works too)
#   CPU_DEVICES       run on CPU, each process with this many (fake) devices
#   GPUS_PER_PROCESS  each process drives its own GPUs through --local_device_ids
#                     (default when nvidia-smi is present: all GPUs split evenly)
#   PORT              coordinator port (default: a free one)
#   LOGDIR            where processes 1..N-1 write process_<i>.log (default: current directory)
# Process 0 prints to this terminal. Ctrl-C or a failing process stops all of them.
set -euo pipefail

N=${1:?usage: launch/local_multiprocess.sh N [program flags...]}
shift
PROGRAM=${PROGRAM:-vjepa_jax.train}
LOGDIR=${LOGDIR:-.}
PORT=${PORT:-$(python -c 'import socket; s = socket.socket(); s.bind(("localhost", 0)); print(s.getsockname()[1])')}
# Importable without `pip install -e .`; relative paths in the flags keep meaning the cwd.
export PYTHONPATH="$(cd "$(dirname "$0")/.." && pwd)${PYTHONPATH:+:$PYTHONPATH}"

if [[ -z "${CPU_DEVICES:-}" && -z "${GPUS_PER_PROCESS:-}" ]] && command -v nvidia-smi >/dev/null; then
  GPUS=$(nvidia-smi -L | wc -l)
  if (( GPUS % N )); then
    echo "local_multiprocess.sh: $GPUS GPUs cannot be split over $N processes; set GPUS_PER_PROCESS" >&2
    exit 2
  fi
  GPUS_PER_PROCESS=$(( GPUS / N ))
fi
if [[ -n "${CPU_DEVICES:-}" ]]; then
  export JAX_PLATFORMS=cpu
  export XLA_FLAGS="${XLA_FLAGS:-} --xla_force_host_platform_device_count=$CPU_DEVICES"
fi
mkdir -p "$LOGDIR"

pids=()
stop_all() { for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done; }
trap 'stop_all; wait; exit 130' INT TERM

for (( i = 0; i < N; i++ )); do
  args=(--coordinator_address "localhost:$PORT" --num_processes "$N" --process_id "$i")
  if [[ -n "${GPUS_PER_PROCESS:-}" ]]; then
    first=$(( i * GPUS_PER_PROCESS ))
    ids=$(seq -s, "$first" $(( first + GPUS_PER_PROCESS - 1 )))
    args+=(--local_device_ids "$ids")
  fi
  if (( i == 0 )); then
    python -m "$PROGRAM" "${args[@]}" "$@" &
  else
    python -m "$PROGRAM" "${args[@]}" "$@" > "$LOGDIR/process_$i.log" 2>&1 &
  fi
  pids+=($!)
done

# The first process to fail stops the others (they would wait for it at the next collective).
status=0
for (( left = N; left > 0; left-- )); do
  if ! wait -n && (( status == 0 )); then
    status=1
    echo "local_multiprocess.sh: a process failed; stopping the others (logs in $LOGDIR)" >&2
    stop_all
  fi
done
exit $status
