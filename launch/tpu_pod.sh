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
# `train` starts the program detached (nohup) on all workers, so closing this terminal does not
# stop it; each worker writes ~/vjepa_jax/train_<worker hostname>.log. It passes --distributed:
# on a TPU VM, jax.distributed.initialize() learns the pod's layout from the metadata server.
# The workdir and the data must be visible at the same path on every worker (a gcsfuse-mounted
# bucket, Filestore or NFS): every host writes its shards of each checkpoint there.
# Running `train` again after a pre-emption resumes from the last checkpoint in the workdir.
set -euo pipefail

: "${TPU_NAME:?set TPU_NAME}" "${ZONE:?set ZONE}"
REMOTE_DIR=${REMOTE_DIR:-vjepa_jax}   # relative to the home directory on each worker
PROGRAM=${PROGRAM:-vjepa_jax.train}
GCLOUD=(gcloud compute tpus tpu-vm)
TARGET=(--zone "$ZONE" ${PROJECT:+--project "$PROJECT"})

on_all_workers() {
  "${GCLOUD[@]}" ssh "$TPU_NAME" "${TARGET[@]}" --worker=all --command "$1"
}

cmd=${1:-}
shift || true
case "$cmd" in
  copy)
    on_all_workers "mkdir -p ~/$REMOTE_DIR"
    "${GCLOUD[@]}" scp --recurse --worker=all "${TARGET[@]}" \
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
    args=$(printf ' %q' --config "$config" "$@")
    on_all_workers "cd ~/$REMOTE_DIR && nohup python3 -m $PROGRAM --distributed$args \
      > train_\$(hostname).log 2>&1 < /dev/null & echo \$! > train.pid"
    echo "started on all workers of $TPU_NAME; follow with: launch/tpu_pod.sh logs"
    ;;
  stop)
    # SIGTERM (not SIGKILL) to the process `train` started: it saves a checkpoint, then exits.
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
