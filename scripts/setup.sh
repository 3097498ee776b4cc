#!/usr/bin/env bash
# scripts/setup.sh — install what gdn.cpp needs (Debian 12 packages) and build it.
#
# Idempotent and fast when everything is present: apt-get runs only for missing packages.
# Usage: scripts/setup.sh [build-dir]   (default: build; env GDN_CMAKE_ARGS adds CMake options)
# The CUDA backend is built when nvcc is found (/usr/local/cuda); set GDN_CMAKE_ARGS=-DGDN_CUDA=OFF to skip it.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build_dir=${1:-build}
[[ "$build_dir" = /* ]] || build_dir="$root/$build_dir"

# shellcheck source=scripts/packages.sh
source "$root/scripts/packages.sh"
install_missing setup cmake g++ ninja-build pkg-config libeigen3-dev libfmt-dev doctest-dev nlohmann-json3-dev \
  libcli11-dev libplplot-dev plplot-driver-cairo

jobs=$(nproc 2>/dev/null || echo 2)
# shellcheck disable=SC2086
cmake -S "$root" -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release ${GDN_CMAKE_ARGS:-} >/dev/null
cmake --build "$build_dir" -j "$jobs"
echo "setup: built into $build_dir"
