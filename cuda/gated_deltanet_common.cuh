// cuda/gated_deltanet_common.cuh — what the kernels of the small Gated DeltaNet operators share
// (cuda/gated_deltanet_ops.cu, cuda/gdn_gate.cu, cuda/causal_conv1d.cu): the scalar helpers of their CPU twins and
// the two-pass deterministic column reduction of their parameter gradients (the decomposition is described in
// cuda/gated_deltanet_ops.cu).
#pragma once

#include <cuda_runtime.h>

#include <algorithm>

#include "cuda/cuda_kernels.h"
#include "cuda/launch.h"

namespace gdn::cuda::gdn_common {

// ---------------------------------------------------------------------------------------------------------------
// scalar helpers, as in the CPU twin

template <typename T> __device__ inline T sigmoid_of(T x) {
  if (x >= T(0)) return T(1) / (T(1) + exp(-x));
  const T e = exp(x);
  return e / (T(1) + e);
}

template <typename T> __device__ inline T softplus_of(T x) { return x > T(20) ? x : log1p(exp(x)); }

// The gate before its lower clamp, and A itself, as the CPU's raw_gate() computes them.
template <typename T> struct RawGate {
  T A, raw;
};
template <typename T> __device__ inline RawGate<T> raw_gate(T a_log, T x) {
  const T A = exp(min(a_log, static_cast<T>(kGateALogMax)));
  return {A, -A * softplus_of(x)};
}
// The clamp, written so that a NaN raw value stays NaN.
template <typename T> __device__ inline T clamp_gate(T raw) {
  return raw < static_cast<T>(kGateMin) ? static_cast<T>(kGateMin) : raw;
}


// ---------------------------------------------------------------------------------------------------------------
// two-pass deterministic column reduction: out[m] = sum_{r < R} term(r, m) in double, m < M

constexpr int kColTile = 32;   // columns per block (threadIdx.x)
constexpr int kRowLanes = 8;   // row lanes per block (threadIdx.y)
constexpr int64_t kTargetBlocks = 1024;  // pass-1 blocks aimed at (a few waves on an H100)
constexpr int64_t kMinRowsPerSlice = 64;

struct ColumnPlan {
  int64_t slices, rows_per_slice;
};

// Slices depend only on (R, M): the summation order, hence the bits, is the same on every run.
inline ColumnPlan column_plan(int64_t R, int64_t M) {
  const int64_t col_blocks = (M + kColTile - 1) / kColTile;
  int64_t s = std::max<int64_t>(1, kTargetBlocks / std::max<int64_t>(1, col_blocks));
  s = std::min<int64_t>(s, std::max<int64_t>(1, (R + kMinRowsPerSlice - 1) / kMinRowsPerSlice));
  s = std::min<int64_t>(s, 65535);
  const int64_t rps = std::max<int64_t>(1, (R + s - 1) / s);
  return {std::max<int64_t>(1, (R + rps - 1) / rps), rps};
}

// partial [S, M]: partial[s, m] = sum over rows of slice s of term(r, m). Block (kColTile, kRowLanes).
template <typename Term>
__global__ void column_partials_kernel(double* partial, int64_t R, int64_t M, int64_t rows_per_slice, Term term) {
  pdl_enter();
  __shared__ double lanes[kRowLanes][kColTile + 1];
  const int64_t m = blockIdx.x * int64_t(kColTile) + threadIdx.x;
  const int64_t begin = blockIdx.y * rows_per_slice, end = std::min<int64_t>(R, begin + rows_per_slice);
  double acc = 0;
  if (m < M)
    for (int64_t r = begin + threadIdx.y; r < end; r += kRowLanes) acc += term(r, m);
  lanes[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y == 0 && m < M) {
    double s = lanes[0][threadIdx.x];
    for (int y = 1; y < kRowLanes; ++y) s += lanes[y][threadIdx.x];
    partial[blockIdx.y * M + m] = s;
  }
}

// store(m, sum) receives the slice partials of column m added by warp_column_sum, a warp per column.
template <typename Store> __global__ void column_finalize_kernel(const double* partial, int64_t S, int64_t M, Store store) {
  pdl_enter();
  const int64_t warps = blockDim.x >> 5;
  for (int64_t m = blockIdx.x * warps + (threadIdx.x >> 5); m < M; m += warps * gridDim.x) {
    const double s = warp_column_sum(partial, S, M, m);
    if ((threadIdx.x & 31) == 0) store(m, s);
  }
}

template <typename Term, typename Store>
void column_reduce(Device device, int64_t R, int64_t M, const Term& term, const Store& store) {
  if (M == 0) return;
  const ColumnPlan plan = column_plan(R, M);
  Tensor partial = Tensor::empty({plan.slices, M}, kFloat64, device);
  const dim3 grid(static_cast<unsigned>((M + kColTile - 1) / kColTile), static_cast<unsigned>(plan.slices));
  launch(column_partials_kernel<Term>, grid, dim3(kColTile, kRowLanes), 0, partial.data<double>(), R, M,
         plan.rows_per_slice, term);
  launch(column_finalize_kernel<Store>, grid_for(M * 32), kThreads, 0, partial.data<double>(), plan.slices, M, store);
}


}  // namespace gdn::cuda::gdn_common
