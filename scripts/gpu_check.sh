#!/usr/bin/env bash
# scripts/gpu_check.sh — everything that needs a GPU, in one call on a machine with an NVIDIA card (sm_90).
#
# Stages (all by default, or the ones named on the command line, in this order):
#   build     configure + build with the CUDA backend for sm_90 into build-gpu/ (all cores)
#   harness   the CUDA-vs-CPU kernel harness and the CUDA model tests (gdn_tests -tc='cuda*'); the table of every
#             kernel's max error goes to $OUT/harness.md; the chunked delta rule again with one recurrence buffer,
#             the other value tiles of the register recurrences, prepare_mma_kernel at K = V = 128 and the
#             chunk-parallel output kernel at the fixed shapes (GDN_DR_RECUR_BUFFERS, _RECUR_VT, _PREPARE_COLS,
#             _FUSED_OUTPUT)
#   sanitize  the same tests under compute-sanitizer memcheck, then the harness under racecheck (fewer delta-rule shapes:
#             RACE_SHAPES, default 0,5,7, entries of the harness's chunked shape list; RACE_VARIANTS, default all,
#             entries of its list of optional-tensor variants, to split one shape over several calls)
#   suite     the whole ctest suite on this machine (GPU tests run instead of skipping)
#   train     gdn-train --preset small on the GPU (precision float32) and on the CPU from the same seed: the losses
#             of both runs compared (first 10 steps, first 100, final val loss); each run resumed on the other
#             device; the medium preset trained to the end on the GPU (default precision: bf16)
#   generate  greedy gdn-generate of both small runs, on the device each was trained on, and of the GPU run on the CPU
#   bench     bench-train for small, medium and large at vocabulary 49152: eager float32, the step as a CUDA graph in
#             float32 and in bf16 products; medium B32 in bf16; a per-kernel profile of medium
#   ab        (after build) this tree against another on the same card: AB_BASE (default .device/base: a copy made on
#             the host with `mkdir -p .device/base && git archive REV | tar -x -C .device/base`) is built into
#             build-base, then bench-gdn-ops (bf16) and bench-train (small, medium, large; medium B32; bf16, graph)
#             run for the base and for this tree in turn, two rounds, so that both see the same card and clocks
#   quality   small and medium trained in float32 and in bf16 (graph on): validation curves side by side
#   seed      the seed's ungated model (seed-medium, vocabulary 8192 like medium) trained on the GPU for medium's steps,
#             beside the gated medium run of the train stage
#   hf        scripts/hf_check.py: export to / import from Hugging Face transformers, checked with its python3
# Logs and results go to $OUT (default /tmp/gdn-gpu); a summary table is printed last. Header-only dependencies the
# machine may lack (nlohmann-json, CLI11) are carried in .device/include (git-ignored; copy them from /usr/include).
# The corpus (data/sotu, git-ignored) must be carried too for train/generate.
# Usage: OUT=/some/dir bash scripts/gpu_check.sh [stage ...]
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
OUT=${OUT:-/tmp/gdn-gpu}
mkdir -p "$OUT"
stages=${*:-build harness sanitize suite train generate bench quality seed hf}  # ab only when named
want() { [[ " $stages " == *" $1 "* ]]; }
summary="$OUT/summary.txt"
: > "$summary"
note() { echo "$*" | tee -a "$summary"; }
inc="$root/.device/include"
export CPATH="$inc${CPATH:+:$CPATH}" OMP_WAIT_POLICY=PASSIVE PATH="$PATH:/usr/local/cuda/bin"
bin=build-gpu/bin
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$OUT/gpu.txt" 2>&1
# The commit: from .device/commit when the tree was copied without its git history (write it before copying:
# git rev-parse --short HEAD > .device/commit), else from git.
commit=$(cat .device/commit 2>/dev/null || git rev-parse --short HEAD 2>/dev/null)
note "gpu: $(cat "$OUT/gpu.txt")  commit: $commit"

if want build; then
  t0=$(date +%s)
  cmake -S . -B build-gpu -G "$(command -v ninja >/dev/null && echo Ninja || echo 'Unix Makefiles')" -DGDN_CUDA=ON \
    -DCMAKE_CUDA_ARCHITECTURES=90 -DCMAKE_INCLUDE_PATH="$inc" -DGDN_FMT_HEADER_ONLY=ON -DGDN_LIBTORCH=OFF \
    > "$OUT/build.log" 2>&1 && cmake --build build-gpu -j "$(nproc)" >> "$OUT/build.log" 2>&1 ||
    { tail -40 "$OUT/build.log"; note "build: FAILED"; exit 1; }
  note "build: ok in $(($(date +%s) - t0)) s"
fi

if want harness; then
  GDN_HARNESS_REPORT="$OUT/harness.md" ./build-gpu/tests/gdn_tests -tc='cuda*' -s > "$OUT/cuda_tests.log" 2>&1
  rc=$?
  note "harness + cuda model tests: rc=$rc  $(grep -E '^\[doctest\] (test cases|assertions)' "$OUT/cuda_tests.log" | tr '\n' ' ')"
  grep -E "SKIPPED|ERROR|FAILED" "$OUT/cuda_tests.log" | head -20
  grep -E "^.*MESSAGE: step" "$OUT/cuda_tests.log" | head -12
  # The recurrences' one-buffer path (taken at large grids only) on the harness's delta-rule shapes.
  GDN_DR_RECUR_BUFFERS=1 ./build-gpu/tests/gdn_tests -tc='cuda harness: delta rule chunked' > "$OUT/cuda_one_buffer.log" 2>&1
  note "delta rule chunked, one recurrence buffer: rc=$?  $(grep -E '^\[doctest\] assertions' "$OUT/cuda_one_buffer.log")"
  # The register recurrences' wider value tiles (the harness's grids take 16) and the shared-memory recurrences at the
  # fixed shapes (GDN_DR_RECUR_VT=0).
  for vt in 32 64 0; do
    GDN_DR_RECUR_VT=$vt ./build-gpu/tests/gdn_tests -tc='cuda harness: delta rule chunked' > "$OUT/cuda_recur_vt$vt.log" 2>&1
    note "delta rule chunked, GDN_DR_RECUR_VT=$vt: rc=$?  $(grep -E '^\[doctest\] assertions' "$OUT/cuda_recur_vt$vt.log")"
  done
  # K = V = 128 prepared by prepare_mma_kernel instead of prepare_cols_kernel (the same bits: the chunked rows of the
  # two harness tables must agree).
  GDN_DR_PREPARE_COLS=0 GDN_HARNESS_REPORT="$OUT/harness_prepare_mma.md" \
    ./build-gpu/tests/gdn_tests -tc='cuda harness: delta rule chunked' > "$OUT/cuda_prepare_mma.log" 2>&1
  note "delta rule chunked, GDN_DR_PREPARE_COLS=0: rc=$?  $(grep -E '^\[doctest\] assertions' "$OUT/cuda_prepare_mma.log")"
  rows() { grep -E '^\| gated_delta_rule_chunked' "$1"; }
  note "chunked harness rows differing between prepare_cols and prepare_mma: $(diff <(rows "$OUT/harness.md") \
    <(rows "$OUT/harness_prepare_mma.md") | grep -c '^<')"
  # The fixed shapes' forward with the chunk-parallel output kernel instead of the recurrence that makes the output.
  GDN_DR_FUSED_OUTPUT=0 ./build-gpu/tests/gdn_tests -tc='cuda harness: delta rule chunked' \
    > "$OUT/cuda_unfused_output.log" 2>&1
  note "delta rule chunked, GDN_DR_FUSED_OUTPUT=0: rc=$?  $(grep -E '^\[doctest\] assertions' \
    "$OUT/cuda_unfused_output.log")"
fi

if want sanitize; then
  # racecheck is ~50x slower than memcheck: the chunked delta rule there runs three of its harness shapes (K = V = 64
  # and 128 on the split and tensor-core paths, K = 100 with chunk 16 on the tiled one), and the step tests are left out.
  # With the 512-thread chunk-parallel kernels one shape takes 4-5 minutes on an H200 (RACE_SHAPES=5 picks fewer);
  # K = V = 128 (shape 5) ran past the 4 minutes given to it twice: RACE_SHAPES=5 RACE_VARIANTS=0,1 then 2,3,4.
  compute-sanitizer --tool memcheck --error-exitcode 9 ./build-gpu/tests/gdn_tests -tc='cuda harness*,cuda step*' \
    > "$OUT/sanitizer_memcheck.log" 2>&1
  note "compute-sanitizer memcheck: rc=$?  $(grep -E 'ERROR SUMMARY' "$OUT/sanitizer_memcheck.log" | tail -1)"
  GDN_HARNESS_DR_SHAPES=${RACE_SHAPES:-0,5,7} GDN_HARNESS_DR_VARIANTS=${RACE_VARIANTS:-} compute-sanitizer --tool racecheck --error-exitcode 9 \
    ./build-gpu/tests/gdn_tests -tc='cuda harness*' > "$OUT/sanitizer_racecheck.log" 2>&1
  note "compute-sanitizer racecheck: rc=$?  $(grep -E 'RACECHECK SUMMARY|ERROR SUMMARY' "$OUT/sanitizer_racecheck.log" | tail -1)"
fi

if want suite; then
  (cd build-gpu && OMP_NUM_THREADS=2 ctest -j 8 --timeout 600 > "$OUT/ctest.log" 2>&1)
  note "ctest: $(grep -E 'tests passed|tests failed' "$OUT/ctest.log")  skipped: $(grep -c '\*\*\*Skipped' "$OUT/ctest.log")"
  grep -E "\*\*\*Failed|Not Run" "$OUT/ctest.log" | head -10
fi

if want train; then
  t0=$(date +%s)
  OMP_NUM_THREADS=8 $bin/gdn-train --preset small --data data/sotu --out runs/small-cpu --overwrite --set log_every=1 \
    > "$OUT/train_small_cpu.log" 2>&1 &
  cpu_pid=$!
  $bin/gdn-train --preset small --data data/sotu --out runs/small-cuda --overwrite --set log_every=1 --device cuda \
    --set precision=float32 > "$OUT/train_small_cuda.log" 2>&1
  note "train small on cuda: rc=$? in $(($(date +%s) - t0)) s"
  wait $cpu_pid
  note "train small on cpu: rc=$? in $(($(date +%s) - t0)) s"
  python3 scripts/compare_runs.py runs/small-cpu/training_results.json runs/small-cuda/training_results.json \
    | tee -a "$summary"
  cp runs/small-cuda/training_results.json "$OUT/results_small_cuda.json" 2>/dev/null
  # Checkpoints travel: a copy of the CPU run resumes on the GPU, a copy of the GPU run on the CPU (20 more steps).
  rm -rf runs/resumed-on-cuda runs/resumed-on-cpu
  cp -r runs/small-cpu runs/resumed-on-cuda && cp -r runs/small-cuda runs/resumed-on-cpu
  $bin/gdn-train --out runs/resumed-on-cuda --resume --steps 1020 --device cuda --set precision=float32 \
    > "$OUT/resume_on_cuda.log" 2>&1
  note "the CPU run resumed on cuda: rc=$?; $(python3 scripts/compare_runs.py --one runs/resumed-on-cuda/training_results.json)"
  OMP_NUM_THREADS=8 $bin/gdn-train --out runs/resumed-on-cpu --resume --steps 1020 --device cpu \
    > "$OUT/resume_on_cpu.log" 2>&1
  note "the GPU run resumed on the cpu: rc=$?; $(python3 scripts/compare_runs.py --one runs/resumed-on-cpu/training_results.json)"
  t0=$(date +%s)
  timeout -s INT 200 $bin/gdn-train --preset medium --data data/sotu --out runs/medium-cuda --overwrite \
    --device cuda > "$OUT/train_medium_cuda.log" 2>&1
  note "train medium on cuda: rc=$? in $(($(date +%s) - t0)) s; $(python3 scripts/compare_runs.py --one runs/medium-cuda/training_results.json)"
fi

if want generate; then
  for run in small-cpu:cpu small-cuda:cuda small-cuda:cpu; do
    dir=${run%%:*} dev=${run##*:}
    $bin/gdn-generate --out "runs/$dir" --device "$dev" --prompt "The" --max-tokens 60 --temperature 0 \
      > "$OUT/generate_${dir}_on_$dev.txt" 2>&1
  done
  for f in "$OUT"/generate_*; do note "$(basename "$f"): $(head -c 160 "$f" | tr '\n' ' ')"; done
  cmp -s "$OUT/generate_small-cpu_on_cpu.txt" "$OUT/generate_small-cuda_on_cuda.txt" &&
    note "generate: GPU-trained on GPU == CPU-trained on CPU (same text)" ||
    note "generate: the texts of the CPU and GPU runs differ"
  cmp -s "$OUT/generate_small-cuda_on_cuda.txt" "$OUT/generate_small-cuda_on_cpu.txt" &&
    note "generate: the GPU checkpoint gives the same text on the GPU and on the CPU" ||
    note "generate: the GPU checkpoint gives different texts on the GPU and on the CPU"
fi

if want bench; then
  # At the vocabulary of the stacks gdn.cpp is compared with (49152): eager float32, then the step as a CUDA graph in
  # float32 and with bf16 products; medium at B32; one eager bf16 profile of medium.
  for mode in "off float32" "on float32" "on bf16"; do
    set -- $mode
    $bin/bench-train --device cuda --presets small,medium,large --vocab 49152 --steps 50 --warmup 5 --graph "$1" \
      --precision "$2" --json "$OUT/bench_train_graph-$1_$2.json" > "$OUT/bench_train_graph-$1_$2.md" 2>&1
    note "bench-train graph $1 $2: rc=$?"
    grep -E "^\| (small|medium|large) " "$OUT/bench_train_graph-$1_$2.md" | tee -a "$summary"
  done
  $bin/bench-train --device cuda --presets medium --batch 32 --vocab 49152 --steps 30 --warmup 3 --precision bf16 \
    --json "$OUT/bench_train_b32.json" > "$OUT/bench_train_b32.md" 2>&1
  note "bench-train medium B32 bf16: rc=$?"; grep -E "^\| medium " "$OUT/bench_train_b32.md" | tee -a "$summary"
  $bin/bench-train --device cuda --presets medium --vocab 49152 --steps 10 --warmup 3 --precision bf16 --profile 10 \
    > "$OUT/bench_train_profile.md" 2>&1
  note "bench-train profile: rc=$?"
fi

if want ab; then
  base=${AB_BASE:-.device/base}
  [[ -f $base/CMakeLists.txt ]] || { note "ab: no tree at $base"; exit 1; }
  t0=$(date +%s)
  cmake -S "$base" -B build-base -G "$(command -v ninja >/dev/null && echo Ninja || echo 'Unix Makefiles')" \
    -DGDN_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 -DCMAKE_INCLUDE_PATH="$inc" -DGDN_FMT_HEADER_ONLY=ON \
    -DGDN_LIBTORCH=OFF > "$OUT/build_base.log" 2>&1 &&
    cmake --build build-base -j "$(nproc)" --target bench-train bench-gdn-ops >> "$OUT/build_base.log" 2>&1 ||
    { tail -40 "$OUT/build_base.log"; note "ab: base build FAILED"; exit 1; }
  note "ab: base built in $(($(date +%s) - t0)) s"
  for round in 1 2; do
    for tree in base gpu; do
      d=build-$tree/bin
      note "ab round $round, $tree:"
      $d/bench-gdn-ops --device cuda --precision bfloat16 --repeats 20 --warmup 3 > "$OUT/ab_ops_${tree}_$round.md" 2>&1
      grep -E "^\| float32" "$OUT/ab_ops_${tree}_$round.md" | tee -a "$summary"
      $d/bench-train --device cuda --presets small,medium,large --vocab 49152 --steps 50 --warmup 5 --precision bf16 \
        > "$OUT/ab_train_${tree}_$round.md" 2>&1
      $d/bench-train --device cuda --presets medium --batch 32 --vocab 49152 --steps 50 --warmup 5 --precision bf16 \
        >> "$OUT/ab_train_${tree}_$round.md" 2>&1
      grep -E "^\| (small|medium|large) " "$OUT/ab_train_${tree}_$round.md" | tee -a "$summary"
    done
  done
fi

if want quality; then
  # bf16 products against float32, both with the step as a CUDA graph, small and medium on the default corpus. The
  # float32 run trains the tokenizer; the bf16 run reuses it (its tokenizer.json and token cache copied into a fresh
  # output folder), so its wall time is the whole run with the tokenizer reused, evaluation and the sample included.
  for preset in small medium; do
    t0=$(date +%s)
    $bin/gdn-train --preset $preset --data data/sotu --out runs/q-$preset-float32 --overwrite --device cuda \
      --set precision=float32 > "$OUT/quality_${preset}_float32.log" 2>&1
    note "train $preset float32: rc=$? in $(($(date +%s) - t0)) s wall (tokenizer trained)"
    rm -rf runs/q-$preset-bf16 && mkdir -p runs/q-$preset-bf16
    cp -r runs/q-$preset-float32/tokenizer.json runs/q-$preset-float32/cache runs/q-$preset-bf16/
    t0=$(date +%s)
    $bin/gdn-train --preset $preset --data data/sotu --out runs/q-$preset-bf16 --device cuda \
      --set precision=bf16 > "$OUT/quality_${preset}_bf16.log" 2>&1
    note "train $preset bf16: rc=$? in $(($(date +%s) - t0)) s wall (tokenizer reused)"
    for prec in float32 bf16; do
      cp runs/q-$preset-$prec/training_results.json "$OUT/results_${preset}_$prec.json" 2>/dev/null
    done
    python3 scripts/val_curves.py float32=runs/q-$preset-float32/training_results.json \
      bf16=runs/q-$preset-bf16/training_results.json > "$OUT/curves_$preset.md" 2>&1
    tail -3 "$OUT/curves_$preset.md" | tee -a "$summary"
  done
fi

if want seed; then
  t0=$(date +%s)
  timeout -s INT 200 $bin/gdn-train --preset seed-medium --set vocab_size=8192 --data data/sotu \
    --out runs/seed-medium-cuda --overwrite --device cuda > "$OUT/train_seed_medium_cuda.log" 2>&1
  note "train seed-medium on cuda: rc=$? in $(($(date +%s) - t0)) s; $(python3 scripts/compare_runs.py --one runs/seed-medium-cuda/training_results.json)"
  for run in medium-cuda seed-medium-cuda; do
    cp "runs/$run/training_results.json" "$OUT/results_$run.json" 2>/dev/null
    cp "runs/$run/training_curves.png" "$OUT/curves_$run.png" 2>/dev/null
  done
fi

if want hf; then
  python3 scripts/hf_check.py --gdn-bin "$bin" --work /tmp/gdn-hf > "$OUT/hf_check.log" 2>&1
  note "hf_check: rc=$? (the number of failed checks)"
  grep -E "^(PASS|FAIL)" "$OUT/hf_check.log" | tee -a "$summary"
fi

# What comes back from a lent machine is limited to a few files: keep the summary, the harness table and the benchmark
# results as they are, and pack every other log into logs.tgz.
(cd "$OUT" && ls | grep -vxE 'summary.txt|harness.md|bench_train.md|bench_train.json|logs.tgz' > "$OUT/.packed" &&
  tar czf logs.tgz -T .packed && xargs rm -f < .packed; rm -f .packed)
echo; echo "==== summary ===="; cat "$summary"
