#!/usr/bin/env bash
# scripts/gpu_check.sh — everything that needs a CUDA machine, in one run: meant to be copied with the source tree
# onto a machine with an NVIDIA GPU and nvcc (H100 / H200, sm_90), run there, and its $OUT folder copied back.
#
# Builds with the CUDA backend for sm_90, runs the CUDA-vs-CPU tests (also under compute-sanitizer memcheck) and
# the whole test suite, then uses the machine's many CPU cores to train the small and medium presets side by side
# (the "medium beats small" comparison). Logs and result files go to $OUT. Header-only dependencies the machine
# lacks (nlohmann-json, CLI11) are carried in .device/include (git-ignored; copied from this machine's /usr/include).
# Usage on the device: OUT=/some/dir bash scripts/gpu_check.sh [train-seconds (default 300; 0 = no training)]
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
OUT=${OUT:-/tmp/gdn-gpu}
mkdir -p "$OUT"
train_seconds=${1:-300}
inc="$root/.device/include"
export CPATH="$inc${CPATH:+:$CPATH}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpu.txt" 2>&1
cmake -S . -B build-gpu -G "$(command -v ninja >/dev/null && echo Ninja || echo 'Unix Makefiles')" -DGDN_CUDA=ON \
  -DCMAKE_CUDA_ARCHITECTURES=90 -DCMAKE_INCLUDE_PATH="$inc" -DGDN_FMT_HEADER_ONLY=ON > "$OUT/build.log" 2>&1 &&
  cmake --build build-gpu -j "$(nproc)" >> "$OUT/build.log" 2>&1 || { tail -40 "$OUT/build.log"; exit 1; }
echo "== build ok"
./build-gpu/tests/gdn_tests -tc='cuda:*' -s > "$OUT/cuda_tests.log" 2>&1; echo "== cuda tests rc=$?"
tail -4 "$OUT/cuda_tests.log"
if command -v compute-sanitizer >/dev/null || [ -x /usr/local/cuda/bin/compute-sanitizer ]; then
  PATH=$PATH:/usr/local/cuda/bin compute-sanitizer --tool memcheck ./build-gpu/tests/gdn_tests -tc='cuda:*' \
    > "$OUT/sanitizer.log" 2>&1
  echo "== compute-sanitizer rc=$?"; tail -3 "$OUT/sanitizer.log"
fi
OMP_NUM_THREADS=4 ./build-gpu/tests/gdn_tests > "$OUT/all_tests.log" 2>&1; echo "== all tests rc=$?"
tail -3 "$OUT/all_tests.log"
# Small and medium on the CPU, 8 threads each, side by side; SIGINT after train_seconds saves and ends a run.
[[ "$train_seconds" -gt 0 ]] || exit 0
export OMP_WAIT_POLICY=PASSIVE
for preset in small medium; do
  timeout -s INT "$train_seconds" ./build-gpu/bin/gdn-train --preset "$preset" --data data/sotu --out "runs/$preset" \
    --overwrite --threads 8 > "$OUT/train_$preset.log" 2>&1 &
done
wait
for preset in small medium; do
  echo "== $preset"; tail -8 "$OUT/train_$preset.log" | grep -v '^step ' | head -6
  cp "runs/$preset/training_results.json" "$OUT/results_$preset.json" 2>/dev/null
done
