#!/usr/bin/env bash
# The GPU measurements, as stages run in order inside one device call, under one time budget
# (GPU_SESSION_MINUTES, default 9, to end inside the device's 10-minute limit). A stage starts only
# with a minute or more left, and gets what is left: the resumable ones (bench, mnist) stop
# starting new measurements there and pick up where they stopped when run again.
#
# A 30-minute device budget holds about three calls (each machine start costs minutes too), so in
# the order of issue 3's targets (bf16 and TF32 first), then issue 4's tables (the subset is quick):
#   bash benchmarks/gpu_session.sh check bench:bf16
#   bash benchmarks/gpu_session.sh bench:bf16 bench:tf32 profile profile:64x784x64x5 bench:fp32
#   bash benchmarks/gpu_session.sh mnist:mnist-5k mnist:fashion-mnist   # carry data/fashion-mnist
#
# Stages:
#   check               GPU and versions, then every kernel test incl. GPU-only ones (first config)
#   bench:PRECISION     bench_layer.py for fp32, tf32 or bf16 (resumes from carried results)
#   profile[:SHAPE]     per-kernel device times (profile_layer.py), default 4096x1024x1024x5 bf16
#   mnist:DATASET       KAN-vs-MLP table for mnist-5k or fashion-mnist (resumes)
#
# Results are written to $OUT (the device tool's output folder; benchmarks/results when unset) and
# merged with earlier ones carried in benchmarks/results; copy them back into benchmarks/results/.
# Fashion-MNIST is not on the GPU machine: carry data/fashion-mnist (from `apt-get install
# dataset-fashion-mnist`, copied into ./data/fashion-mnist here) with the call.
# GPU_SESSION_DRY=1 prints the commands instead of running them.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=. PYTHONUNBUFFERED=1
out=${OUT:-benchmarks/results}
mkdir -p "$out"
budget_s=$(awk "BEGIN { print int(60 * ${GPU_SESSION_MINUTES:-9}) }")
start_s=$SECONDS

usage() {
  echo "usage: $0 STAGE [STAGE ...]; stages: check | bench:fp32|tf32|bf16 | profile[:BxIxOxG] |" \
    "mnist:mnist-5k|fashion-mnist" >&2
  exit 2
}

run() {
  if [[ -n "${GPU_SESSION_DRY:-}" ]]; then
    echo "DRY: $*"
  else
    "$@"
  fi
}

[[ $# -gt 0 ]] || usage
for stage in "$@"; do  # check every stage before running any
  case "$stage" in
    check | profile | profile:* | bench:fp32 | bench:tf32 | bench:bf16 | mnist:mnist-5k | mnist:fashion-mnist) ;;
    *) echo "unknown stage: $stage" >&2; usage ;;
  esac
done

for stage in "$@"; do
  left_s=$((budget_s - (SECONDS - start_s)))
  if ((left_s < 60)); then
    echo "== $stage: skipped, ${left_s} s left of the ${budget_s} s budget"
    continue
  fi
  left_min=$(awk "BEGIN { printf \"%.1f\", ($left_s - 30) / 60 }")  # 30 s for the last measurement
  echo "== $stage (${left_s} s left)"
  name=${stage%%:*}
  arg=${stage#*:}
  [[ "$arg" == "$stage" ]] && arg=""
  case "$name" in
    check)
      run nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
      run python -c "import torch, triton; print('torch', torch.__version__, '| triton', triton.__version__)"
      # First config only: correctness does not need tuning. The suite launches ~150 distinct
      # kernel specializations, each compiled on first use (1-6 s each; benchmarks/compile_only.py):
      # 8 pytest-xdist workers compile them side by side.
      xdist=()
      python -c "import xdist" 2>/dev/null && xdist=(-n 8)
      run env EFFICIENT_KAN_AUTOTUNE=0 timeout "$((left_s - 20))" python -m pytest -q "${xdist[@]}" \
        -m "slow or not slow" tests/test_kernels.py 2>&1 | tee "$out/gpu_kernel_tests.txt" | tail -30 || true
      ;;
    bench)
      cp benchmarks/results/bench_layer_nvidia*.json "$out"/ 2>/dev/null || true
      run python benchmarks/bench_layer.py --precisions "$arg" --out "$out" --skip-done --max-minutes "$left_min"
      ;;
    profile)
      run timeout "$((left_s - 10))" python benchmarks/profile_layer.py --out "$out" ${arg:+--shape "$arg"}
      ;;
    mnist)
      cp benchmarks/results/mnist_"$arg"_nvidia*.json "$out"/ 2>/dev/null || true
      run python benchmarks/mnist_table.py --dataset "$arg" --max-minutes "$left_min" --out "$out"
      ;;
  esac
done
echo "== done in $((SECONDS - start_s)) s"
