#!/usr/bin/env bash
# tests/pdl_launches.sh CUDA_DIR — the rule of Programmatic Dependent Launch (cuda/launch.h) in the sources: every
# __global__ kernel's body begins with pdl_enter(), and no kernel is launched with <<<>>> (all go through launch(),
# which sets the PDL attribute). Registered with ctest (tests/CMakeLists.txt); needs no GPU.
set -u
dir=$1
fail=0
for f in "$dir"/*.cu "$dir"/*.cuh; do
  [[ -e $f ]] || continue
  # A kernel: from a "__global__" line to the first line ending in "{"; the next line must be "pdl_enter();".
  awk -v file="$f" '
    /^[[:space:]]*\/\// { next }
    /<<</ { printf "FAIL %s:%d: a <<<>>> launch (use launch() from cuda/launch.h)\n", file, FNR; bad = 1 }
    /__global__/ { sig = 1; line = FNR }
    sig && /\{[[:space:]]*$/ { sig = 0; body = 1; next }
    body { body = 0
           if ($0 !~ /^[[:space:]]*pdl_enter\(\);[[:space:]]*$/) {
             printf "FAIL %s:%d: kernel does not begin with pdl_enter();\n", file, line; bad = 1 } }
    END { exit bad }' "$f" || fail=1
done
kernels=$(cat "$dir"/*.cu "$dir"/*.cuh | grep -v '^[[:space:]]*//' | grep -c '__global__')
enters=$(cat "$dir"/*.cu "$dir"/*.cuh | grep -c '^[[:space:]]*pdl_enter();')
if [[ $kernels -eq 0 || $kernels -ne $enters ]]; then
  echo "FAIL: $kernels kernels, $enters pdl_enter() calls"; fail=1
fi
[[ $fail -eq 0 ]] && echo "pdl_launches: $kernels kernels, each begins with pdl_enter(); no <<<>>> launch"
exit $fail
