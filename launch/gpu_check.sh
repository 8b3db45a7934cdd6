#!/usr/bin/env bash
# First checks on a GPU host, in one call (issue 22, Part 2): install what a bare host lacks,
# run the GPU-only tests, then bench the train step of ViT-L (plain, then the options), ViT-H and
# V-JEPA 2 ViT-L, each JSON into OUTDIR and one markdown table of them all (OUTDIR/bench.md).
#
#   launch/gpu_check.sh [OUTDIR]             # default: gpu_check/
#   DRY_RUN=1 launch/gpu_check.sh OUTDIR     # the same steps on the CPU with tiny configs
#
# Environment: WHEELS (a folder of wheels to install from, offline, when grain / ml_collections /
# av are missing), BENCH_STEPS (timed steps, default 10), BENCH_BATCH (global batch, default 24),
# PEAK_TFLOPS (per device, default 989 = H100/H200 dense bf16), BENCH_TIMEOUT (seconds per
# bench, default 150: a bench that does not compile in time is recorded as such and the script
# goes on), BENCHES (space-separated names, in order; default: vitl16_scan vitl16 vjepa2_vitl
# vith16 vitl16_bf16 vitl16_fused vitl16_remat_dots vitl16_xla_flags, the most wanted first;
# vitl16_xla_flags adds GPU_XLA_FLAGS, default the latency-hiding scheduler and cuBLAS instead
# of Triton GEMMs, to XLA_FLAGS), TOTAL_BUDGET
# (seconds for the whole script, default 540: a bench that could not finish inside what is left
# is skipped and recorded as skipped), so one call stays under 10 minutes of GPU time.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-gpu_check}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
DRY=${DRY_RUN:-0}
PY=${PYTHON:-python}

# ------------------------------------------------------------------ what the host lacks
missing=$($PY - <<'EOF'
import importlib.util
print(" ".join(p for m, p in (("grain", "grain"), ("ml_collections", "ml_collections"),
                               ("av", "av"), ("optax", "optax"), ("orbax.checkpoint", "orbax-checkpoint"))
               if importlib.util.find_spec(m.split(".")[0]) is None))
EOF
)
if [[ -n "$missing" ]]; then
    if [[ -z "${WHEELS:-}" ]]; then
        echo "launch/gpu_check.sh: missing $missing and no WHEELS folder to install them from" >&2
        exit 1
    fi
    echo "== installing $missing from $WHEELS"
    $PY -m pip install -q --no-index --find-links "$WHEELS" $missing || exit 1
fi

if [[ "$DRY" == 1 ]]; then
    export JAX_PLATFORMS=cpu
    echo "dry run on $($PY -c 'import jax; print(jax.devices()[0])')" | tee "$OUT/gpu.txt"
else
    if ! $PY -c "import jax, sys; sys.exit(jax.default_backend() != 'gpu')" 2>/dev/null; then
        echo "launch/gpu_check.sh: JAX sees no GPU here (install jax with its CUDA extra)" >&2
        exit 1
    fi
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"
fi
$PY -c "import jax, flax; print('jax', jax.__version__, 'flax', flax.__version__, jax.devices())" \
    | tee -a "$OUT/gpu.txt"

# ------------------------------------------------------------------ GPU-only tests
echo "== GPU-only tests (cuDNN attention vs XLA, plain and with RoPE)"
if [[ "$DRY" == 1 ]]; then
    $PY -m pytest -q -p no:cacheprovider tests/test_models.py -k cudnn 2>&1 | tail -3 | tee "$OUT/tests.txt"
else
    JAX_PLATFORMS=cuda $PY -m pytest -q -p no:cacheprovider tests/test_models.py -k cudnn \
        2>&1 | tee "$OUT/tests.txt"
fi

# ------------------------------------------------------------------ benches
# name | config | overrides (the dry run swaps in tiny configs of the same methods)
if [[ "$DRY" == 1 ]]; then
    L=configs/pretrain/demo.py:smoke H=configs/pretrain/demo.py:smoke V2=configs/pretrain/vjepa2_demo.py:smoke
    BATCH=${BENCH_BATCH:-8}
else
    L=configs/pretrain/vitl16.py H=configs/pretrain/vith16.py V2=configs/pretrain/vjepa2_vitl_256px_16f.py
    BATCH=${BENCH_BATCH:-24}
fi
ATT=--config.model.attention=cudnn
[[ "$DRY" == 1 ]] && ATT=--config.model.attention=xla
declare -A CONFIG=([vitl16]=$L [vitl16_scan]=$L [vitl16_remat_dots]=$L [vitl16_bf16]=$L
                   [vitl16_fused]=$L [vitl16_xla_flags]=$L [vith16]=$H [vjepa2_vitl]=$V2)
declare -A EXTRA=([vitl16]="" [vitl16_scan]="--config.model.scan_blocks=True"
                  [vitl16_remat_dots]="--config.model.remat=dots"
                  [vitl16_bf16]="--config.model.residual_dtype=bfloat16"
                  [vitl16_fused]="--config.model.fuse_predictor=True"
                  [vitl16_xla_flags]=""
                  [vith16]="" [vjepa2_vitl]="")
GPU_XLA_FLAGS=${GPU_XLA_FLAGS:---xla_gpu_enable_latency_hiding_scheduler=true --xla_gpu_enable_triton_gemm=false}
for name in ${BENCHES:-vitl16_scan vitl16 vjepa2_vitl vith16 vitl16_bf16 vitl16_fused vitl16_remat_dots vitl16_xla_flags}; do
    if [[ -z "${CONFIG[$name]:-}" ]]; then
        echo "launch/gpu_check.sh: unknown bench $name (BENCHES)" >&2
        continue
    fi
    if (( SECONDS + ${BENCH_TIMEOUT:-150} > ${TOTAL_BUDGET:-540} )); then
        echo "== bench $name skipped: ${SECONDS} s used of TOTAL_BUDGET=${TOTAL_BUDGET:-540}"
        echo "{\"name\": \"$name\", \"failed\": \"skipped (TOTAL_BUDGET)\"}" > "$OUT/bench_$name.json"
        continue
    fi
    echo "== bench $name: ${CONFIG[$name]} ${EXTRA[$name]}, batch $BATCH"
    extra_flags=""
    [[ "$name" == vitl16_xla_flags ]] && extra_flags="$GPU_XLA_FLAGS"
    XLA_FLAGS="${XLA_FLAGS:-} $extra_flags" timeout "${BENCH_TIMEOUT:-150}" $PY -m vjepa_jax.bench --config "${CONFIG[$name]}" \
        --config.data.batch_size="$BATCH" --config.mesh.data=1 "$ATT" ${EXTRA[$name]} \
        --steps "${BENCH_STEPS:-10}" --peak_tflops "${PEAK_TFLOPS:-989}" \
        --json "$OUT/bench_$name.json" > "$OUT/bench_$name.log" 2>&1
    rc=$?
    tail -2 "$OUT/bench_$name.log"
    if [[ $rc -ne 0 ]]; then
        echo "{\"name\": \"$name\", \"failed\": \"exit $rc (124: over BENCH_TIMEOUT)\"}" > "$OUT/bench_$name.json"
    fi
done

# ------------------------------------------------------------------ one table
$PY - "$OUT" <<'EOF' | tee "$OUT/bench.md"
import glob, json, os, sys
cols = ("model", "clip", "global_batch", "attention", "remat", "step_s", "clips_per_s",
        "model_tflop_per_step", "mfu", "peak_memory_gb", "compile_s", "loss")
print("| bench | " + " | ".join(cols) + " |")
print("|" + " --- |" * (len(cols) + 1))
for path in sorted(glob.glob(os.path.join(sys.argv[1], "bench_*.json"))):
    r = json.load(open(path))
    name = os.path.basename(path)[len("bench_"):-len(".json")]
    if "failed" in r:
        print(f"| {name} | " + r["failed"] + " |" * len(cols))
        continue
    fmt = lambda v: f"{v:.4g}" if isinstance(v, float) else str(v)
    print(f"| {name} | " + " | ".join(fmt(r.get(c, "")) for c in cols) + " |")
EOF
echo "results in $OUT/ (add them to docs/PERFORMANCE.md with the date and the command)"
