#!/usr/bin/env bash
# scripts/setup_libtorch.sh — OPTIONAL: install LibTorch (Debian's libtorch-dev, CPU, 1.13) for bench-libtorch,
# the parity and speed comparison of gdn.cpp against LibTorch (apps/libtorch/). Neither scripts/setup.sh nor the
# test suite needs it; without it CMake skips apps/libtorch and ctest reports libtorch_parity as skipped.
#
# Large: about 1 GB of packages (LibTorch pulls in protobuf, onednn, sleef, ...). Debian's LibTorch is linked
# against the generic libblas.so.3, which defaults to the REFERENCE BLAS (slow, single-threaded loops); this
# script installs OpenBLAS (pthread build) and selects it with update-alternatives for libblas.so.3 and
# liblapack.so.3, so the comparison runs torch on an optimised GEMM. bench-libtorch prints which BLAS is loaded.
#
# Usage: scripts/setup_libtorch.sh [build-dir]   (default: build; re-configures and builds bench-libtorch there)
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build_dir=${1:-build}
[[ "$build_dir" = /* ]] || build_dir="$root/$build_dir"

# shellcheck source=scripts/packages.sh
source "$root/scripts/packages.sh"
install_missing setup_libtorch libtorch-dev libopenblas0-pthread  # large: several minutes on a fresh machine

# Select OpenBLAS for the generic BLAS/LAPACK names that libtorch links against.
arch=$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || echo x86_64-linux-gnu)
for lib in libblas.so.3 liblapack.so.3; do
  choice=/usr/lib/$arch/openblas-pthread/$lib
  if [[ -e "$choice" ]]; then
    if [[ $(id -u) -eq 0 ]]; then
      update-alternatives --set "$lib-$arch" "$choice" >/dev/null
    fi
    echo "setup_libtorch: $lib -> $(readlink -f /etc/alternatives/$lib-$arch)"
  else
    echo "setup_libtorch: warning: $choice not found; torch keeps the default $lib" >&2
  fi
done

jobs=$(nproc 2>/dev/null || echo 2)
# shellcheck disable=SC2086
cmake -S "$root" -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release ${GDN_CMAKE_ARGS:-} >/dev/null
cmake --build "$build_dir" -j "$jobs" --target bench-libtorch
echo "setup_libtorch: built $build_dir/bin/bench-libtorch"
