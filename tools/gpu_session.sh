#!/usr/bin/env bash
# The GPU measurements, as stages run in order inside one device call, under one time budget
# (GPU_SESSION_MINUTES, default 9, to end inside the device's 10-minute limit). A stage starts only
# with a minute or more left, and gets what is left: the resumable ones (bench, mnist) stop
# starting new measurements there and pick up where they stopped when run again.
#
# The plan is meant to produce the committed results, so it passes --publish. A 30-minute device
# budget holds about three calls (each machine start costs minutes too), so in the order of issue
# 3's targets (bf16 and TF32 first), then issue 4's tables (the subset is quick):
#   bash tools/gpu_session.sh --publish check bench:bf16
#   bash tools/gpu_session.sh --publish bench:bf16 bench:tf32 profile profile:64x784x64x5 bench:fp32
#   bash tools/gpu_session.sh --publish mnist:mnist-5k mnist:fashion-mnist   # carry data/fashion-mnist
#
# Where files go (`--help`): the session folder (--out DIR, else $OUT when set, e.g. the device
# tool's output folder, else a new git-ignored bench-out/gpu-session-<UTC time>/) gets the kernel
# test log and the profiles. The bench and mnist results go there too, merged with copies of the
# committed JSON; with --publish they go into benchmarks/results/ instead (merged with the files
# there), and each one a stage wrote is also copied into <session folder>/results/, so that a
# device call whose $OUT comes back brings them: copy those into benchmarks/results/ and commit.
# Fashion-MNIST is not on the GPU machine: carry data/fashion-mnist (from `apt-get install
# dataset-fashion-mnist`, copied into ./data/fashion-mnist here) with the call.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=. PYTHONUNBUFFERED=1

usage() {
  cat <<'USAGE'
usage: tools/gpu_session.sh [-h] [--publish] [--out DIR] STAGE [STAGE ...]

The GPU measurements, as stages run in order inside one device call under one time budget.

stages:
  check               GPU and versions, then every kernel test incl. GPU-only ones (first config)
  bench:PRECISION     bench_layer.py for fp32, tf32 or bf16 (resumes from earlier results)
  profile[:SHAPE]     per-kernel device times (profile_layer.py) (default: 4096x1024x1024x5, bf16)
  mnist:DATASET       KAN-vs-MLP table (mnist_table.py) for mnist-5k or fashion-mnist (resumes)

options:
  -h, --help          show this help and exit
  --out DIR           session folder: kernel-test log, profiles, and the bench/mnist results unless
                      --publish (default: $OUT when set, else a new bench-out/gpu-session-<UTC time>/,
                      git-ignored)
  --publish           bench and mnist stages write into benchmarks/results/, the committed results,
                      resuming from the files there, and copy what they wrote into
                      <session folder>/results/ (default: off: they write into the session folder)

environment:
  GPU_SESSION_MINUTES time budget of the whole call in minutes (default: 9)
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
for stage in "${stages[@]}"; do  # check every stage before running any
  case "$stage" in
    check | profile | profile:* | bench:fp32 | bench:tf32 | bench:bf16 | mnist:mnist-5k | mnist:fashion-mnist) ;;
    *) die_usage "unknown stage: $stage" ;;
  esac
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
budget_s=$(awk "BEGIN { print int(60 * ${GPU_SESSION_MINUTES:-9}) }")
start_s=$SECONDS
start_epoch=$(date +%s)

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

for stage in "${stages[@]}"; do
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
      # kernel specializations, each compiled on first use (1-6 s each; tools/compile_only.py):
      # 8 pytest-xdist workers compile them side by side.
      xdist=()
      python -c "import xdist" 2>/dev/null && xdist=(-n 8)
      run env EFFICIENT_KAN_AUTOTUNE=0 timeout "$((left_s - 20))" python -m pytest -q "${xdist[@]}" \
        -m "slow or not slow" tests/test_kernels.py 2>&1 | tee "$out/gpu_kernel_tests.txt" | tail -30 || true
      ;;
    bench)
      if [[ -n "$publish" ]]; then
        run python benchmarks/bench_layer.py --precisions "$arg" --publish --skip-done --max-minutes "$left_min"
        collect "bench_layer_*"
      else
        cp benchmarks/results/bench_layer_nvidia*.json "$out"/ 2>/dev/null || true
        run python benchmarks/bench_layer.py --precisions "$arg" --out "$out" --skip-done --max-minutes "$left_min"
      fi
      ;;
    profile)
      run timeout "$((left_s - 10))" python benchmarks/profile_layer.py --out "$out" ${arg:+--shape "$arg"}
      ;;
    mnist)
      if [[ -n "$publish" ]]; then
        run python benchmarks/mnist_table.py --dataset "$arg" --max-minutes "$left_min" --publish
        collect "mnist_${arg}_*"
      else
        cp benchmarks/results/mnist_"$arg"_nvidia*.json "$out"/ 2>/dev/null || true
        run python benchmarks/mnist_table.py --dataset "$arg" --max-minutes "$left_min" --out "$out"
      fi
      ;;
  esac
done
echo "== done in $((SECONDS - start_s)) s; session folder: $out"
