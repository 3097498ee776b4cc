// cuda/nn.cu — CUDA kernels of the neural-network ops: embedding (forward, deterministic backward) and RMSNorm;
// float32 and float64. The cross-entropy is in cuda/cross_entropy.cu; the CPU twins are in ops/cpu/nn_cpu.cpp.
//
// embedding_forward: out [N,D] = weight [V,D][ids [N]] (int32 or int64 ids). A group of threads per row (a warp for
//   D <= 32 up to a block of 256), grid-stride over rows; coalesced along D.
// embedding_backward: dweight [V,D] = sum over {i : ids[i] = v} of dout[i] (also scatter_add_rows, V = tokens).
//   Deterministic, without atomics: (key = id, value = position) pairs are sorted by cub::DeviceRadixSort (stable,
//   so equal ids keep position order), a pass over the sorted keys writes where each vocabulary row's run starts,
//   then a thread group per row v takes its run [lo, hi) and adds dout[pos[lo]], dout[pos[lo+1]], ... in T starting
//   from 0, writing every element of dweight once (0 for ids that never occur). That is exactly the CPU loop's order
//   (positions ascending), so the result is bit-identical to the CPU twin.
// rms_norm_forward / rms_norm_backward: a warp per row for D <= 1024, else a block per row; sums of squares and dot
//   products in double as on the CPU; the residual add before the norm (h = x + r) and the residual gradient after it
//   (dx + dres) fused in when given; y may be bfloat16 for float32 x (each value rounded once: the operand of a bf16
//   GEMM, written by the norm instead of a copy kernel). Float32 rows with D % 4 == 0 and 16-byte aligned data (y in
//   bfloat16: 8-byte) go four columns a load and a store (the forward for D <= 1024, the one-pass backward for
//   D <= 512), each lane issuing all of its loads of a row before the first use; other rows (float64, other D,
//   misaligned data) go one element per lane at a time. Each element's arithmetic is the same on both paths; only the
//   order of the double row sums' additions differs. dx = r * (dy * w - xh * mean(dy * w * xh)), xh = x * r.
//   dw [D] = sum over rows of dy * xh in double, in two passes without atomics. For D <= 512 the dx kernel makes the
//   first pass itself (dy and x read once): lane l of a row's warp holds the row's values of its columns (l, l + 32,
//   ..., or its groups of four columns l, l + 32, ...) in registers and adds their dw terms over the rows it visits
//   (grid-stride over at most 512 blocks of 8 warps: a grid that depends only on N), and each block adds its warps'
//   sums in warp order into its row of a double partial [P, D]. For wider rows a separate kernel reads dy and x again:
//   blocks of 32 columns x 8 row lanes, each summing a fixed range of rows into partial [P, D] (lanes added in lane
//   order). Then a warp per column adds the P partials in a fixed order (warp_column_sum). Same bits on every run; the
//   CPU adds rows serially, so dw agrees to rounding of a double sum.
//
// Ids out of range: the CPU twin throws ("id {} at position {} is outside [0, V)"). Reporting that from here would
// need a host read of device memory (a sync), which the kernels must not do. Instead no kernel reads or writes out of
// bounds, and the bad value shows up loudly in the results: embedding_forward writes NaN rows for bad ids;
// embedding_backward skips them (their dout rows are dropped).
#include <cub/device/device_radix_sort.cuh>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "cuda/cuda_kernels.h"
#include "cuda/launch.h"
#include "cuda/stream.h"

namespace gdn::cuda {

namespace {

int threads_for(int64_t n, int cap) {  // a power of two, at least 32, at most cap, covering n when it can
  int t = 32;
  while (t < cap && t < n) t *= 2;
  return t;
}

// ---------------------------------------------------------------------------------------------------------------
// embedding
// ---------------------------------------------------------------------------------------------------------------

// Block (tpr, 256 / tpr): threadIdx.y picks a row, threadIdx.x runs along D.
template <typename T, typename I>
__global__ void embedding_forward_kernel(T* __restrict__ out, const T* __restrict__ w, const I* __restrict__ ids,
                                         int64_t N, int64_t V, int64_t D) {
  pdl_enter();
  for (int64_t i = blockIdx.x * int64_t(blockDim.y) + threadIdx.y; i < N; i += int64_t(gridDim.x) * blockDim.y) {
    const int64_t id = static_cast<int64_t>(ids[i]);
    T* o = out + i * D;
    if (id >= 0 && id < V) {
      const T* src = w + id * D;
      for (int64_t d = threadIdx.x; d < D; d += blockDim.x) o[d] = src[d];
    } else {
      for (int64_t d = threadIdx.x; d < D; d += blockDim.x) o[d] = T(NAN);
    }
  }
}

void embedding_forward(const Tensor& out, const Tensor& weight, const Tensor& ids) {
  GDN_CHECK(out.is_contiguous() && weight.is_contiguous() && ids.is_contiguous(), "embedding: contiguous only");
  GDN_CHECK(weight.dim() == 2, "embedding: weight must be [V, D], got {}", shape_str(weight.shape()));
  const int64_t N = ids.numel(), V = weight.size(0), D = weight.size(1);
  GDN_CHECK(out.numel() == N * D, "embedding: out {} for {} ids of width {}", shape_str(out.shape()), N, D);
  if (N == 0 || D == 0) return;
  const int tpr = threads_for(D, kThreads);
  const dim3 block(tpr, kThreads / tpr);
  const unsigned grid = grid_for(N, kThreads / tpr);
  dispatch_index(ids.dtype(), "cuda embedding", [&](auto itag) {
    using I = decltype(itag);
    dispatch_float(out.dtype(), "cuda embedding", [&](auto tag) {
      using T = decltype(tag);
      launch(embedding_forward_kernel<T, I>, grid, block, 0, out.data<T>(), weight.data<T>(), ids.data<I>(), N, V, D);
    });
  });
}

// keys[i] = ids[i] when in [0, V), else V (sorted past every real row and never looked up); pos[i] = i.
template <typename I>
__global__ void embedding_keys_kernel(uint32_t* __restrict__ keys, int32_t* __restrict__ pos,
                                      const I* __restrict__ ids, int64_t N, int64_t V) {
  pdl_enter();
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < N; i += int64_t(blockDim.x) * gridDim.x) {
    const int64_t id = static_cast<int64_t>(ids[i]);
    keys[i] = static_cast<uint32_t>(id >= 0 && id < V ? id : V);
    pos[i] = static_cast<int32_t>(i);
  }
}

// starts [V + 1]: starts[v] = the first sorted position whose key is >= v, so row v's run is [starts[v],
// starts[v + 1]). Thread k (0 <= k <= N) writes the rows between the previous key and its own, each row once.
__global__ void embedding_starts_kernel(int32_t* __restrict__ starts, const uint32_t* __restrict__ keys, int64_t N,
                                        int64_t V) {
  pdl_enter();
  for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k <= N; k += int64_t(blockDim.x) * gridDim.x) {
    const int64_t prev = k == 0 ? -1 : static_cast<int64_t>(keys[k - 1]);
    const int64_t cur = k == N ? V : static_cast<int64_t>(keys[k]);
    for (int64_t v = prev + 1; v <= cur; ++v) starts[v] = static_cast<int32_t>(k);
  }
}

constexpr int kCols = 4;  // columns per thread of embedding_backward_kernel

// Block (tpr, 256 / tpr): threadIdx.y picks a vocabulary row v, threadIdx.x runs along D.
template <typename T>
__global__ void embedding_backward_kernel(T* __restrict__ dw, const T* __restrict__ dout,
                                          const int32_t* __restrict__ starts, const int32_t* __restrict__ pos,
                                          int64_t V, int64_t D) {
  pdl_enter();
  for (int64_t v = blockIdx.x * int64_t(blockDim.y) + threadIdx.y; v < V; v += int64_t(gridDim.x) * blockDim.y) {
    const int64_t lo = starts[v], hi = starts[v + 1];
    // Each thread keeps kCols columns (blockDim.x apart) in registers, so every position k issues kCols independent
    // loads; each column still adds its rows in position order.
    for (int64_t d0 = threadIdx.x; d0 < D; d0 += int64_t(kCols) * blockDim.x) {
      T acc[kCols];
#pragma unroll
      for (int u = 0; u < kCols; ++u) acc[u] = T(0);
      for (int64_t k = lo; k < hi; ++k) {
        const T* src = dout + static_cast<int64_t>(pos[k]) * D;
#pragma unroll
        for (int u = 0; u < kCols; ++u) {
          const int64_t d = d0 + int64_t(u) * blockDim.x;
          if (d < D) acc[u] += src[d];
        }
      }
#pragma unroll
      for (int u = 0; u < kCols; ++u) {
        const int64_t d = d0 + int64_t(u) * blockDim.x;
        if (d < D) dw[v * D + d] = acc[u];
      }
    }
  }
}

void embedding_backward(const Tensor& dweight, const Tensor& dout, const Tensor& ids) {
  GDN_CHECK(dweight.is_contiguous() && dout.is_contiguous() && ids.is_contiguous(), "embedding: contiguous only");
  GDN_CHECK(dweight.dim() == 2, "embedding_backward: dweight must be [V, D], got {}", shape_str(dweight.shape()));
  const int64_t N = ids.numel(), V = dweight.size(0), D = dweight.size(1);
  GDN_CHECK(dout.numel() == N * D, "embedding_backward: dout {} for {} ids of width {}", shape_str(dout.shape()), N,
            D);
  GDN_CHECK(N < INT32_MAX && V < INT32_MAX, "CUDA embedding_backward: {} ids, {} rows (at most 2^31 - 2)", N, V);
  if (V == 0 || D == 0) return;
  const Device dev = dweight.device();
  cudaStream_t stream = current_stream();

  // Sorted (id, position) pairs; keys take values in [0, V], so only the low bits up to V's width are sorted.
  Tensor keys_sorted = Tensor::empty({std::max<int64_t>(N, 1)}, kInt32, dev);
  Tensor pos_sorted = Tensor::empty({std::max<int64_t>(N, 1)}, kInt32, dev);
  auto* keys_out = reinterpret_cast<uint32_t*>(keys_sorted.data<int32_t>());
  int32_t* pos_out = pos_sorted.data<int32_t>();
  if (N > 0) {
    Tensor keys_in = Tensor::empty({N}, kInt32, dev), pos_in = Tensor::empty({N}, kInt32, dev);
    auto* kin = reinterpret_cast<uint32_t*>(keys_in.data<int32_t>());
    int32_t* pin = pos_in.data<int32_t>();
    dispatch_index(ids.dtype(), "cuda embedding_backward", [&](auto itag) {
      using I = decltype(itag);
      launch(embedding_keys_kernel<I>, grid_for(N), kThreads, 0, kin, pin, ids.data<I>(), N, V);
    });
    int end_bit = 1;
    while (end_bit < 32 && (uint64_t(1) << end_bit) <= static_cast<uint64_t>(V)) ++end_bit;
    const int n = static_cast<int>(N);
    size_t temp_bytes = 0;
    CUDA_CHECK(cub::DeviceRadixSort::SortPairs(nullptr, temp_bytes, kin, keys_out, pin, pos_out, n, 0, end_bit,
                                               stream));
    Tensor temp = Tensor::empty({static_cast<int64_t>((temp_bytes + 7) / 8) + 1}, kInt64, dev);
    CUDA_CHECK(cub::DeviceRadixSort::SortPairs(temp.raw_data(), temp_bytes, kin, keys_out, pin, pos_out, n, 0,
                                               end_bit, stream));
  }

  // Each row's run of sorted positions, then the rows: threads per row enough for kCols columns each, so that a
  // block holds several vocabulary rows.
  Tensor starts = Tensor::empty({V + 1}, kInt32, dev);
  launch(embedding_starts_kernel, grid_for(N + 1), kThreads, 0, starts.data<int32_t>(), keys_out, N, V);
  const int tpr = threads_for((D + kCols - 1) / kCols, kThreads);
  const dim3 block(tpr, kThreads / tpr);
  dispatch_float(dweight.dtype(), "cuda embedding_backward", [&](auto tag) {
    using T = decltype(tag);
    launch(embedding_backward_kernel<T>, grid_for(V, kThreads / tpr), block, 0, dweight.data<T>(), dout.data<T>(),
           starts.data<int32_t>(), pos_out, V, D);
  });
}

// ---------------------------------------------------------------------------------------------------------------
// RMSNorm
// ---------------------------------------------------------------------------------------------------------------

// Rows handled by groups of G threads: G = 32 (a warp per row, kThreads / 32 rows per block) or G = kThreads.
template <int G, typename V> __device__ inline V group_sum(V v, V* scratch) {
  if constexpr (G == 32) return warp_sum(v);
  else return block_sum(v, scratch);
}

// With res (the residual add fused in): s = x + res is written to h and normalised; else s = x (h unused).
template <int G, typename T, typename Y>
__global__ void rms_norm_forward_kernel(Y* __restrict__ y, T* __restrict__ rstd, T* __restrict__ h,
                                        const T* __restrict__ x, const T* __restrict__ res, const T* __restrict__ w,
                                        int64_t N, int64_t D, double eps) {
  pdl_enter();
  __shared__ double scratch[32];
  constexpr int kRows = kThreads / G;
  const int lane = threadIdx.x % G;
  for (int64_t i = blockIdx.x * int64_t(kRows) + threadIdx.x / G; i < N; i += int64_t(gridDim.x) * kRows) {
    const T* row = x + i * D;
    double ss = 0;
    if (res) {
      const T* rr = res + i * D;
      for (int64_t d = lane; d < D; d += G) {
        const T v = row[d] + rr[d];
        h[i * D + d] = v;
        ss += static_cast<double>(v) * v;
      }
    } else {
      for (int64_t d = lane; d < D; d += G) ss += static_cast<double>(row[d]) * row[d];
    }
    ss = group_sum<G>(ss, scratch);
    const T r = static_cast<T>(1.0 / sqrt(ss / D + eps));
    if (lane == 0) rstd[i] = r;
    if (res)  // h read back by the lane that wrote each element
      for (int64_t d = lane; d < D; d += G) y[i * D + d] = out_value<Y>(h[i * D + d] * r * w[d]);
    else
      for (int64_t d = lane; d < D; d += G) y[i * D + d] = out_value<Y>(row[d] * r * w[d]);
  }
}

// The float32 path for D % 4 == 0, D <= 128 * V and 16-byte aligned data (8-byte for a bfloat16 y): a warp per row,
// lane l owns the groups of four columns q = l, l + 32, ... (V of them, those below D / 4), loaded and stored 16 bytes
// at a time (8 for bfloat16 y). All of a row's loads (x and res) are issued into registers before the first use, s
// stays in registers from the row sum to y, and w's groups are loaded once per thread. Each element's arithmetic is
// the kernel's above; the lane's double row sum adds its groups in order, each group's four columns in order.
template <int V, typename Y>
__global__ void rms_norm_forward_rows4_kernel(Y* __restrict__ y, float* __restrict__ rstd, float* __restrict__ h,
                                              const float* __restrict__ x, const float* __restrict__ res,
                                              const float* __restrict__ w, int64_t N, int64_t D, double eps) {
  pdl_enter();
  constexpr int kRows = kThreads / 32;
  const int lane = threadIdx.x & 31;
  const int64_t D4 = D / 4;
  const float4 zero = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
  float4 wv[V];
#pragma unroll
  for (int k = 0; k < V; ++k) wv[k] = lane + 32 * k < D4 ? load4(w, lane + 32 * k) : zero;
  for (int64_t i = blockIdx.x * int64_t(kRows) + threadIdx.x / 32; i < N; i += int64_t(gridDim.x) * kRows) {
    float4 s[V], rv[V];
#pragma unroll
    for (int k = 0; k < V; ++k) {
      const bool in = lane + 32 * k < D4;
      s[k] = in ? load4(x + i * D, lane + 32 * k) : zero;
      rv[k] = res && in ? load4(res + i * D, lane + 32 * k) : zero;
    }
    double ss = 0;
#pragma unroll
    for (int k = 0; k < V; ++k) {
      if (lane + 32 * k >= D4) continue;
      if (res) {
        s[k] = make_float4(s[k].x + rv[k].x, s[k].y + rv[k].y, s[k].z + rv[k].z, s[k].w + rv[k].w);
        store4(h + i * D, lane + 32 * k, s[k]);
      }
      add_dot4(ss, s[k], s[k]);
    }
    ss = warp_sum(ss);
    const float r = static_cast<float>(1.0 / sqrt(ss / D + eps));
    if (lane == 0) rstd[i] = r;
#pragma unroll
    for (int k = 0; k < V; ++k) {
      if (lane + 32 * k >= D4) continue;
      const float4 v = make_float4(s[k].x * r * wv[k].x, s[k].y * r * wv[k].y, s[k].z * r * wv[k].z,
                                   s[k].w * r * wv[k].w);
      store4(y + i * D, lane + 32 * k, v);
    }
  }
}

// With dres: dx + dres (the residual sum's gradient from its other consumers).
template <int G, typename T>
__global__ void rms_norm_dx_kernel(T* __restrict__ dx, const T* __restrict__ dy, const T* __restrict__ dres,
                                   const T* __restrict__ x, const T* __restrict__ w, const T* __restrict__ rstd,
                                   int64_t N, int64_t D) {
  pdl_enter();
  __shared__ double scratch[32];
  constexpr int kRows = kThreads / G;
  const int lane = threadIdx.x % G;
  for (int64_t i = blockIdx.x * int64_t(kRows) + threadIdx.x / G; i < N; i += int64_t(gridDim.x) * kRows) {
    const T r = rstd[i];
    const T* g = dy + i * D;
    const T* xr = x + i * D;
    double dot = 0;
    for (int64_t d = lane; d < D; d += G) dot += static_cast<double>(g[d]) * w[d] * xr[d] * r;
    dot = group_sum<G>(dot, scratch);
    const T mean_dot = static_cast<T>(dot / D);
    for (int64_t d = lane; d < D; d += G) {
      const T xh = xr[d] * r;
      const T v = r * (g[d] * w[d] - xh * mean_dot);
      dx[i * D + d] = dres ? v + dres[i * D + d] : v;
    }
  }
}

// One pass for D <= 32 * C (a warp per row): lane l owns C columns of the row, those below D: l, l + 32, ..., or
// with V4 (float32, D % 4 == 0, 16-byte aligned rows and w) the groups of four columns l, l + 32, ... (C / 4 of them),
// loaded and stored 16 bytes at a time. It keeps its values of a row (dy, x, w, dres) in registers from the dot
// product to dx (all of a row's loads are issued before the first use; w is loaded once per thread, or with V4 with
// each row, from cache, which keeps C = 16 within the launch bounds), and adds its columns' dw terms dy * xh over
// the rows it visits in double. At the end the block adds them warp by warp in order of the warp (shared memory) and
// writes its row of partial [gridDim.x, D]. With dres: dx + dres. The launch bounds hold float32 at 3 blocks per SM
// for C <= 8 (2 for C = 16) without spills.
template <int C, bool V4, typename T>
__global__ void __launch_bounds__(kThreads, sizeof(T) == 4 ? (C <= 8 ? 3 : 2) : 1)
    rms_norm_backward_rows_kernel(T* __restrict__ dx, double* __restrict__ partial, const T* __restrict__ dy,
                                  const T* __restrict__ dres, const T* __restrict__ x, const T* __restrict__ w,
                                  const T* __restrict__ rstd, int64_t N, int64_t D) {
  pdl_enter();
  static_assert(!V4 || (std::is_same_v<T, float> && C % 4 == 0), "the four-column path is float32's");
  constexpr int kRows = kThreads / 32;
  __shared__ double warp_dw[kRows][C * 32];
  const int lane = threadIdx.x & 31;
  // The lane's j-th column; with V4 the (j % 4)-th column of its group j / 4.
  auto col = [lane](int j) -> int64_t { return V4 ? 4 * (lane + 32 * (j / 4)) + j % 4 : lane + 32 * j; };
  T wv[C];
  double acc[C];
#pragma unroll
  for (int j = 0; j < C; ++j) {
    if constexpr (!V4) wv[j] = col(j) < D ? w[col(j)] : T(0);
    acc[j] = 0;
  }
  for (int64_t i = blockIdx.x * int64_t(kRows) + threadIdx.x / 32; i < N; i += int64_t(gridDim.x) * kRows) {
    const T r = rstd[i];
    T g[C], xv[C], rv[C];
    if constexpr (V4) {
      const float4 zero = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
#pragma unroll
      for (int k = 0; k < C / 4; ++k) {
        const int64_t q = lane + 32 * k;
        const bool in = q < D / 4;
        const float4 a = in ? load4(dy + i * D, q) : zero, b = in ? load4(x + i * D, q) : zero;
        const float4 c = dres && in ? load4(dres + i * D, q) : zero, e = in ? load4(w, q) : zero;
        g[4 * k] = a.x, g[4 * k + 1] = a.y, g[4 * k + 2] = a.z, g[4 * k + 3] = a.w;
        xv[4 * k] = b.x, xv[4 * k + 1] = b.y, xv[4 * k + 2] = b.z, xv[4 * k + 3] = b.w;
        rv[4 * k] = c.x, rv[4 * k + 1] = c.y, rv[4 * k + 2] = c.z, rv[4 * k + 3] = c.w;
        wv[4 * k] = e.x, wv[4 * k + 1] = e.y, wv[4 * k + 2] = e.z, wv[4 * k + 3] = e.w;
      }
    } else {
#pragma unroll
      for (int j = 0; j < C; ++j) {
        const int64_t d = col(j);
        g[j] = d < D ? dy[i * D + d] : T(0);
        xv[j] = d < D ? x[i * D + d] : T(0);
        rv[j] = dres && d < D ? dres[i * D + d] : T(0);
      }
    }
    double dot = 0;
#pragma unroll
    for (int j = 0; j < C; ++j) {
      if (col(j) >= D) continue;
      dot += static_cast<double>(g[j]) * wv[j] * xv[j] * r;
      acc[j] += static_cast<double>(g[j]) * xv[j] * r;
    }
    dot = warp_sum(dot);
    const T mean_dot = static_cast<T>(dot / D);
    auto dx_value = [&](int j) {
      const T xh = xv[j] * r;
      const T v = r * (g[j] * wv[j] - xh * mean_dot);
      return dres ? v + rv[j] : v;
    };
    if constexpr (V4) {
#pragma unroll
      for (int k = 0; k < C / 4; ++k)
        if (lane + 32 * k < D / 4)
          store4(dx + i * D, lane + 32 * k,
                 make_float4(dx_value(4 * k), dx_value(4 * k + 1), dx_value(4 * k + 2), dx_value(4 * k + 3)));
    } else {
#pragma unroll
      for (int j = 0; j < C; ++j)
        if (col(j) < D) dx[i * D + col(j)] = dx_value(j);
    }
  }
#pragma unroll
  for (int j = 0; j < C; ++j) warp_dw[threadIdx.x / 32][col(j)] = acc[j];
  __syncthreads();
  for (int64_t d = threadIdx.x; d < D; d += blockDim.x) {
    double total = 0;
    for (int k = 0; k < kRows; ++k) total += warp_dw[k][d];
    partial[blockIdx.x * D + d] = total;
  }
}

constexpr int kColX = 32, kColY = 8;

// Block (32, 8), blockIdx.x: 32 columns, blockIdx.y: split p of the rows. Writes dw (P == 1) or partial [P, D].
template <typename T>
__global__ void rms_norm_dw_kernel(T* __restrict__ dw, double* __restrict__ partial, const T* __restrict__ dy,
                                   const T* __restrict__ x, const T* __restrict__ rstd, int64_t N, int64_t D,
                                   int64_t P) {
  pdl_enter();
  __shared__ double lanes[kColY][kColX];
  const int64_t d = blockIdx.x * int64_t(kColX) + threadIdx.x;
  const int64_t p = blockIdx.y;
  const int64_t chunk = (N + P - 1) / P;
  const int64_t r0 = min(N, p * chunk), r1 = min(N, r0 + chunk);
  double acc = 0;
  if (d < D)
    for (int64_t i = r0 + threadIdx.y; i < r1; i += kColY)
      acc += static_cast<double>(dy[i * D + d]) * x[i * D + d] * rstd[i];
  lanes[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y == 0 && d < D) {
    double total = 0;
    for (int y = 0; y < kColY; ++y) total += lanes[y][threadIdx.x];
    if (partial) partial[p * D + d] = total;
    else dw[d] = static_cast<T>(total);
  }
}

template <typename T>
__global__ void rms_norm_dw_partials_kernel(T* __restrict__ dw, const double* __restrict__ partial, int64_t D,
                                            int64_t P) {
  pdl_enter();
  const int64_t warps = blockDim.x >> 5;
  for (int64_t d = blockIdx.x * warps + (threadIdx.x >> 5); d < D; d += warps * gridDim.x) {
    const double total = warp_column_sum(partial, P, D, d);
    if ((threadIdx.x & 31) == 0) dw[d] = static_cast<T>(total);
  }
}

// The one-pass backward: columns per lane C = 4, 8 or 16 for rows up to 32 * C wide, and its blocks at most (each
// writes one row of double dw partials; at 8 rows per block, 2 rows per warp from N = 8192 on).
constexpr int kRowColsMax = 16;
constexpr int64_t kRowBlocks = 512;

// Calls f(std::integral_constant<int, C>()) with the smallest C of 4, 8, 16 such that D <= 32 * C.
template <typename F> void with_row_cols(int64_t D, F f) {
  if (D <= 128) f(std::integral_constant<int, 4>());
  else if (D <= 256) f(std::integral_constant<int, 8>());
  else f(std::integral_constant<int, kRowColsMax>());
}

// Calls f(std::integral_constant<int, V>()) with the smallest V of 1, 2, 4, 8 such that D <= 128 * V (D <= 1024).
template <typename F> void with_row_groups4(int64_t D, F f) {
  if (D <= 128) f(std::integral_constant<int, 1>());
  else if (D <= 256) f(std::integral_constant<int, 2>());
  else if (D <= 512) f(std::integral_constant<int, 4>());
  else f(std::integral_constant<int, 8>());
}

void rms_norm_forward(const Tensor& y, const Tensor& rstd, const Tensor& h, const Tensor& x, const Tensor& r,
                      const Tensor& w, double eps) {
  GDN_CHECK(x.is_contiguous() && y.is_contiguous() && w.is_contiguous() && rstd.is_contiguous(),
            "rms_norm: contiguous only");
  GDN_CHECK(!r.defined() || (r.is_contiguous() && h.is_contiguous() && r.numel() == x.numel() &&
                             h.numel() == x.numel() && r.dtype() == x.dtype() && h.dtype() == x.dtype()),
            "rms_norm: the residual and the sum must be contiguous, of x's size and dtype");
  const int64_t D = x.size(-1);
  if (D == 0 || x.numel() == 0) return;
  const int64_t N = x.numel() / D;
  GDN_CHECK(w.numel() == D && rstd.numel() == N && y.numel() == x.numel(), "rms_norm: w {} rstd {} for x {}",
            shape_str(w.shape()), shape_str(rstd.shape()), shape_str(x.shape()));
  GDN_CHECK(y.dtype() == x.dtype() || (y.dtype() == kBFloat16 && x.dtype() == kFloat32),
            "rms_norm: a {} output for {} input", y.dtype(), x.dtype());
  dispatch_float(x.dtype(), "cuda rms_norm", [&](auto tag) {
    using T = decltype(tag);
    T* hp = r.defined() ? h.data<T>() : nullptr;
    const T* rp = r.defined() ? r.data<T>() : nullptr;
    with_storage<T>(y, [&](auto* yp) {
      using Y = std::remove_pointer_t<decltype(yp)>;
      if constexpr (std::is_same_v<T, float>) {
        if (D <= 1024 && D % 4 == 0 && aligned4({&x, &y, &w}) && (!r.defined() || aligned4({&r, &h}))) {
          with_row_groups4(D, [&](auto v) {
            launch(rms_norm_forward_rows4_kernel<decltype(v)::value, Y>, grid_for(N, kThreads / 32), kThreads, 0, yp,
                   rstd.data<T>(), hp, x.data<T>(), rp, w.data<T>(), N, D, eps);
          });
          return;
        }
      }
      if (D <= 1024) {
        launch(rms_norm_forward_kernel<32, T, Y>, grid_for(N, kThreads / 32), kThreads, 0, yp, rstd.data<T>(), hp,
               x.data<T>(), rp, w.data<T>(), N, D, eps);
      } else {
        launch(rms_norm_forward_kernel<kThreads, T, Y>, grid_for(N, 1), kThreads, 0, yp, rstd.data<T>(), hp,
               x.data<T>(), rp, w.data<T>(), N, D, eps);
      }
    });
  });
}

void rms_norm_backward(const Tensor& dx, const Tensor& dw, const Tensor& dy, const Tensor& dres, const Tensor& x,
                       const Tensor& w, const Tensor& rstd) {
  GDN_CHECK(dx.is_contiguous() && dy.is_contiguous() && x.is_contiguous() && w.is_contiguous() &&
                dw.is_contiguous() && rstd.is_contiguous(),
            "rms_norm_backward: contiguous only");
  GDN_CHECK(!dres.defined() || (dres.is_contiguous() && dres.numel() == x.numel() && dres.dtype() == x.dtype()),
            "rms_norm_backward: the residual gradient must be contiguous, of x's size and dtype");
  const int64_t D = x.size(-1);
  if (D == 0) return;
  const int64_t N = x.numel() / D;
  GDN_CHECK(w.numel() == D && dw.numel() == D && rstd.numel() == N && dy.numel() == x.numel() &&
                dx.numel() == x.numel(),
            "rms_norm_backward: w {} dw {} rstd {} dy {} for x {}", shape_str(w.shape()), shape_str(dw.shape()),
            shape_str(rstd.shape()), shape_str(dy.shape()), shape_str(x.shape()));
  dispatch_float(x.dtype(), "cuda rms_norm_backward", [&](auto tag) {
    using T = decltype(tag);
    const T* drp = dres.defined() ? dres.data<T>() : nullptr;
    if (D <= 32 * kRowColsMax) {
      // One pass over the rows (also for N = 0: one block writes zero partials), then dw [D] from the P block
      // partials, a warp per column. P depends only on N.
      const unsigned P = grid_for(N, kThreads / 32, kRowBlocks);
      Tensor partial = Tensor::empty({static_cast<int64_t>(P), D}, kFloat64, x.device());
      // Float32 rows go four columns a load and a store where D % 4 == 0 and the rows and w are 16-byte aligned.
      const bool v4 = std::is_same_v<T, float> && D % 4 == 0 && aligned4({&dx, &dy, &x, &w}) &&
                      (!dres.defined() || aligned4({&dres}));
      with_row_cols(D, [&](auto c) {
        constexpr int C = decltype(c)::value;
        auto kernel = rms_norm_backward_rows_kernel<C, false, T>;
        if constexpr (std::is_same_v<T, float>)
          if (v4) kernel = rms_norm_backward_rows_kernel<C, true, T>;
        launch(kernel, P, kThreads, 0, dx.data<T>(), partial.data<double>(), dy.data<T>(), drp, x.data<T>(),
               w.data<T>(), rstd.data<T>(), N, D);
      });
      launch(rms_norm_dw_partials_kernel<T>, grid_for(D * 32), kThreads, 0, dw.data<T>(), partial.data<double>(), D, P);
      return;
    }
    if (N > 0) {
      if (D <= 1024) {
        launch(rms_norm_dx_kernel<32, T>, grid_for(N, kThreads / 32), kThreads, 0, dx.data<T>(), dy.data<T>(), drp,
               x.data<T>(), w.data<T>(), rstd.data<T>(), N, D);
      } else {
        launch(rms_norm_dx_kernel<kThreads, T>, grid_for(N, 1), kThreads, 0, dx.data<T>(), dy.data<T>(), drp,
               x.data<T>(), w.data<T>(), rstd.data<T>(), N, D);
      }
    }
    // dw: about 1024 blocks in all, each split at least 64 rows long (8 per lane: a short chain of loads per
    // thread), at most 256 splits.
    const int64_t gx = (D + kColX - 1) / kColX;
    GDN_CHECK(gx <= INT32_MAX, "CUDA rms_norm_backward: D = {}", D);
    const int64_t P = std::max<int64_t>(1, std::min<int64_t>({(1024 + gx - 1) / gx, (N + 63) / 64, 256}));
    Tensor partial;
    if (P > 1) partial = Tensor::empty({P, D}, kFloat64, x.device());
    double* pp = P > 1 ? partial.data<double>() : nullptr;
    launch(rms_norm_dw_kernel<T>, dim3(static_cast<unsigned>(gx), static_cast<unsigned>(P)), dim3(kColX, kColY), 0,
           dw.data<T>(), pp, dy.data<T>(), x.data<T>(), rstd.data<T>(), N, D, P);
    if (P > 1) {
      launch(rms_norm_dw_partials_kernel<T>, grid_for(D * 32), kThreads, 0, dw.data<T>(), pp, D, P);
    }
  });
}

}  // namespace

void register_nn_kernels(KernelTable& t) {
  t.embedding_forward = embedding_forward;
  t.embedding_backward = embedding_backward;
  t.rms_norm_forward = rms_norm_forward;
  t.rms_norm_backward = rms_norm_backward;
}

}  // namespace gdn::cuda
