// cuda/moe.cu — CUDA twins of ops/cpu/moe_cpu.cpp: top-k routing, the dispatch plan, and the grouped GEMM of the
// experts with its weight gradient; float32 and float64. Nothing here reads device memory on the host: the group
// sizes stay on the device and every grid is sized for the worst case from host-known shapes.
//
// moe_route: a thread per row n of probs [N,E]: k rounds, each picking the largest entry that ranks after the previous
//   pick in the total order (p desc, id asc; NaN as -inf) — the CPU twin's rounds, so ids agree exactly.
//   flat[n,s] = n*E + ids[n,s].
// moe_plan: keys[p] = ids[p] (E for an id outside [0, E)), values p = 0..M-1; cub::DeviceRadixSort::SortPairs
//   (stable) over the low bits that hold E gives order = the pairs by (expert, p), as the CPU's counting sort.
//   Then a thread per row: tokens[r] = order[r] / k; and a thread per expert e in [0, E]: offsets[e] = lower_bound of
//   e in the sorted keys (binary search), counts[e] = offsets[e+1] - offsets[e]. An out-of-range id (which the CPU
//   reports; moe_route never makes one) sorts after every valid pair, so offsets[E] < M and the grouped GEMM leaves
//   those rows unwritten instead of reading out of bounds.
// grouped_gemm: out rows of group e = a rows @ W_e^T (transpose_w) or @ W_e; W_e's pointers come as a small int64
//   table uploaded asynchronously (as in cuda/optimizer.cu). A block computes a 32 x 32 output tile (32 x 8 threads,
//   4 rows each) by 32-wide shared-memory tiles of a and W, summing in T in q order (the CPU twin uses Eigen in T:
//   agreement to rounding). Rows are tiled per group: blockIdx.x = t walks the groups' tiles in order, group e
//   having ceil(M_e / 32) of them; the block finds its group by scanning offsets (E reads), and blocks past the last
//   tile (the grid holds ceil(M / 32) + E tiles, the worst case) return at once, uniformly per block.
// grouped_gemm_dweight: dW_e [P,Q] = dy_e^T a_e: block (tile of Q, tile of P, e) loops over the group's rows in
//   32-row shared-memory chunks, summing in double in row order (the same bits every run, no atomics; the CPU twin
//   sums in T with Eigen, so they agree to float rounding); an empty group writes 0.
#include <cub/device/device_radix_sort.cuh>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "cuda/cuda_kernels.h"
#include "cuda/launch.h"

namespace gdn::cuda {

namespace {

// ---------------------------------------------------------------------------------------------------------------
// routing
// ---------------------------------------------------------------------------------------------------------------

template <typename T>
__global__ void moe_route_kernel(int64_t* __restrict__ ids, int64_t* __restrict__ flat, const T* __restrict__ probs,
                                 int64_t N, int64_t E, int64_t k) {
  pdl_enter();
  for (int64_t n = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; n < N; n += int64_t(gridDim.x) * blockDim.x) {
    const T* row = probs + n * E;
    T prev_v = T(0);
    int64_t prev_e = -1;
    for (int64_t s = 0; s < k; ++s) {
      int64_t best = -1;
      T best_v = T(0);
      for (int64_t e = 0; e < E; ++e) {
        const T x = row[e];
        const T v = isnan(x) ? static_cast<T>(-INFINITY) : x;
        const bool after = prev_e < 0 || v < prev_v || (v == prev_v && e > prev_e);
        if (after && (best < 0 || v > best_v)) best = e, best_v = v;
      }
      ids[n * k + s] = best;
      flat[n * k + s] = n * E + best;
      prev_v = best_v;
      prev_e = best;
    }
  }
}

void moe_route(const Tensor& ids, const Tensor& flat, const Tensor& probs) {
  GDN_CHECK(ids.is_contiguous() && flat.is_contiguous() && probs.is_contiguous(), "moe_route: contiguous only");
  GDN_CHECK(probs.dim() == 2 && ids.dim() == 2 && ids.shape() == flat.shape() && ids.size(0) == probs.size(0),
            "moe_route: ids {} and flat {} for probs {}", shape_str(ids.shape()), shape_str(flat.shape()),
            shape_str(probs.shape()));
  GDN_CHECK(ids.dtype() == kInt64 && flat.dtype() == kInt64, "moe_route: ids and flat must be int64");
  const int64_t N = probs.size(0), E = probs.size(1), k = ids.size(1);
  GDN_CHECK(k >= 1 && k <= E, "moe_route: k = {} outside [1, E = {}]", k, E);
  if (N == 0) return;
  dispatch_float(probs.dtype(), "cuda moe_route", [&](auto tag) {
    using T = decltype(tag);
    launch(moe_route_kernel<T>, grid_for(N), kThreads, 0, ids.data<int64_t>(), flat.data<int64_t>(), probs.data<T>(), N,
           E, k);
  });
}

// keys[p] = ids[p] in [0, E), else E; values[p] = p.
__global__ void moe_keys_kernel(uint32_t* __restrict__ keys, int64_t* __restrict__ values,
                                const int64_t* __restrict__ ids, int64_t M, int64_t E) {
  pdl_enter();
  for (int64_t p = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; p < M; p += int64_t(gridDim.x) * blockDim.x) {
    const int64_t id = ids[p];
    keys[p] = static_cast<uint32_t>(id >= 0 && id < E ? id : E);
    values[p] = p;
  }
}

__global__ void moe_tokens_kernel(int64_t* __restrict__ tokens, const int64_t* __restrict__ order, int64_t M,
                                  int64_t k) {
  pdl_enter();
  for (int64_t r = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; r < M; r += int64_t(gridDim.x) * blockDim.x)
    tokens[r] = order[r] / k;
}

// First index i in [0, M) with keys[i] >= e (M when none).
__device__ inline int64_t lower_bound_key(const uint32_t* keys, int64_t M, uint32_t e) {
  int64_t lo = 0, hi = M;
  while (lo < hi) {
    const int64_t mid = lo + (hi - lo) / 2;
    if (keys[mid] < e)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

// A thread per e in [0, E]: offsets[e], and counts[e] for e < E.
__global__ void moe_offsets_kernel(int64_t* __restrict__ offsets, int64_t* __restrict__ counts,
                                   const uint32_t* __restrict__ keys, int64_t M, int64_t E) {
  pdl_enter();
  const int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (e > E) return;
  const int64_t lo = lower_bound_key(keys, M, static_cast<uint32_t>(e));
  offsets[e] = lo;
  if (e < E) counts[e] = lower_bound_key(keys, M, static_cast<uint32_t>(e + 1)) - lo;
}

void moe_plan(const Tensor& order, const Tensor& tokens, const Tensor& offsets, const Tensor& counts,
              const Tensor& ids) {
  GDN_CHECK(order.is_contiguous() && tokens.is_contiguous() && offsets.is_contiguous() && counts.is_contiguous() &&
                ids.is_contiguous(),
            "moe_plan: contiguous only");
  GDN_CHECK(order.dtype() == kInt64 && tokens.dtype() == kInt64 && offsets.dtype() == kInt64 &&
                counts.dtype() == kInt64 && ids.dtype() == kInt64,
            "moe_plan: every tensor must be int64");
  GDN_CHECK(ids.dim() == 2, "moe_plan: ids must be [N,k], got {}", shape_str(ids.shape()));
  const int64_t M = ids.numel(), k = ids.size(1), E = counts.numel();
  GDN_CHECK(order.numel() == M && tokens.numel() == M && offsets.numel() == E + 1,
            "moe_plan: order {}, tokens {}, offsets {} for {} pairs and {} experts", shape_str(order.shape()),
            shape_str(tokens.shape()), shape_str(offsets.shape()), M, E);
  GDN_CHECK(M < INT32_MAX && E < INT32_MAX, "CUDA moe_plan: {} pairs, {} experts (at most 2^31 - 2)", M, E);
  const Device dev = ids.device();
  cudaStream_t stream = current_stream();
  Tensor keys_sorted = Tensor::empty({std::max<int64_t>(M, 1)}, kInt32, dev);
  auto* keys_out = reinterpret_cast<uint32_t*>(keys_sorted.data<int32_t>());
  if (M > 0) {
    Tensor keys_in = Tensor::empty({M}, kInt32, dev), values_in = Tensor::empty({M}, kInt64, dev);
    auto* kin = reinterpret_cast<uint32_t*>(keys_in.data<int32_t>());
    launch(moe_keys_kernel, grid_for(M), kThreads, 0, kin, values_in.data<int64_t>(), ids.data<int64_t>(), M, E);
    int end_bit = 1;  // keys lie in [0, E]
    while (end_bit < 32 && (uint64_t(1) << end_bit) <= static_cast<uint64_t>(E)) ++end_bit;
    const int n = static_cast<int>(M);
    size_t temp_bytes = 0;
    CUDA_CHECK(cub::DeviceRadixSort::SortPairs(nullptr, temp_bytes, kin, keys_out, values_in.data<int64_t>(),
                                               order.data<int64_t>(), n, 0, end_bit, stream));
    Tensor temp = Tensor::empty({static_cast<int64_t>((temp_bytes + 7) / 8) + 1}, kInt64, dev);
    CUDA_CHECK(cub::DeviceRadixSort::SortPairs(temp.raw_data(), temp_bytes, kin, keys_out,
                                               values_in.data<int64_t>(), order.data<int64_t>(), n, 0, end_bit,
                                               stream));
    launch(moe_tokens_kernel, grid_for(M), kThreads, 0, tokens.data<int64_t>(), order.data<int64_t>(), M, k);
  }
  launch(moe_offsets_kernel, grid_for(E + 1), kThreads, 0, offsets.data<int64_t>(), counts.data<int64_t>(), keys_out, M,
         E);
}

// ---------------------------------------------------------------------------------------------------------------
// grouped GEMM
// ---------------------------------------------------------------------------------------------------------------

constexpr int kTile = 32;      // output tile edge and reduction chunk
constexpr int kRowsY = 8;      // threadIdx.y extent; each thread covers kTile / kRowsY rows
constexpr int kPer = kTile / kRowsY;

// The device pointers of a weight list as an int64 tensor on `device` (uploaded asynchronously).
Tensor pointer_table(const std::vector<Tensor>& ws, Device device) {
  std::vector<int64_t> ptrs;
  for (const Tensor& w : ws) ptrs.push_back(static_cast<int64_t>(reinterpret_cast<intptr_t>(w.raw_data())));
  return Tensor::from_int64(ptrs, {static_cast<int64_t>(ptrs.size())}, device);
}

// Block (kTile, kRowsY); grid (ceil(M/kTile) + E, ceil(P/kTile)). W_e is [P,Q] (kTransW) or [Q,P].
template <typename T, bool kTransW>
__global__ void grouped_gemm_kernel(T* __restrict__ out, const T* __restrict__ a, const int64_t* __restrict__ wptrs,
                                    const int64_t* __restrict__ offsets, int64_t E, int64_t P, int64_t Q) {
  pdl_enter();
  __shared__ T As[kTile][kTile + 1];  // [row][q]
  __shared__ T Ws[kTile][kTile + 1];  // [q][col]
  // The group and first row of this block's tile: tiles are numbered group by group.
  const int64_t t = blockIdx.x;
  int64_t e = -1, row0 = 0, row_end = 0, before = 0;
  for (int64_t g = 0; g < E; ++g) {
    const int64_t lo = offsets[g], hi = offsets[g + 1];
    const int64_t tiles = hi > lo ? (hi - lo + kTile - 1) / kTile : 0;
    if (t < before + tiles) {
      e = g;
      row0 = lo + (t - before) * kTile;
      row_end = hi;
      break;
    }
    before += tiles;
  }
  if (e < 0) return;  // past the last tile: the same for every thread of the block
  const T* W = reinterpret_cast<const T*>(static_cast<intptr_t>(wptrs[e]));
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t col0 = int64_t(blockIdx.y) * kTile;
  T acc[kPer];
  for (int i = 0; i < kPer; ++i) acc[i] = T(0);
  for (int64_t q0 = 0; q0 < Q; q0 += kTile) {
    for (int i = 0; i < kPer; ++i) {
      const int rr = ty + kRowsY * i;
      const int64_t r = row0 + rr, q = q0 + tx;
      As[rr][tx] = r < row_end && q < Q ? a[r * Q + q] : T(0);
      if (kTransW) {
        const int64_t j = col0 + rr;  // W[j, q], read along q
        Ws[tx][rr] = j < P && q < Q ? W[j * Q + q] : T(0);
      } else {
        const int64_t qq = q0 + rr, j = col0 + tx;  // W[qq, j], read along j
        Ws[rr][tx] = qq < Q && j < P ? W[qq * P + j] : T(0);
      }
    }
    __syncthreads();
    for (int kk = 0; kk < kTile; ++kk) {
      const T w = Ws[kk][tx];
      for (int i = 0; i < kPer; ++i) acc[i] += As[ty + kRowsY * i][kk] * w;
    }
    __syncthreads();
  }
  const int64_t j = col0 + tx;
  if (j < P)
    for (int i = 0; i < kPer; ++i) {
      const int64_t r = row0 + ty + kRowsY * i;
      if (r < row_end) out[r * P + j] = acc[i];
    }
}

void check_offsets(const Tensor& offsets, int64_t E, const char* name) {
  GDN_CHECK(offsets.dtype() == kInt64 && offsets.is_contiguous() && offsets.numel() == E + 1,
            "{}: offsets must be contiguous int64 [{}], got {} {}", name, E + 1, offsets.dtype(),
            shape_str(offsets.shape()));
}

void grouped_gemm(const Tensor& out, const Tensor& a, const std::vector<Tensor>& weights, const Tensor& offsets,
                  bool transpose_w) {
  GDN_CHECK(out.is_contiguous() && a.is_contiguous(), "grouped_gemm: contiguous only");
  GDN_CHECK(out.dim() == 2 && a.dim() == 2 && out.size(0) == a.size(0), "grouped_gemm: out {} for a {}",
            shape_str(out.shape()), shape_str(a.shape()));
  const int64_t M = a.size(0), Q = a.size(1), P = out.size(1), E = static_cast<int64_t>(weights.size());
  const Shape wshape = transpose_w ? Shape{P, Q} : Shape{Q, P};
  for (const Tensor& w : weights)
    GDN_CHECK(w.is_contiguous() && w.dtype() == a.dtype() && w.shape() == wshape && w.device() == a.device(),
              "grouped_gemm: every weight must be contiguous {} {}, got {} {}", a.dtype(), shape_str(wshape),
              w.dtype(), shape_str(w.shape()));
  GDN_CHECK(out.dtype() == a.dtype(), "grouped_gemm: dtype {} vs {}", out.dtype(), a.dtype());
  check_offsets(offsets, E, "grouped_gemm");
  GDN_CHECK(P / kTile < 65535, "CUDA grouped_gemm: {} output columns is too many", P);
  if (M == 0 || P == 0 || E == 0) return;
  const Tensor table = pointer_table(weights, a.device());
  const dim3 grid(static_cast<unsigned>((M + kTile - 1) / kTile + E), static_cast<unsigned>((P + kTile - 1) / kTile));
  const dim3 block(kTile, kRowsY);
  dispatch_float(a.dtype(), "cuda grouped_gemm", [&](auto tag) {
    using T = decltype(tag);
    if (transpose_w)
      launch(grouped_gemm_kernel<T, true>, grid, block, 0, out.data<T>(), a.data<T>(), table.data<int64_t>(),
             offsets.data<int64_t>(), E, P, Q);
    else
      launch(grouped_gemm_kernel<T, false>, grid, block, 0, out.data<T>(), a.data<T>(), table.data<int64_t>(),
             offsets.data<int64_t>(), E, P, Q);
  });
}

// Block (kTile, kRowsY); grid (ceil(Q/kTile), ceil(P/kTile), E). dW_e[j, q] = sum_r dy[r, j] a[r, q], in double.
template <typename T>
__global__ void grouped_gemm_dweight_kernel(const int64_t* __restrict__ dwptrs, const T* __restrict__ dy,
                                            const T* __restrict__ a, const int64_t* __restrict__ offsets, int64_t P,
                                            int64_t Q) {
  pdl_enter();
  __shared__ T Ds[kTile][kTile + 1];  // [row][j]
  __shared__ T As[kTile][kTile + 1];  // [row][q]
  const int64_t e = blockIdx.z;
  const int64_t lo = offsets[e], hi = offsets[e + 1];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t q0 = int64_t(blockIdx.x) * kTile, j0 = int64_t(blockIdx.y) * kTile;
  double acc[kPer];
  for (int i = 0; i < kPer; ++i) acc[i] = 0.0;
  for (int64_t r0 = lo; r0 < hi; r0 += kTile) {
    for (int i = 0; i < kPer; ++i) {
      const int rr = ty + kRowsY * i;
      const int64_t r = r0 + rr;
      const int64_t j = j0 + tx, q = q0 + tx;
      Ds[rr][tx] = r < hi && j < P ? dy[r * P + j] : T(0);
      As[rr][tx] = r < hi && q < Q ? a[r * Q + q] : T(0);
    }
    __syncthreads();
    for (int rr = 0; rr < kTile; ++rr) {
      const double av = static_cast<double>(As[rr][tx]);
      for (int i = 0; i < kPer; ++i) acc[i] += static_cast<double>(Ds[rr][ty + kRowsY * i]) * av;
    }
    __syncthreads();
  }
  T* dw = reinterpret_cast<T*>(static_cast<intptr_t>(dwptrs[e]));
  const int64_t q = q0 + tx;
  if (q < Q)
    for (int i = 0; i < kPer; ++i) {
      const int64_t j = j0 + ty + kRowsY * i;
      if (j < P) dw[j * Q + q] = static_cast<T>(acc[i]);
    }
}

void grouped_gemm_dweight(const std::vector<Tensor>& dweights, const Tensor& dy, const Tensor& a,
                          const Tensor& offsets) {
  GDN_CHECK(dy.is_contiguous() && a.is_contiguous(), "grouped_gemm_dweight: contiguous only");
  GDN_CHECK(dy.dim() == 2 && a.dim() == 2 && dy.size(0) == a.size(0) && dy.dtype() == a.dtype(),
            "grouped_gemm_dweight: dy {} {} for a {} {}", dy.dtype(), shape_str(dy.shape()), a.dtype(),
            shape_str(a.shape()));
  const int64_t Q = a.size(1), P = dy.size(1), E = static_cast<int64_t>(dweights.size());
  for (const Tensor& w : dweights)
    GDN_CHECK(w.is_contiguous() && w.dtype() == a.dtype() && w.shape() == Shape({P, Q}) && w.device() == a.device(),
              "grouped_gemm_dweight: every dweight must be contiguous {} [{},{}], got {} {}", a.dtype(), P, Q,
              w.dtype(), shape_str(w.shape()));
  check_offsets(offsets, E, "grouped_gemm_dweight");
  GDN_CHECK(P / kTile < 65535 && E < 65535, "CUDA grouped_gemm_dweight: {} rows of dW, {} experts is too many", P, E);
  if (P == 0 || Q == 0 || E == 0) return;
  const Tensor table = pointer_table(dweights, a.device());
  const dim3 grid(static_cast<unsigned>((Q + kTile - 1) / kTile), static_cast<unsigned>((P + kTile - 1) / kTile),
                  static_cast<unsigned>(E));
  const dim3 block(kTile, kRowsY);
  dispatch_float(a.dtype(), "cuda grouped_gemm_dweight", [&](auto tag) {
    using T = decltype(tag);
    launch(grouped_gemm_dweight_kernel<T>, grid, block, 0, table.data<int64_t>(), dy.data<T>(), a.data<T>(),
           offsets.data<int64_t>(), P, Q);
  });
}

}  // namespace

void register_moe_kernels(KernelTable& t) {
  t.moe_route = moe_route;
  t.moe_plan = moe_plan;
  t.grouped_gemm = grouped_gemm;
  t.grouped_gemm_dweight = grouped_gemm_dweight;
}

}  // namespace gdn::cuda
