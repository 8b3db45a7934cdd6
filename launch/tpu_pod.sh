#!/usr/bin/env bash
# V-JEPA on a Cloud TPU VM pod slice: the same command on every worker (one process per host).
#
#   export TPU_NAME=my-v5p-64 ZONE=us-east5-a            # and PROJECT=... if not the default
#   launch/tpu_pod.sh copy                                # this checkout -> ~/vjepa_jax on all workers
#   launch/tpu_pod.sh setup                               # pip install jax[tpu] + requirements
#   launch/tpu_pod.sh train configs/pretrain/vitl16.py --workdir /mnt/shared/vitl16 \
#       --config.data.index=/mnt/shared/k710.csv
#   launch/tpu_pod.sh stop                                # SIGTERM: save a checkpoint and exit
#   launch/tpu_pod.sh logs                                # last TAIL_LINES (5) of each worker's log
#
# `train` starts `launch/tpu_pod.sh worker` detached (nohup) on all workers, so closing this
# terminal does not stop it; each worker writes ~/vjepa_jax/train_<worker hostname>.log. The
# worker runs the program with --distributed (on a TPU VM, jax.distributed.initialize() learns
# the pod's layout from the metadata server) and runs it again, up to MAX_RESTARTS times
# (default 3), when it exits 75: pre-empted (SIGTERM), checkpoint saved, resume me. Any other
# status ends the worker; `stop` ends it too (the worker passes SIGTERM on and does not
# restart). When the VMs themselves are pre-empted or deleted the workers go with them: create
# the slice again (or let a queued resource do it) and run `train` again; it resumes from the
# last checkpoint in the workdir.
# The workdir and the data must be visible at the same path on every worker (a gcsfuse-mounted
# bucket, Filestore or NFS): every host writes its shards of each checkpoint there.
#
# Environment: TPU_NAME, ZONE (required), PROJECT, REMOTE_DIR (default vjepa_jax, relative to
# each worker's home), PROGRAM (default vjepa_jax.train), MAX_RESTARTS (default 3), TAIL_LINES;
# for tests: GCLOUD (the gcloud command), PYTHON (the worker's python, default python3).
set -euo pipefail

REMOTE_DIR=${REMOTE_DIR:-vjepa_jax}   # relative to the home directory on each worker
PROGRAM=${PROGRAM:-vjepa_jax.train}
MAX_RESTARTS=${MAX_RESTARTS:-3}
EXIT_PREEMPTED=75                     # vjepa_jax.cli.EXIT_PREEMPTED

on_all_workers() {
  : "${TPU_NAME:?set TPU_NAME}" "${ZONE:?set ZONE}"
  "${GCLOUD:-gcloud}" compute tpus tpu-vm ssh "$TPU_NAME" --zone "$ZONE" \
    ${PROJECT:+--project "$PROJECT"} --worker=all --command "$1"
}

# On one worker: run the program, again after each exit 75, at most MAX_RESTARTS more times.
# SIGTERM to this loop (`stop`, or the VM shutting down) is passed to the program, which saves
# and exits 75, and the loop then ends instead of restarting.
run_worker() {
  local restarts=0 rc
  child="" stopping=0
  trap 'stopping=1; if [[ -n $child ]]; then kill -TERM "$child" 2>/dev/null || true; fi' TERM
  while [[ $stopping -eq 0 ]]; do
    "${PYTHON:-python3}" -m "$PROGRAM" "$@" &
    child=$!
    rc=0
    wait "$child" || rc=$?
    # A trapped SIGTERM interrupts `wait`: wait again for the program's own status.
    while kill -0 "$child" 2>/dev/null; do
      rc=0
      wait "$child" || rc=$?
    done
    child=""
    if [[ $rc -ne $EXIT_PREEMPTED ]]; then
      echo "tpu_pod.sh worker: $PROGRAM exited with status $rc" >&2
      return "$rc"
    fi
    if [[ $stopping -eq 1 ]]; then
      echo "tpu_pod.sh worker: stopped (status 75, checkpoint saved); run train again to resume" >&2
      return "$rc"
    fi
    if (( restarts >= MAX_RESTARTS )); then
      echo "tpu_pod.sh worker: status 75 (pre-empted, checkpoint saved) and all" \
           "MAX_RESTARTS=$MAX_RESTARTS restarts used; run train again to resume" >&2
      return "$rc"
    fi
    restarts=$((restarts + 1))
    echo "tpu_pod.sh worker: status 75 (pre-empted, checkpoint saved): restart $restarts of" \
         "$MAX_RESTARTS, resuming from the checkpoint" >&2
  done
  return "$EXIT_PREEMPTED"  # stopped between two runs
}

cmd=${1:-}
shift || true
case "$cmd" in
  copy)
    : "${TPU_NAME:?set TPU_NAME}" "${ZONE:?set ZONE}"
    on_all_workers "mkdir -p ~/$REMOTE_DIR"
    "${GCLOUD:-gcloud}" compute tpus tpu-vm scp --recurse --worker=all --zone "$ZONE" \
      ${PROJECT:+--project "$PROJECT"} \
      "$(dirname "$0")/../vjepa_jax" "$(dirname "$0")/../configs" "$(dirname "$0")/../launch" \
      "$(dirname "$0")/../requirements.txt" "$TPU_NAME:~/$REMOTE_DIR/"
    ;;
  setup)
    on_all_workers "cd ~/$REMOTE_DIR && python3 -m pip install -q 'jax[tpu]' -r requirements.txt"
    ;;
  train)
    config=${1:?usage: launch/tpu_pod.sh train CONFIG [flags...]}
    shift
    # Quote every argument for the remote shell.
    args=$(printf ' %q' --distributed --config "$config" "$@")
    env=$(printf ' %q' "PROGRAM=$PROGRAM" "MAX_RESTARTS=$MAX_RESTARTS" ${PYTHON:+"PYTHON=$PYTHON"})
    on_all_workers "cd ~/$REMOTE_DIR && nohup env$env bash launch/tpu_pod.sh worker$args \
      > train_\$(hostname).log 2>&1 < /dev/null & echo \$! > ~/$REMOTE_DIR/train.pid"
    echo "started on all workers of $TPU_NAME; follow with: launch/tpu_pod.sh logs"
    ;;
  worker)
    run_worker "$@"
    ;;
  stop)
    # SIGTERM (not SIGKILL) to the worker loop `train` started: the program saves a checkpoint
    # and exits, and the loop does not restart it.
    on_all_workers "cd ~/$REMOTE_DIR && if [ -f train.pid ]; then kill -TERM \$(cat train.pid) || true; rm -f train.pid; fi"
    ;;
  logs)
    on_all_workers "tail -n ${TAIL_LINES:-5} ~/$REMOTE_DIR/train_\$(hostname).log"
    ;;
  *)
    echo "usage: launch/tpu_pod.sh copy|setup|train CONFIG [flags...]|stop|logs" >&2
    exit 2
    ;;
esac
