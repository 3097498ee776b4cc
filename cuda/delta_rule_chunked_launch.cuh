// cuda/delta_rule_chunked_launch.cuh — launch planning shared by the float32 and the bf16 tensor-core paths of the
// chunked gated delta rule (cuda/delta_rule_chunked.cu, cuda/delta_rule_chunked_mma_host.cuh): device limits,
// resident blocks per SM, and the choice of a sequential recurrence's value tile and buffer count.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <initializer_list>
#include <string>

#include "core/check.h"
#include "cuda/cuda_check.h"
#include "cuda/delta_rule_chunked_tiled.cuh"
#include "cuda/launch.h"
#include "cuda/stream.h"

namespace gdn::cuda::delta_rule_tiled {

inline int device_attr(cudaDeviceAttr a) {
  int x = 0;
  CUDA_CHECK(cudaDeviceGetAttribute(&x, a, current_device()));
  return x;
}
inline size_t smem_limit() { return static_cast<size_t>(device_attr(cudaDevAttrMaxSharedMemoryPerBlockOptin)); }
inline int sm_count() { return device_attr(cudaDevAttrMultiProcessorCount); }

// Threads per block of a chunk-output or backward-pre launch of `blocks` blocks: kParThreads<Tp> while the grid
// fills at most two blocks per SM (each block's latency is then the kernel's time, and more threads shorten it), 256
// beyond (the blocks themselves keep the SMs busy, and 512-thread blocks measured slower there; the kernels are
// compiled for kParThreads and read their loop strides from blockDim). The tensor-core kernels at the fixed shapes,
// whose staging is written for kParThreads, always take kParThreads instead (par_kernel_threads,
// cuda/delta_rule_chunked_mma_host.cuh).
template <typename Tp>
int par_threads(int64_t blocks) {
  return blocks <= 2 * static_cast<int64_t>(sm_count()) ? kParThreads<Tp> : kThreads;
}

// Resident blocks per SM of `threads` threads (256 unless named) for a given dynamic shared memory (1 KB per block
// reserved by the runtime).
inline int resident_blocks(size_t smem, int threads = kThreads) {
  const size_t per_sm = static_cast<size_t>(device_attr(cudaDevAttrMaxSharedMemoryPerMultiprocessor));
  return std::min<int>(2048 / threads, static_cast<int>(per_sm / (smem + 1024)));
}
// Waves of a grid of `blocks` blocks at bps resident blocks per SM.
inline int64_t waves(int64_t blocks, int bps) {
  const int64_t slots = static_cast<int64_t>(sm_count()) * bps;
  return (blocks + slots - 1) / slots;
}

// A recurrence's launch: value columns per block, buffers of chunk operands, dynamic shared memory; vt = 0 when none
// fits. Among the value tiles `vts` and one or two buffers (smem_of(vt, nbuf) bytes each): fewest waves of resident
// blocks first (the recurrence is sequential, a second wave doubles its time), then two buffers (the next chunk's
// copies overlap this one's products), then the narrowest tile (the most blocks, the least work per step).
// GDN_DR_RECUR_BUFFERS=1 or 2 takes only that buffer count (the harness runs the one-buffer path, which the
// choice takes only for grids larger than its shapes, with 1; A/B runs).
struct RecurChoice {
  int vt = 0, nbuf = 0;
  size_t smem = 0;
};
inline int forced_recur_buffers() {
  static const int n = [] {
    const char* e = std::getenv("GDN_DR_RECUR_BUFFERS");
    return e && (e[0] == '1' || e[0] == '2') && e[1] == 0 ? e[0] - '0' : 0;
  }();
  return n;
}
template <typename F>
RecurChoice choose_recur(const Dims& d, std::initializer_list<int> vts, F smem_of) {
  RecurChoice best;
  int64_t best_key = -1;
  const size_t limit = smem_limit();
  const int forced = forced_recur_buffers();
  for (int vt : vts)
    for (int nbuf : {2, 1}) {
      if (forced && nbuf != forced) continue;
      const size_t smem = smem_of(vt, nbuf);
      const int bps = smem <= limit ? resident_blocks(smem) : 0;
      if (bps < 1) continue;
      const int64_t key = (waves((d.V + vt - 1) / vt * d.B * d.Hv, bps) * 2 + (nbuf == 2 ? 0 : 1)) * 64 + vt;
      if (best_key < 0 || key < best_key) {
        best_key = key;
        best = {vt, nbuf, smem};
      }
    }
  return best;
}

// The value tile of the register recurrences (cuda/delta_rule_chunked_mma_regs.cuh, fixed shapes; a warp per 16
// columns, 2 vt threads, smem_of(vt) bytes of shared memory): as choose_recur, fewest waves of resident blocks (the
// recurrence is sequential, a second wave doubles its time), then the narrowest tile (the most blocks); 0 when none
// fits. GDN_DR_RECUR_VT=16, 32 or 64 forces the tile (the harness's small grids take 16 by themselves), 0 runs the
// shared-memory recurrences there too (A/B runs).
inline int forced_recur_vt() {
  static const int v = [] {
    const char* e = std::getenv("GDN_DR_RECUR_VT");
    if (!e || !*e) return -1;
    const std::string s(e);
    GDN_CHECK(s == "0" || s == "16" || s == "32" || s == "64", "GDN_DR_RECUR_VT must be 0, 16, 32 or 64, not '{}'", s);
    return std::stoi(s);
  }();
  return v;
}
template <typename F>
int reg_vt(const Dims& d, F smem_of) {
  const int forced = forced_recur_vt();
  if (forced == 0) return 0;
  if (forced > 0) return d.V % forced == 0 ? forced : 16;
  int best = 0;
  int64_t best_waves = 0;
  for (int vt : {16, 32, 64}) {
    const size_t smem = smem_of(vt);
    if (d.V % vt != 0 || smem > smem_limit()) continue;
    const int bps = resident_blocks(smem, 2 * vt);
    if (bps < 1) continue;
    const int64_t w = waves(d.V / vt * d.B * d.Hv, bps);
    if (best == 0 || w < best_waves) {
      best = vt;
      best_waves = w;
    }
  }
  return best;
}

// Whether the tensor-core forward prepares C = 64, K = V = 128 chunks with prepare_cols_kernel (the substitution by
// columns in registers, cuda/delta_rule_chunked_mma_cols.cuh; the default) or with prepare_mma_kernel as every other
// shape: GDN_DR_PREPARE_COLS=0 picks the latter (A/B runs; the two give the same bits).
inline bool prepare_by_columns() {
  static const bool v = env_switch("GDN_DR_PREPARE_COLS", true);
  return v;
}

// Whether the tensor-core forward at the fixed shapes makes the output inside the register recurrence
// (forward_recur_out_kernel, cuda/delta_rule_chunked_mma_regs.cuh; the default) or with the chunk-parallel
// chunk_output_mma_kernel after it: GDN_DR_FUSED_OUTPUT=0 picks the latter (A/B runs, and the harness covers both).
inline bool fused_output() {
  static const bool v = env_switch("GDN_DR_FUSED_OUTPUT", true);
  return v;
}

}  // namespace gdn::cuda::delta_rule_tiled
