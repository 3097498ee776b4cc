#!/usr/bin/env bash
# scripts/test.sh — set up, build, and run the whole test suite with ctest (the second README command; CI runs it).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
start=$(date +%s)
"$root/scripts/setup.sh" build
built=$(date +%s)
cd "$root/build"
ctest --output-on-failure -j "$(nproc 2>/dev/null || echo 2)" --timeout 600
end=$(date +%s)
echo "test.sh: build $((built - start)) s, tests $((end - built)) s"
