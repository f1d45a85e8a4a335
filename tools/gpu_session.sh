#!/usr/bin/env bash
# The GPU measurements, as stages run in order inside one device call, under one time budget
# (GPU_SESSION_MINUTES, default 7: a device run of at most 9 minutes holds the machine's start and
# the transfers, ~1.5-2 min, too). A stage starts only with a minute or more left, and gets at most
# its cap (so that an early stage cannot starve the later ones) and never more than is left: the
# resumable ones (bench, targets, mnist) stop starting new measurements there and pick up where
# they stopped when run again.
#
# The plan is meant to produce the committed results, so it passes --publish. One run of at most
# 9 minutes, in priority order (`plan` is exactly these stages):
#   bash tools/gpu_session.sh --publish plan
#     = check targets:bf16 targets:tf32 train mnist:mnist-5k:784,64,10
#   1. check: `efficient-kan check` (kernels against the PyTorch path, every precision; cap 150 s)
#   2. targets:bf16, targets:tf32: the layer table at the four target shapes, forward+backward, all
#      five providers, each kernel's first config (EFFICIENT_KAN_AUTOTUNE=0: autotuning compiles
#      6+ candidates per kernel and shape, minutes each shape); cap 100 s each
#   3. train: the batch-64 training step, KAN([784,64,10]) and the MLP, eager and CUDA graph (fp32)
#   4. mnist:mnist-5k:784,64,10: one MNIST row (KAN, same-width MLP, same-params MLP; 3 seeds;
#      first config) with what is left
# Every stage runs under `timeout` with its share, so the stages end within the budget: 7 minutes
# plus the machine's start stays inside 9 (run it with the device tool's timeout_s 480 or more).
# Cut from that run (later runs, same script): bench:fp32 and the fp32 rows; forward-only rows; the
# two MNIST-sized layer shapes (64x784x64x5, 1024x784x512x5) in the layer table; autotuned timings
# (bench:PRECISION, which also autotunes); the kernel test suite on the GPU (tests); per-kernel
# profiles (profile); the other MNIST rows and Fashion-MNIST (mnist:DATASET).
# Compiles are not moved out of the run: a Triton cache built on CPU (tools/compile_only.py) for
# the GPU machine's triton 3.6 could travel with the call, but whether the GPU run hits it cannot be
# shown without a GPU, so the plan does not count on it.
#
# Where files go (`--help`): the session folder (--out DIR, else $OUT when set, e.g. the device
# tool's output folder, else a new git-ignored bench-out/gpu-session-<UTC time>/) gets the check
# and kernel test logs and the profiles. The bench and mnist results go there too, merged with
# copies of the committed JSON; with --publish they go into benchmarks/results/ instead (merged with
# the files there), and each one a stage wrote is also copied into <session folder>/results/, so
# that a device call whose $OUT comes back brings them: copy those into benchmarks/results/ and
# commit. Fashion-MNIST is not on the GPU machine: carry data/fashion-mnist (from `apt-get install
# dataset-fashion-mnist`, copied into ./data/fashion-mnist here) with the call.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1

usage() {
  cat <<'USAGE'
usage: tools/gpu_session.sh [-h] [--publish] [--out DIR] STAGE [STAGE ...]

The GPU measurements, as stages run in order inside one device call under one time budget.

stages:
  plan                the one-run plan: check targets:bf16 targets:tf32 train mnist:mnist-5k:784,64,10
  check               efficient-kan check: device, versions, kernels vs PyTorch path, timings
  tests               nvidia-smi, then every kernel test incl. GPU-only ones (first config)
  targets:PRECISION   bench_layer.py at the four target shapes, fwd+bwd, first config (resumes)
  bench:PRECISION     bench_layer.py for fp32, tf32 or bf16, every shape, autotuned (resumes)
  train[:PRECISION]   bench_layer.py's batch-64 training step only (default: fp32)
  profile[:SHAPE]     per-kernel device times (profile_layer.py) (default: 4096x1024x1024x5, bf16)
  mnist:DATASET[:ROW] KAN-vs-MLP table (mnist_table.py) for mnist-5k or fashion-mnist, every row or
                      one (e.g. 784,64,10) (resumes)

options:
  -h, --help          show this help and exit
  --out DIR           session folder: kernel-test log, profiles, and the bench/mnist results unless
                      --publish (default: $OUT when set, else a new bench-out/gpu-session-<UTC time>/,
                      git-ignored)
  --publish           bench and mnist stages write into benchmarks/results/, the committed results,
                      resuming from the files there, and copy what they wrote into
                      <session folder>/results/ (default: off: they write into the session folder)

environment:
  GPU_SESSION_MINUTES time budget of the whole call in minutes (default: 7)
  GPU_SESSION_DRY     when non-empty, print the commands instead of running them (default: empty)
USAGE
}

die_usage() {
  echo "$1" >&2
  usage >&2
  exit 2
}

publish=""
out=""
stages=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    -h | --help) usage; exit 0 ;;
    --publish) publish=1 ;;
    --out) [[ $# -ge 2 ]] || die_usage "--out needs a folder"; out=$2; shift ;;
    --out=*) out=${1#--out=} ;;
    -*) die_usage "unknown option: $1" ;;
    *) stages+=("$1") ;;
  esac
  shift
done

[[ ${#stages[@]} -gt 0 ]] || die_usage "no stage given"
expanded=()
for stage in "${stages[@]}"; do
  if [[ "$stage" == plan ]]; then
    expanded+=(check targets:bf16 targets:tf32 train mnist:mnist-5k:784,64,10)
  else
    expanded+=("$stage")
  fi
done
stages=("${expanded[@]}")
precision_re='(fp32|tf32|bf16)'
for stage in "${stages[@]}"; do  # check every stage before running any
  if [[ "$stage" =~ ^(check|tests|profile|profile:.+|train|train:$precision_re|bench:$precision_re|targets:$precision_re)$ ]] ||
    [[ "$stage" =~ ^mnist:(mnist-5k|fashion-mnist)(:[0-9]+(,[0-9]+)+)?$ ]]; then
    continue
  fi
  die_usage "unknown stage: $stage"
done

if [[ -z "$out" ]]; then
  out=${OUT:-}
fi
if [[ -z "$out" ]]; then
  out=bench-out/gpu-session-$(date -u +%Y%m%dT%H%M%SZ)
  while [[ -e "$out" ]]; do out=$out-x; done
fi
mkdir -p "$out"
echo "== session folder: $out${publish:+; bench and mnist results: benchmarks/results (--publish)}"
budget_s=$(awk "BEGIN { print int(60 * ${GPU_SESSION_MINUTES:-7}) }")
start_s=$SECONDS
start_epoch=$(date +%s)

# The package runs from this checkout through its editable install (efficient_kan refuses a checkout
# that is not installed). The GPU machine has torch and triton but not this package, and no
# network: install it without dependencies, build isolation or an index.
if [[ -z "${GPU_SESSION_DRY:-}" ]] && ! python -c "import efficient_kan" >/dev/null 2>&1; then
  echo "== installing this checkout: pip install -e . (offline, no dependencies)"
  if ! python -m pip install --quiet --no-deps --no-build-isolation --no-index -e .; then
    echo "error: 'pip install -e .' failed (it needs setuptools>=77 in this environment); nothing run" >&2
    exit 1
  fi
fi

run() {
  if [[ -n "${GPU_SESSION_DRY:-}" ]]; then
    echo "DRY: $*"
  else
    "$@"
  fi
}

# With --publish: copy the committed-result files PATTERN (under benchmarks/results) that this
# session wrote into <session folder>/results/, so that they leave the device machine with $OUT.
collect() {
  [[ -n "$publish" ]] || return 0
  local f
  mkdir -p "$out/results"
  for f in benchmarks/results/$1; do
    [[ -f "$f" ]] && (($(stat -c %Y "$f") >= start_epoch)) && cp "$f" "$out/results/" && echo "   $f -> $out/results/"
  done
  return 0
}

# Seconds a stage may take at most (none: all that is left).
cap_for() {
  case "$1" in
    check) echo 150 ;;
    targets) echo 100 ;;
    train) echo 60 ;;
    *) echo 100000 ;;
  esac
}

skipped=()
for stage in "${stages[@]}"; do
  left_s=$((budget_s - (SECONDS - start_s)))
  if ((left_s < 60)); then
    echo "== $stage: skipped, ${left_s} s left of the ${budget_s} s budget"
    skipped+=("$stage")
    continue
  fi
  name=${stage%%:*}
  arg=${stage#*:}
  [[ "$arg" == "$stage" ]] && arg=""
  cap_s=$(cap_for "$name")
  ((cap_s < left_s)) && left_s=$cap_s
  left_min=$(awk "BEGIN { printf \"%.1f\", ($left_s - 30) / 60 }")  # 30 s for the last measurement
  echo "== $stage (${left_s} s for it)"
  case "$name" in
    check)
      # The user-facing check first: if the kernels are wrong here, no timing after it matters.
      run timeout "$left_s" python -m efficient_kan check 2>&1 | tee "$out/check.txt" || true
      ;;
    tests)
      run nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
      run python -c "import torch, triton; print('torch', torch.__version__, '| triton', triton.__version__)"
      # First config only: correctness does not need tuning. The suite launches ~150 distinct
      # kernel specializations, each compiled on first use (1-6 s each; tools/compile_only.py):
      # 8 pytest-xdist workers compile them side by side.
      xdist=()
      python -c "import xdist" 2>/dev/null && xdist=(-n 8)
      run env EFFICIENT_KAN_AUTOTUNE=0 timeout "$((left_s - 20))" python -m pytest -q "${xdist[@]}" \
        -m "slow or not slow" tests/test_kernels.py 2>&1 | tee "$out/gpu_kernel_tests.txt" | tail -30 || true
      ;;
    bench | targets | train)
      flags=()
      case "$name" in
        bench) flags=(--precisions "$arg") ;;
        targets) flags=(--precisions "$arg" --shapes targets --modes fwd+bwd --no-training) ;;
        train) flags=(--precisions "${arg:-fp32}" --training-only) ;;
      esac
      # targets and train: each kernel's first config (autotuning compiles minutes per shape).
      tune=()
      [[ "$name" != bench ]] && tune=(env EFFICIENT_KAN_AUTOTUNE=0)
      if [[ -n "$publish" ]]; then
        run "${tune[@]}" timeout "$left_s" python benchmarks/bench_layer.py "${flags[@]}" --publish \
          --skip-done --max-minutes "$left_min" || true
        collect "bench_layer_*"
      else
        cp benchmarks/results/bench_layer_nvidia*.json "$out"/ 2>/dev/null || true
        run "${tune[@]}" timeout "$left_s" python benchmarks/bench_layer.py "${flags[@]}" --out "$out" \
          --skip-done --max-minutes "$left_min" || true
      fi
      ;;
    profile)
      run timeout "$((left_s - 10))" python benchmarks/profile_layer.py --out "$out" ${arg:+--shape "$arg"}
      ;;
    mnist)
      dataset=${arg%%:*}
      row=()
      [[ "$arg" == *:* ]] && row=(--rows "${arg#*:}")
      # First config (as targets): the MNIST KANs' kernels would otherwise autotune for minutes.
      if [[ -n "$publish" ]]; then
        run env EFFICIENT_KAN_AUTOTUNE=0 timeout "$left_s" python benchmarks/mnist_table.py --dataset "$dataset" \
          "${row[@]}" --max-minutes "$left_min" --publish || true
        collect "mnist_${dataset}_*"
      else
        cp benchmarks/results/mnist_"$dataset"_nvidia*.json "$out"/ 2>/dev/null || true
        run env EFFICIENT_KAN_AUTOTUNE=0 timeout "$left_s" python benchmarks/mnist_table.py --dataset "$dataset" \
          "${row[@]}" --max-minutes "$left_min" --out "$out" || true
      fi
      ;;
  esac
done
if ((${#skipped[@]})); then
  echo "== cut for time: ${skipped[*]}"
fi
echo "== done in $((SECONDS - start_s)) s; session folder: $out"
