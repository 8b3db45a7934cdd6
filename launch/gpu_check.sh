#!/usr/bin/env bash
# First checks on a GPU host: the GPU-only tests (cuDNN attention against the XLA path) and the
# ViT-L train-step benchmark of docs/PERFORMANCE.md, with its results saved as JSON.
#
#   launch/gpu_check.sh [OUTDIR]        # default: gpu_check/
#
# Environment: BENCH_STEPS (timed steps, default 20), BENCH_BATCH (global batch, default 24),
# PEAK_TFLOPS (per device, default 989 = H100/H200 dense bf16). Compiling the ViT-L step takes
# minutes (unfinished after about 2 on an H200 with jax 0.11); the bench logs when it starts and
# ends.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-gpu_check}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

if ! python -c "import jax, sys; sys.exit(jax.default_backend() != 'gpu')" 2>/dev/null; then
    echo "launch/gpu_check.sh: JAX sees no GPU here (install jax with its CUDA extra)" >&2
    exit 1
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"
python -c "import jax, flax; print('jax', jax.__version__, 'flax', flax.__version__, jax.devices())" \
    | tee -a "$OUT/gpu.txt"

echo "== GPU-only tests"
JAX_PLATFORMS=cuda python -m pytest -q -p no:cacheprovider tests/test_models.py -k cudnn \
    | tee "$OUT/tests.txt"

echo "== ViT-L/16 train step, batch ${BENCH_BATCH:-24}, cuDNN attention"
python -m vjepa_jax.bench --config configs/pretrain/vitl16.py \
    --config.data.batch_size="${BENCH_BATCH:-24}" --config.model.attention=cudnn \
    --steps "${BENCH_STEPS:-20}" --peak_tflops "${PEAK_TFLOPS:-989}" \
    --json "$OUT/bench_vitl16.json"
echo "results in $OUT/ (add them to docs/PERFORMANCE.md with the date and the command)"
