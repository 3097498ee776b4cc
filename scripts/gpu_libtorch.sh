#!/usr/bin/env bash
# scripts/gpu_libtorch.sh — gdn.cpp against LibTorch on an NVIDIA GPU (sm_90): bench-libtorch built with the CUDA
# backend and against the CUDA LibTorch of the machine's PyTorch (its CMake prefix: torch.utils.cmake_prefix_path).
#
# Stages (all by default, or the ones named on the command line):
#   build   configure + build bench-libtorch only, into $BUILD (default build-gpu-torch/); the build log and the
#           CUDA libraries the binary resolves (ldd) go to $OUT/build.log
#   parity  --parity-only on the GPU, fp32 (TF32 off) and bf16: tiny, small, small-moe, tiny-ungated, medium,
#           medium-moe (fp32: loss 1e-5, every gradient 1e-4, 20 AdamW steps 1e-4; bf16: loss 1e-2); then
#           medium-moe in fp32 at lr 3e-4 (parity_moe_lr3e-4)
#   speed   the speed table: small, medium, large, medium-b32 at vocabulary 8192 and 49152, fp32 and bf16, one
#           process (--steps $STEPS --warmup $WARMUP, default 10 / 3), with gdn-train's CUDA-graph step beside
#           (--gdn-graph)
#   curve   200 AdamW steps (lr 3e-4) of medium in bf16 on both sides (the same batch every step), losses every 20
#           steps
# Outputs: $OUT/{parity,speed,curve}.{md,json} and the logs (default OUT=/tmp/gdn-gpu-libtorch). Header-only
# dependencies the machine may lack are carried in .device/include, or in $DEVICE_INCLUDE (see scripts/gpu_check.sh).
# Usage: OUT=/some/dir bash scripts/gpu_libtorch.sh [stage ...]   (stages run in the order build speed parity curve)
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
OUT=${OUT:-/tmp/gdn-gpu-libtorch}
BUILD=${BUILD:-build-gpu-torch}
STEPS=${STEPS:-10}
WARMUP=${WARMUP:-3}
PRECISION=${PRECISION:-fp32,bf16}
mkdir -p "$OUT"
stages=${*:-build speed parity curve}
want() { [[ " $stages " == *" $1 "* ]]; }
inc=${DEVICE_INCLUDE:-$root/.device/include}
export CPATH="$inc${CPATH:+:$CPATH}" OMP_WAIT_POLICY=PASSIVE PATH="$PATH:/usr/local/cuda/bin"
bench="$BUILD/bin/bench-libtorch"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"

if want build; then
  t0=$(date +%s)
  prefix=$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')
  python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)' | tee "$OUT/build.log"
  nvcc --version | tail -1 >> "$OUT/build.log"
  cmake -S . -B "$BUILD" -G "$(command -v ninja >/dev/null && echo Ninja || echo 'Unix Makefiles')" -DGDN_CUDA=ON \
    -DCMAKE_CUDA_ARCHITECTURES=90 -DCMAKE_INCLUDE_PATH="$inc" -DGDN_FMT_HEADER_ONLY=ON -DGDN_BUILD_TESTS=OFF \
    -DGDN_LIBTORCH=ON -DCMAKE_PREFIX_PATH="$prefix" >> "$OUT/build.log" 2>&1 &&
    cmake --build "$BUILD" -j "$(nproc)" --target bench-libtorch >> "$OUT/build.log" 2>&1 ||
    { tail -40 "$OUT/build.log"; echo "build: FAILED"; exit 1; }
  ldd "$bench" | grep -E "cublas|cudart|c10|torch_cuda" >> "$OUT/build.log"
  echo "build: ok in $(($(date +%s) - t0)) s"
fi

# gdn.cpp links the toolkit's libcudart / libcublas, LibTorch the ones of its pip packages (nvidia/*/lib). Where both
# have the same soname the first one loaded serves both; if the binary does not start that way, the loader is
# pointed at PyTorch's copies first (newer or equal within a CUDA major version, which gdn.cpp's code runs on).
if [[ -x "$bench" ]] && ! "$bench" --help > /dev/null 2>> "$OUT/build.log"; then
  nv=$(python3 -c 'import os, glob, torch; print(":".join(sorted(glob.glob(os.path.join(os.path.dirname(torch.__file__), "..", "nvidia", "*", "lib")))))')
  export LD_LIBRARY_PATH="$nv${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  echo "bench-libtorch did not start; LD_LIBRARY_PATH=$LD_LIBRARY_PATH" | tee -a "$OUT/build.log"
fi

run() {  # name, then bench-libtorch arguments
  local name=$1
  shift
  t0=$(date +%s)
  "$bench" --device cuda "$@" --out-md "$OUT/$name.md" --out-json "$OUT/$name.json" > "$OUT/$name.log" 2>&1
  echo "$name: rc=$? in $(($(date +%s) - t0)) s"
  cat "$OUT/$name.md" 2>/dev/null || tail -20 "$OUT/$name.log"
}

want speed && run speed --precision "$PRECISION" --steps "$STEPS" --warmup "$WARMUP" --gdn-graph \
  --presets small,medium,large,medium-b32,small-v49152,medium-v49152,large-v49152,medium-b32-v49152
want parity && run parity --parity-only --precision "$PRECISION" \
  --presets tiny,small,small-moe,tiny-ungated,medium,medium-moe
want parity && run parity_moe_lr3e-4 --parity-only --precision fp32 --presets medium-moe --lr 3e-4
want curve && run curve --precision bf16 --presets medium --steps 20 --warmup 5 --curve-steps 200 --curve-every 20 --lr 3e-4
exit 0
