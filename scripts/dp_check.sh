#!/usr/bin/env bash
# scripts/dp_check.sh — data-parallel training on a machine with 2 or more GPUs (docs/PERF.md "Data parallel").
#
# Stages (all by default, or the ones named): build (gdn-train and bench-allreduce with CUDA + NCCL into $BUILD,
# default build-dp; skip it to use a build made elsewhere, e.g. BUILD=build-gpu after gpu_check.sh build), parity
# (small preset, float32: 1 GPU with batch 8 against --gpus 2 with batch 4 each, 50 steps, every step's loss
# compared), scale (tokens/s of gdn-train on 1 GPU and on each count in $GPUS: medium at B32 x T256 per GPU, large at
# B8 x T512 per GPU; default precision; and medium at the largest count with dp_bucket_mb=0, the all-reduce after
# the backward instead of overlapped with it), allreduce (bench-allreduce at each count in $GPUS: the gradient
# all-reduce's bus bandwidth for medium and large). $GPUS defaults to 2, and 2 4 on a machine with 4 or more GPUs.
# Needs the corpus in data/sotu. Logs and a summary go to $OUT (default /tmp/gdn-dp).
# Usage: OUT=/some/dir [BUILD=dir] [GPUS="2 4"] bash scripts/dp_check.sh [stage ...]
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
OUT=${OUT:-/tmp/gdn-dp}
BUILD=${BUILD:-build-dp}
DATA=${DATA:-data/sotu}
mkdir -p "$OUT"
stages=${*:-build parity scale allreduce}
ncards=$(nvidia-smi -L 2>/dev/null | wc -l)
GPUS=${GPUS:-$( ((ncards >= 4)) && echo "2 4" || echo 2)}
want() { [[ " $stages " == *" $1 "* ]]; }
note() { echo "$*" | tee -a "$OUT/summary.txt"; }
export NCCL_NVLS_ENABLE=${NCCL_NVLS_ENABLE:-0} OMP_WAIT_POLICY=PASSIVE PATH="$PATH:/usr/local/cuda/bin"
bin=$BUILD/bin
runs=$OUT/runs
mkdir -p "$runs"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader > "$OUT/gpu.txt" 2>&1
note "gpus: $(tr '\n' ';' < "$OUT/gpu.txt")"

if want build; then
  t0=$(date +%s)
  cmake -S . -B "$BUILD" -G Ninja -DGDN_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 -DGDN_FMT_HEADER_ONLY=ON \
    -DGDN_LIBTORCH=OFF -DGDN_BUILD_TESTS=OFF ${GDN_CMAKE_ARGS:-} > "$OUT/build.log" 2>&1 &&
    cmake --build "$BUILD" -j "$(nproc)" --target gdn-train bench-allreduce >> "$OUT/build.log" 2>&1 ||
    { tail -30 "$OUT/build.log"; note "build: FAILED"; exit 1; }
  note "build: ok in $(($(date +%s) - t0)) s ($(grep -o 'NCCL transport [A-Z]*' "$OUT/build.log" | head -1))"
fi

# train NAME ARGS...: one gdn-train run into $runs/NAME, reusing the tokenizer and token cache of the first run.
train() {
  local name=$1
  shift
  mkdir -p "$runs/$name"
  [[ -f $runs/tok/tokenizer.json ]] && cp -r "$runs/tok/tokenizer.json" "$runs/tok/cache" "$runs/$name/"
  "$bin/gdn-train" --data "$DATA" --out "$runs/$name" --set vocab_size=8192 --set sample_tokens=0 "$@" \
    > "$OUT/$name.log" 2>&1
  local rc=$?
  [[ -f $runs/tok/tokenizer.json ]] || { mkdir -p "$runs/tok" && cp -r "$runs/$name/tokenizer.json" "$runs/$name/cache" "$runs/tok/"; }
  [[ $rc -eq 0 ]] || { note "$name: rc=$rc $(tail -1 "$OUT/$name.log")"; }
  return $rc
}
# Tokens/s of a run's steady state (its steps after the first 10: warm-up, graph capture, NCCL connection setup).
tps() { python3 -c "import json,sys; print(round(json.load(open(sys.argv[1]))['steady_tokens_per_second']))" "$runs/$1/training_results.json"; }

if want parity; then
  p="--preset small --steps 50 --set warmup_steps=10 --set log_every=1 --set eval_every=50 --set precision=float32"
  train par1 $p --set batch_size=8 --device cuda
  train par2 $p --set batch_size=4 --gpus 2
  note "parity: $(python3 - "$runs" <<'PY'
import json, sys
a = json.load(open(sys.argv[1] + "/par1/training_results.json"))
b = json.load(open(sys.argv[1] + "/par2/training_results.json"))
la = [p["loss"] for p in a["train_history"]]; lb = [p["loss"] for p in b["train_history"]]
r = max(abs(x - y) / abs(x) for x, y in zip(la, lb))
va, vb = a["final_val"]["loss"], b["final_val"]["loss"]
print(f"{len(la)} vs {len(lb)} steps, max relative loss difference {r:.2e} ({'PASS' if r < 1e-5 and len(la) == len(lb) == 50 else 'FAIL'}); "
      f"first {la[0]:.6f} / {lb[0]:.6f}, last {la[-1]:.6f} / {lb[-1]:.6f}; final val {va:.6f} / {vb:.6f}")
PY
)"
fi

if want scale; then
  for spec in "medium 32 256 300" "large 8 512 150"; do
    read -r preset b t steps <<<"$spec"
    s="--preset $preset --steps $steps --set warmup_steps=10 --set log_every=50 --set eval_every=$steps --set eval_batches=2 --set checkpoint_every=$steps --set batch_size=$b --set seq_len=$t"
    train "${preset}1" $s --device cuda || continue
    for n in $GPUS; do
      train "${preset}$n" $s --gpus "$n" &&
        note "scale $preset B${b}xT${t}/GPU, $steps steps: 1 GPU $(tps "${preset}1") tok/s, $n GPUs $(tps "${preset}$n") tok/s, efficiency $(python3 -c "print(f'{$(tps "${preset}$n")/($n*$(tps "${preset}1")):.3f}')")"
    done
    if [[ $preset == medium ]]; then
      n=${GPUS##* }
      train "${preset}${n}-nobucket" $s --gpus "$n" --set dp_bucket_mb=0 &&
        note "scale $preset, $n GPUs, one all-reduce after the backward (dp_bucket_mb=0): $(tps "${preset}${n}-nobucket") tok/s"
    fi
  done
fi

if want allreduce; then
  for n in $GPUS; do
    for preset in medium large; do
      "$bin/bench-allreduce" --gpus "$n" --preset "$preset" --set vocab_size=8192 --iters 50 \
        --json "$OUT/allreduce_${preset}_$n.json" > "$OUT/allreduce_${preset}_$n.log" 2>&1
      note "$(tail -1 "$OUT/allreduce_${preset}_$n.log")"
    done
  done
fi
cat "$OUT/summary.txt"
