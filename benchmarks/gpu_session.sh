#!/usr/bin/env bash
# The GPU measurements, one stage per device call (each stage fits the device's 10-minute limit).
# Results are written to $OUT (the device tool's output folder; benchmarks/results when unset) and
# merged with earlier ones carried in benchmarks/results; copy them back into benchmarks/results/.
#
#   bash benchmarks/gpu_session.sh check                  # GPU + versions, all kernel tests incl. GPU-only
#   bash benchmarks/gpu_session.sh bench bf16 [--shapes ...]  # then tf32, fp32: bench_layer.py per precision
#                                                         # (stops after 8 min; repeat to continue)
#   bash benchmarks/gpu_session.sh profile [--shape ...]  # per-kernel device times (profile_layer.py),
#                                                         # default 4096x1024x1024x5 bf16: fused, chunked, floor
#   bash benchmarks/gpu_session.sh mnist fashion-mnist    # KAN vs MLP table (resumable; repeat until complete)
#
# Fashion-MNIST is not on the GPU machine: carry data/fashion-mnist (from `apt-get install
# dataset-fashion-mnist`, copied into ./data/fashion-mnist here) with the call.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=.
out=${OUT:-benchmarks/results}
mkdir -p "$out"

case "${1:-}" in
  check)
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
    python -c "import torch, triton; print('torch', torch.__version__, '| triton', triton.__version__)"
    # First config only: correctness does not need tuning, and tuning compiles would not fit the call.
    # The suite launches ~150 distinct kernel specializations, each compiled on first use (1-6 s
    # each, benchmarks/compile_only.py): 8 pytest-xdist workers compile them side by side.
    xdist=()
    python -c "import xdist" 2>/dev/null && xdist=(-n 8)
    EFFICIENT_KAN_AUTOTUNE=0 python -m pytest -q "${xdist[@]}" -m "slow or not slow" tests/test_kernels.py 2>&1 \
      | tee "$out/gpu_kernel_tests.txt" | tail -30
    ;;
  bench)
    cp benchmarks/results/bench_layer_nvidia*.json "$out"/ 2>/dev/null || true
    python benchmarks/bench_layer.py --precisions "${2:?precision: fp32, tf32 or bf16}" --out "$out" \
      --skip-done --max-minutes 8 "${@:3}"
    ;;
  profile)
    python benchmarks/profile_layer.py --out "$out" "${@:2}"
    ;;
  mnist)
    cp benchmarks/results/mnist_"${2:?dataset: mnist-5k or fashion-mnist}"_nvidia*.json "$out"/ 2>/dev/null || true
    python benchmarks/mnist_table.py --dataset "$2" --max-minutes 8 --out "$out"
    ;;
  *)
    echo "usage: $0 check | bench fp32|tf32|bf16 | profile [args] | mnist mnist-5k|fashion-mnist" >&2
    exit 2
    ;;
esac
