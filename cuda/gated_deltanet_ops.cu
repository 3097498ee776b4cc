// cuda/gated_deltanet_ops.cu — CUDA kernels of the small Gated DeltaNet operators: l2norm, gated RMSNorm and the
// decay/write-strength gate; float32 and float64. The gated RMSNorm's z and dz and the gate's a, b, da and db may be
// bfloat16 storage of float32 arithmetic (the layer's in_proj outputs under bf16 products and their gradients: each
// value widened exactly on load, rounded once on store). The causal conv1d is in cuda/causal_conv1d.cu, the delta rule
// elsewhere; the scalar helpers and the column reduction they share are in cuda/gated_deltanet_common.cuh.
//
// Math (glossary H heads, N rows, D row width):
//   l2norm: y = x r, r = 1/sqrt(sum x^2 + eps); dx = r (dy - (dy . y) y).
//   gated RMSNorm: n = x r, r = 1/sqrt(mean x^2 + eps), y = n w silu(z) (y may be bfloat16 for float32 x: the operand
//          of a bf16 GEMM, rounded once);
//          dn = dy w silu(z), dx = r (dn - n mean(dn n)), dz = dy n w silu'(z), dw = sum_rows dy n silu(z).
//   gate:  A = exp(min(A_log, kGateALogMax)), raw = -A softplus(a + dt_bias), g = max(raw, kGateMin) (a NaN stays
//          NaN), beta = sigmoid(b) (the guards: core/dispatch.h, docs/MATH.md "Gates"); where raw is above
//          kGateMin: da = dg (-A) sigmoid(a + dt_bias) and dA_log += dg raw if A_log < kGateALogMax; else da = 0 and
//          nothing is added; ddt_bias = sum da, db = dbeta beta (1 - beta).
//
// Parallel decomposition:
//   * gate forward: one thread per output element, grid-stride, the head index fastest so loads are coalesced.
//   * gate backward: one kernel for da, db and the first pass of dA_log and ddt_bias. A block covers P rows of
//     Hb = min(H, 256) heads per step (P = 256 / Hb; H > 256 heads are tiled over blockIdx.y), a thread one head
//     (consecutive threads consecutive elements), grid-stride over the rows with at most 1024 blocks along them, a
//     number that depends only on N and H. Each thread adds its head's dA_log and ddt_bias terms in double over the
//     rows it visits; the block adds its row lanes' sums by a fixed pairwise tree (shared memory) into its row of a
//     double partial [S, 2H]; pass 2 is the column reduction's (below).
//   * row reductions (l2norm, gated RMSNorm): G lanes per row of D (a warp for D > 64; 16 lanes for D <= 64 and 8
//     for D <= 32, so that a warp works on 2 or 4 rows at once and keeps more loads in flight: the heads' rows are
//     64 wide), grid-stride over rows; the row sums are kept in double like the CPU (lane partials, then shuffles
//     within the group: warp_sum<G>). l2norm of float32 rows with D % 4 == 0 (D <= 16 G) and 16-byte aligned data
//     goes four columns a load and a store, each lane holding its groups of four l, l + G, ... of a row in registers
//     (all of the row's loads issued before the first use); other rows go one element per lane at a time.
//   * gated RMSNorm backward for D <= 128 (at most 4 columns per lane): one kernel for dx, dz and the first pass of
//     dw. Each lane holds its columns' dy, x, z of a row in registers from the row sum to dx (they are read from
//     memory once) and adds its columns' dw terms in double over the rows it visits; the grid (at most 1024 blocks)
//     depends only on N and D. The block adds its groups' sums in order of the group (shared memory) into its row of
//     a double partial [S, D]; pass 2 is the column reduction's (below). Wider rows: the row kernel for dx, dz, then
//     the column reduction for dw.
//   * parameter-gradient sums over rows (gated RMSNorm dw for D > 128; the conv's dweight, dbias): a two-pass column
//     reduction. The sum runs over R rows of a virtual [R, M] matrix of double terms. Pass 1: a block of 32 x 8
//     threads owns 32 columns and one slice of rows; each thread sums every 8th row of the slice, the 8 partials are
//     added in order of threadIdx.y, and the block writes one double per column into partial [S, M]. Pass 2: one warp
//     per column adds the S slice partials (lane-strided, then a fixed butterfly: warp_column_sum) and converts to T.
//     S depends only on the shapes, so two runs give identical bits; no atomics anywhere.
//
// Mirroring the CPU twin (ops/cpu/gated_deltanet_cpu.cpp): the same expressions in the same operand order and
// precision (T for elementwise math, double where the CPU keeps double), the same sigmoid form (branch on the sign)
// and softplus threshold (x > 20). Differences are only in the order of the double sums: the row sums of the norms
// go lane-strided then through a shuffle tree (the CPU adds sequentially), and the parameter-gradient sums go by
// slice or by block (the CPU adds per OpenMP thread); both are double sums rounded to T at the end.
#include <cuda_runtime.h>

#include <algorithm>
#include <type_traits>

#include "cuda/cuda_kernels.h"
#include "cuda/gated_deltanet_common.cuh"
#include "cuda/launch.h"

namespace gdn::cuda {

namespace {

using namespace gdn_common;

// ---------------------------------------------------------------------------------------------------------------
// row-wise norms: G lanes per row of D

// Lanes per row for rows of D: 8, 16 or 32.
inline int row_lanes(int64_t D) { return D <= 32 ? 8 : D <= 64 ? 16 : 32; }

inline unsigned row_grid(int64_t N, int G) { return grid_for(N, kThreads / G); }

// The one-pass gated RMSNorm backward: columns per lane (rows up to kRowCols * G wide: D <= 128), and its blocks at
// most (each writes one row of double dw partials; for N rows of 64 at 16 rows per block, 2 rows per group from
// N = 32768 on).
constexpr int kRowCols = 4;
constexpr int64_t kRowBlocks = 1024;

// Calls f(std::integral_constant<int, G>()) with G = row_lanes(D).
template <typename F>
void with_row_lanes(int64_t D, F f) {
  switch (row_lanes(D)) {
    case 8: f(std::integral_constant<int, 8>()); break;
    case 16: f(std::integral_constant<int, 16>()); break;
    default: f(std::integral_constant<int, 32>());
  }
}

// Calls f(std::integral_constant<int, V>()) with the smallest V of 1, 2, 4 such that D <= 4 * G * V (given
// D <= 16 G): the groups of four columns per lane of the l2norm kernels' float32 paths. V = 1 for G < 32, where
// D <= 4 G (row_lanes).
template <int G, typename F>
void with_row_groups4(int64_t D, F f) {
  if constexpr (G < 32) f(std::integral_constant<int, 1>());
  else if (D <= 4 * G) f(std::integral_constant<int, 1>());
  else if (D <= 8 * G) f(std::integral_constant<int, 2>());
  else f(std::integral_constant<int, 4>());
}

// Loops `row` over the rows of this thread's group of G lanes (grid-stride). The loop runs while the warp's first row
// of the step is below N, the same condition for the whole warp (the shuffles need every lane); `row < N` tells a
// group whether its own row exists.
#define GDN_FOR_EACH_GROUP_ROW(G, row, N)                                                                           \
  for (int64_t row = (blockIdx.x * int64_t(blockDim.x) + threadIdx.x) / (G), first_ = row - (threadIdx.x & 31) / (G); \
       first_ < (N); row += int64_t(blockDim.x) * gridDim.x / (G), first_ += int64_t(blockDim.x) * gridDim.x / (G))

template <int G, typename T>
__global__ void l2norm_forward_kernel(T* y, T* rstd, const T* x, int64_t N, int64_t D, double eps) {
  pdl_enter();
  const int lane = threadIdx.x % G;
  GDN_FOR_EACH_GROUP_ROW(G, i, N) {
    const bool on = i < N;
    const T* xr = x + i * D;
    double ss = 0;
    if (on)
      for (int64_t d = lane; d < D; d += G) ss += static_cast<double>(xr[d]) * xr[d];
    ss = warp_sum<G>(ss);
    if (!on) continue;
    const T r = static_cast<T>(1.0 / sqrt(ss + eps));
    if (lane == 0) rstd[i] = r;
    for (int64_t d = lane; d < D; d += G) y[i * D + d] = xr[d] * r;
  }
}

template <int G, typename T>
__global__ void l2norm_backward_kernel(T* dx, const T* dy, const T* y, const T* rstd, int64_t N, int64_t D) {
  pdl_enter();
  const int lane = threadIdx.x % G;
  GDN_FOR_EACH_GROUP_ROW(G, i, N) {
    const bool on = i < N;
    const T* gr = dy + i * D;
    const T* yr = y + i * D;
    double dot = 0;
    if (on)
      for (int64_t d = lane; d < D; d += G) dot += static_cast<double>(gr[d]) * yr[d];
    const T dt = static_cast<T>(warp_sum<G>(dot));
    if (!on) continue;
    const T r = rstd[i];
    for (int64_t d = lane; d < D; d += G) dx[i * D + d] = r * (gr[d] - dt * yr[d]);
  }
}

// The float32 paths of l2norm for D % 4 == 0, D <= 4 * G * V and 16-byte aligned data: lane l of a row's group owns
// the groups of four columns q = l, l + G, ... (V of them, those below D / 4), loaded and stored 16 bytes at a time.
// All of a row's loads are issued into registers before the first use, and the values stay there from the row sum to
// the output. Each element's arithmetic is the kernels' above; the lane's double row sum adds its groups in order,
// each group's four columns in order.
template <int G, int V>
__global__ void l2norm_forward4_kernel(float* y, float* rstd, const float* x, int64_t N, int64_t D, double eps) {
  pdl_enter();
  const int lane = threadIdx.x % G;
  const int64_t D4 = D / 4;
  GDN_FOR_EACH_GROUP_ROW(G, i, N) {
    const bool on = i < N;
    float4 xv[V];
#pragma unroll
    for (int k = 0; k < V; ++k)
      xv[k] = on && lane + G * k < D4 ? load4(x + i * D, lane + G * k) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    double ss = 0;
#pragma unroll
    for (int k = 0; k < V; ++k) {
      if (lane + G * k >= D4) continue;
      ss += static_cast<double>(xv[k].x) * xv[k].x;
      ss += static_cast<double>(xv[k].y) * xv[k].y;
      ss += static_cast<double>(xv[k].z) * xv[k].z;
      ss += static_cast<double>(xv[k].w) * xv[k].w;
    }
    ss = warp_sum<G>(ss);
    if (!on) continue;
    const float r = static_cast<float>(1.0 / sqrt(ss + eps));
    if (lane == 0) rstd[i] = r;
#pragma unroll
    for (int k = 0; k < V; ++k)
      if (lane + G * k < D4)
        store4(y + i * D, lane + G * k, make_float4(xv[k].x * r, xv[k].y * r, xv[k].z * r, xv[k].w * r));
  }
}

template <int G, int V>
__global__ void l2norm_backward4_kernel(float* dx, const float* dy, const float* y, const float* rstd, int64_t N,
                                        int64_t D) {
  pdl_enter();
  const int lane = threadIdx.x % G;
  const int64_t D4 = D / 4;
  GDN_FOR_EACH_GROUP_ROW(G, i, N) {
    const bool on = i < N;
    const float4 zero = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    float4 gv[V], yv[V];
#pragma unroll
    for (int k = 0; k < V; ++k) {
      const bool in = on && lane + G * k < D4;
      gv[k] = in ? load4(dy + i * D, lane + G * k) : zero;
      yv[k] = in ? load4(y + i * D, lane + G * k) : zero;
    }
    const float r = on ? rstd[i] : 0.0f;
    double dot = 0;
#pragma unroll
    for (int k = 0; k < V; ++k) {
      if (lane + G * k >= D4) continue;
      dot += static_cast<double>(gv[k].x) * yv[k].x;
      dot += static_cast<double>(gv[k].y) * yv[k].y;
      dot += static_cast<double>(gv[k].z) * yv[k].z;
      dot += static_cast<double>(gv[k].w) * yv[k].w;
    }
    const float dt = static_cast<float>(warp_sum<G>(dot));
    if (!on) continue;
#pragma unroll
    for (int k = 0; k < V; ++k) {
      if (lane + G * k >= D4) continue;
      const float4 v = make_float4(r * (gv[k].x - dt * yv[k].x), r * (gv[k].y - dt * yv[k].y),
                                   r * (gv[k].z - dt * yv[k].z), r * (gv[k].w - dt * yv[k].w));
      store4(dx + i * D, lane + G * k, v);
    }
  }
}

template <int G, typename T, typename Y, typename Z>
__global__ void rms_norm_gated_forward_kernel(Y* y, T* rstd, const T* x, const Z* z, const T* w, int64_t N, int64_t D,
                                              double eps) {
  pdl_enter();
  const int lane = threadIdx.x % G;
  GDN_FOR_EACH_GROUP_ROW(G, i, N) {
    const bool on = i < N;
    const T* xr = x + i * D;
    double ss = 0;
    if (on)
      for (int64_t d = lane; d < D; d += G) ss += static_cast<double>(xr[d]) * xr[d];
    ss = warp_sum<G>(ss);
    if (!on) continue;
    const T r = static_cast<T>(1.0 / sqrt(ss / D + eps));
    if (lane == 0) rstd[i] = r;
    for (int64_t d = lane; d < D; d += G) {
      const T zv = in_value<T>(z[i * D + d]);
      y[i * D + d] = out_value<Y>(xr[d] * r * w[d] * zv * sigmoid_of(zv));
    }
  }
}

template <int G, typename T, typename Z>
__global__ void rms_norm_gated_backward_kernel(T* dx, Z* dz, const T* dy, const T* x, const Z* z, const T* w,
                                               const T* rstd, int64_t N, int64_t D) {
  pdl_enter();
  const int lane = threadIdx.x % G;
  GDN_FOR_EACH_GROUP_ROW(G, i, N) {
    const bool on = i < N;
    const T r = on ? rstd[i] : T(0);
    double dot = 0;  // sum dn * n
    if (on)
      for (int64_t d = lane; d < D; d += G) {
        const int64_t k = i * D + d;
        const T zv = in_value<T>(z[k]), s = sigmoid_of(zv), n = x[k] * r;
        const T gy = dy[k];
        dot += static_cast<double>(gy * w[d] * zv * s) * n;
        dz[k] = out_value<Z>(gy * n * w[d] * s * (T(1) + zv * (T(1) - s)));
      }
    const T mean_dot = static_cast<T>(warp_sum<G>(dot) / D);
    if (!on) continue;
    for (int64_t d = lane; d < D; d += G) {
      const int64_t k = i * D + d;
      const T zv = in_value<T>(z[k]), n = x[k] * r;
      const T dn = dy[k] * w[d] * zv * sigmoid_of(zv);
      dx[k] = r * (dn - n * mean_dot);
    }
  }
}

// One pass for D <= kRowCols * G: lane l of a group owns columns l, l + G, ... (kRowCols of them, those below D),
// keeps its values of a row in registers from the first phase (dz, the row sum) to the second (dx), and adds its
// columns' dw terms over the rows it visits in double. At the end the block adds them group by group in order of
// the group (shared memory) and writes its row of partial [gridDim.x, D].
template <int G, typename T, typename Z>
__global__ void rms_norm_gated_backward_rows_kernel(T* dx, Z* dz, double* partial, const T* dy, const T* x,
                                                    const Z* z, const T* w, const T* rstd, int64_t N, int64_t D) {
  pdl_enter();
  constexpr int kGroups = kThreads / G;
  __shared__ double group_dw[kGroups][kRowCols * G];
  const int lane = threadIdx.x % G;
  T wv[kRowCols];
  double acc[kRowCols];
#pragma unroll
  for (int j = 0; j < kRowCols; ++j) {
    wv[j] = lane + j * G < D ? w[lane + j * G] : T(0);
    acc[j] = 0;
  }
  GDN_FOR_EACH_GROUP_ROW(G, i, N) {
    const bool on = i < N;
    const T r = on ? rstd[i] : T(0);
    T gy[kRowCols], xv[kRowCols], zv[kRowCols];
#pragma unroll
    for (int j = 0; j < kRowCols; ++j) {  // the row's loads, all issued ahead of its stores
      const int64_t d = lane + j * G;
      const bool in = on && d < D;
      gy[j] = in ? dy[i * D + d] : T(0);
      xv[j] = in ? x[i * D + d] : T(0);
      zv[j] = in ? in_value<T>(z[i * D + d]) : T(0);
    }
    T dn[kRowCols], nv[kRowCols];
    double dot = 0;  // sum dn * n
#pragma unroll
    for (int j = 0; j < kRowCols; ++j) {
      const int64_t d = lane + j * G;
      const T s = sigmoid_of(zv[j]), n = xv[j] * r;
      dn[j] = gy[j] * wv[j] * zv[j] * s;
      nv[j] = n;
      if (!on || d >= D) continue;
      dot += static_cast<double>(dn[j]) * n;
      dz[i * D + d] = out_value<Z>(gy[j] * n * wv[j] * s * (T(1) + zv[j] * (T(1) - s)));
      acc[j] += static_cast<double>(gy[j] * n * zv[j] * s);
    }
    const T mean_dot = static_cast<T>(warp_sum<G>(dot) / D);
    if (!on) continue;
#pragma unroll
    for (int j = 0; j < kRowCols; ++j)
      if (lane + j * G < D) dx[i * D + lane + j * G] = r * (dn[j] - nv[j] * mean_dot);
  }
#pragma unroll
  for (int j = 0; j < kRowCols; ++j) group_dw[threadIdx.x / G][lane + j * G] = acc[j];
  __syncthreads();
  for (int64_t d = threadIdx.x; d < D; d += blockDim.x) {
    double s = 0;
    for (int g = 0; g < kGroups; ++g) s += group_dw[g][d];
    partial[blockIdx.x * D + d] = s;
  }
}

#undef GDN_FOR_EACH_GROUP_ROW

// dw[d] terms: dy n silu(z) for row r, column d.
template <typename T, typename Z> struct RmsGatedWeightTerm {
  const T *dy, *x;
  const Z* z;
  const T* rstd;
  int64_t D;
  __device__ double operator()(int64_t r, int64_t d) const {
    const int64_t k = r * D + d;
    const T zv = in_value<T>(z[k]), s = sigmoid_of(zv), n = x[k] * rstd[r];
    return static_cast<double>(dy[k] * n * zv * s);
  }
};

template <typename T> struct CastStore {
  T* out;
  __device__ void operator()(int64_t m, double s) const { out[m] = static_cast<T>(s); }
};

void l2norm_forward(const Tensor& y, const Tensor& rstd, const Tensor& x, double eps) {
  GDN_CHECK(y.is_contiguous() && x.is_contiguous(), "l2norm: contiguous only");
  const int64_t D = x.size(-1), N = D > 0 ? x.numel() / D : 0;
  if (N == 0) return;
  dispatch_float(x.dtype(), "cuda l2norm_forward", [&](auto tag_) {
    using T = decltype(tag_);
    with_row_lanes(D, [&](auto g) {
      constexpr int G = decltype(g)::value;
      if constexpr (std::is_same_v<T, float>) {
        if (D % 4 == 0 && D <= 16 * G && aligned4({&y, &x})) {
          with_row_groups4<G>(D, [&](auto v) {
            launch(l2norm_forward4_kernel<G, decltype(v)::value>, row_grid(N, G), kThreads, 0, y.data<T>(),
                   rstd.data<T>(), x.data<T>(), N, D, eps);
          });
          return;
        }
      }
      launch(l2norm_forward_kernel<G, T>, row_grid(N, G), kThreads, 0, y.data<T>(), rstd.data<T>(), x.data<T>(), N, D,
             eps);
    });
  });
}

void l2norm_backward(const Tensor& dx, const Tensor& dy, const Tensor& y, const Tensor& rstd) {
  GDN_CHECK(dx.is_contiguous() && dy.is_contiguous() && y.is_contiguous(), "l2norm_backward: contiguous only");
  const int64_t D = y.size(-1), N = D > 0 ? y.numel() / D : 0;
  if (N == 0) return;
  dispatch_float(y.dtype(), "cuda l2norm_backward", [&](auto tag_) {
    using T = decltype(tag_);
    with_row_lanes(D, [&](auto g) {
      constexpr int G = decltype(g)::value;
      if constexpr (std::is_same_v<T, float>) {
        if (D % 4 == 0 && D <= 16 * G && aligned4({&dx, &dy, &y})) {
          with_row_groups4<G>(D, [&](auto v) {
            launch(l2norm_backward4_kernel<G, decltype(v)::value>, row_grid(N, G), kThreads, 0, dx.data<T>(),
                   dy.data<T>(), y.data<T>(), rstd.data<T>(), N, D);
          });
          return;
        }
      }
      launch(l2norm_backward_kernel<G, T>, row_grid(N, G), kThreads, 0, dx.data<T>(), dy.data<T>(), y.data<T>(),
             rstd.data<T>(), N, D);
    });
  });
}

void rms_norm_gated_forward(const Tensor& y, const Tensor& rstd, const Tensor& x, const Tensor& z, const Tensor& w,
                            double eps) {
  GDN_CHECK(y.is_contiguous() && x.is_contiguous() && z.is_contiguous() && w.is_contiguous(),
            "rms_norm_gated: contiguous only");
  const int64_t D = x.size(-1), N = D > 0 ? x.numel() / D : 0;
  if (N == 0) return;
  GDN_CHECK(y.dtype() == x.dtype() || (y.dtype() == kBFloat16 && x.dtype() == kFloat32),
            "rms_norm_gated: a {} output for {} input", y.dtype(), x.dtype());
  GDN_CHECK(z.dtype() == x.dtype() || (z.dtype() == kBFloat16 && x.dtype() == kFloat32),
            "rms_norm_gated: a {} z for {} x", z.dtype(), x.dtype());
  dispatch_float(x.dtype(), "cuda rms_norm_gated_forward", [&](auto tag_) {
    using T = decltype(tag_);
    with_storage<T>(y, [&](auto* yp) {
      with_storage<T>(z, [&](auto* zp) {
        using Y = std::remove_pointer_t<decltype(yp)>;
        using Z = std::remove_pointer_t<decltype(zp)>;
        with_row_lanes(D, [&](auto g) {
          constexpr int G = decltype(g)::value;
          launch(rms_norm_gated_forward_kernel<G, T, Y, Z>, row_grid(N, G), kThreads, 0, yp, rstd.data<T>(),
                 x.data<T>(), zp, w.data<T>(), N, D, eps);
        });
      });
    });
  });
}

void rms_norm_gated_backward(const Tensor& dx, const Tensor& dz, const Tensor& dw, const Tensor& dy, const Tensor& x,
                             const Tensor& z, const Tensor& w, const Tensor& rstd) {
  GDN_CHECK(dx.is_contiguous() && dz.is_contiguous() && dy.is_contiguous() && x.is_contiguous() &&
                z.is_contiguous() && w.is_contiguous(),
            "rms_norm_gated_backward: contiguous only");
  const int64_t D = x.size(-1), N = D > 0 ? x.numel() / D : 0;
  if (D == 0) return;
  GDN_CHECK(dz.dtype() == z.dtype() && (z.dtype() == x.dtype() || (z.dtype() == kBFloat16 && x.dtype() == kFloat32)),
            "rms_norm_gated_backward: z {} and dz {} for {} x", z.dtype(), dz.dtype(), x.dtype());
  dispatch_float(x.dtype(), "cuda rms_norm_gated_backward", [&](auto tag_) {
    using T = decltype(tag_);
    with_storage<T>(z, [&](auto* zp) {  // z and dz: T, or bfloat16 for float32
      using Z = std::remove_pointer_t<decltype(zp)>;
      Z* dzp = static_cast<Z*>(dz.raw_data());
      if (D <= kRowCols * row_lanes(D)) {
        // One pass over the rows (also for N = 0: one block writes zero partials), then dw [D] from the S block
        // partials, a warp per column (S depends only on N and D).
        with_row_lanes(D, [&](auto g) {
          constexpr int G = decltype(g)::value;
          const unsigned S = grid_for(N, kThreads / G, kRowBlocks);
          Tensor partial = Tensor::empty({static_cast<int64_t>(S), D}, kFloat64, x.device());
          launch(rms_norm_gated_backward_rows_kernel<G, T, Z>, S, kThreads, 0, dx.data<T>(), dzp,
                 partial.data<double>(), dy.data<T>(), x.data<T>(), zp, w.data<T>(), rstd.data<T>(), N, D);
          launch(column_finalize_kernel<CastStore<T>>, grid_for(D * 32), kThreads, 0, partial.data<double>(), S, D,
                 CastStore<T>{dw.data<T>()});
        });
        return;
      }
      // Wider rows: a warp per row for dx and dz, then dw [D] by the two-pass column reduction.
      if (N > 0) {
        launch(rms_norm_gated_backward_kernel<32, T, Z>, row_grid(N, 32), kThreads, 0, dx.data<T>(), dzp, dy.data<T>(),
               x.data<T>(), zp, w.data<T>(), rstd.data<T>(), N, D);
      }
      column_reduce(x.device(), N, D, RmsGatedWeightTerm<T, Z>{dy.data<T>(), x.data<T>(), zp, rstd.data<T>(), D},
                    CastStore<T>{dw.data<T>()});
    });
  });
}

// ---------------------------------------------------------------------------------------------------------------
// gate: rows of H heads, element i has row i / H and head i % H; a, b, da, db are read and written at row * (their
// row stride) + head (column windows of the layer's b | a projection), g, beta, dg, dbeta contiguous. A: the storage
// of a, b, da, db (T, or bfloat16 for T = float: the projection's output under bf16 products, its gradient rounded
// once); everything else is T.

// The row strides of a, b, da, db.
struct GateStrides {
  int64_t a, b, da, db;
};

template <typename T, typename A>
__global__ void gate_forward_kernel(T* g, T* beta, const A* a, const A* b, const T* A_log, const T* dt_bias, int64_t N,
                                    int64_t H, GateStrides st) {
  pdl_enter();
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < N; i += int64_t(blockDim.x) * gridDim.x) {
    const int64_t r = i / H, h = i - r * H;
    g[i] = clamp_gate(raw_gate(A_log[h], in_value<T>(a[r * st.a + h]) + dt_bias[h]).raw);
    beta[i] = sigmoid_of(in_value<T>(b[r * st.b + h]));
  }
}

// The backward of one element whose a + dt_bias is xa: da (0 where g is clamped) and its dA_log term dg raw (0 where
// a guard is active: g clamped, or A_log not below kGateALogMax). The product is not fused into the sum it joins.
template <typename T> struct GateGrad {
  T da;
  double dA_log;
};
template <typename T> __device__ inline GateGrad<T> gate_grad(T dg, T xa, T A_log) {
  const RawGate<T> rg = raw_gate(A_log, xa);
  if (rg.raw < static_cast<T>(kGateMin)) return {T(0), 0.0};
  const double term = A_log < static_cast<T>(kGateALogMax) ? __dmul_rn(static_cast<double>(dg), rg.raw) : 0.0;
  return {dg * (-rg.A) * sigmoid_of(xa), term};
}

// The gate backward's blocks along the rows, at most (each writes one row of double partials).
constexpr int64_t kGateBlocks = 1024;

// The heads of a block of the gate backward (Hb = min(H, kThreads)) and its rows per step (P = kThreads / Hb).
__host__ __device__ inline int gate_block_heads(int64_t H) { return static_cast<int>(H < kThreads ? H : kThreads); }

// da, db, and the partials of dA_log and ddt_bias. Block (x, y) owns heads y * Hb ... (those below H); thread t has
// head y * Hb + t % Hb and row lane t / Hb (of P; threads beyond P * Hb idle), and visits rows t / Hb + P x,
// + P gridDim.x, ... (a block step reads P rows' Hb heads, contiguous in dg and dbeta). Each thread adds its dA_log
// terms and its da values (for bfloat16 da the unrounded T values, as the CPU adds them) in double; the block adds
// its row lanes' sums by a fixed pairwise tree (shared memory) and writes partial[x, h] (dA_log) and
// partial[x, H + h] (ddt_bias) of partial [gridDim.x, 2H].
template <typename T, typename A>
__global__ void gate_backward_kernel(A* da, A* db, double* partial, const T* dg, const T* dbeta, const A* a,
                                     const A* b, const T* A_log, const T* dt_bias, int64_t R, int64_t H,
                                     GateStrides st) {
  pdl_enter();
  __shared__ double sums[2][kThreads];
  const int Hb = gate_block_heads(H), P = kThreads / Hb;
  const int c = threadIdx.x % Hb, lane = threadIdx.x / Hb;
  const int64_t h = blockIdx.y * int64_t(Hb) + c;
  double acc_A = 0, acc_dt = 0;
  if (lane < P && h < H) {
    const T al = A_log[h], dtb = dt_bias[h];
    for (int64_t r = blockIdx.x * int64_t(P) + lane; r < R; r += int64_t(P) * gridDim.x) {
      const int64_t i = r * H + h;
      const GateGrad<T> gr = gate_grad(dg[i], in_value<T>(a[r * st.a + h]) + dtb, al);
      const T s = sigmoid_of(in_value<T>(b[r * st.b + h]));
      da[r * st.da + h] = out_value<A>(gr.da);
      db[r * st.db + h] = out_value<A>(dbeta[i] * s * (T(1) - s));
      acc_A += gr.dA_log;
      acc_dt += static_cast<double>(gr.da);
    }
  }
  sums[0][threadIdx.x] = acc_A;
  sums[1][threadIdx.x] = acc_dt;
  int half = 1;  // the largest power of two below P (1 for P = 1: a step that adds nothing)
  while (2 * half < P) half *= 2;
  for (int step = half; step > 0; step /= 2) {  // row lane l takes in the sums of l + step
    __syncthreads();
    if (lane < step && lane + step < P) {
      sums[0][threadIdx.x] += sums[0][threadIdx.x + step * Hb];
      sums[1][threadIdx.x] += sums[1][threadIdx.x + step * Hb];
    }
  }
  __syncthreads();
  if (lane == 0 && h < H) {
    partial[blockIdx.x * 2 * H + h] = sums[0][c];
    partial[blockIdx.x * 2 * H + H + h] = sums[1][c];
  }
}

template <typename T> struct GateParamStore {
  T *dA_log, *ddt_bias;
  int64_t H;
  __device__ void operator()(int64_t m, double s) const {
    if (m < H)
      dA_log[m] = static_cast<T>(s);
    else
      ddt_bias[m - H] = static_cast<T>(s);
  }
};

void gdn_gate_forward(const Tensor& g, const Tensor& beta, const Tensor& a, const Tensor& b, const Tensor& A_log,
                      const Tensor& dt_bias) {
  GDN_CHECK(g.is_contiguous() && beta.is_contiguous() && A_log.is_contiguous() && dt_bias.is_contiguous(),
            "gdn_gate: g, beta, A_log, dt_bias contiguous only");
  const int64_t H = A_log.numel(), N = a.numel();
  if (N == 0 || H == 0) return;
  GDN_CHECK(b.dtype() == a.dtype(), "gdn_gate: a is {}, b {}", a.dtype(), b.dtype());
  const GateStrides st{a.checked_row_stride("gdn_gate: a"), b.checked_row_stride("gdn_gate: b"), 0, 0};
  dispatch_float(arithmetic_dtype(a.dtype()), "cuda gdn_gate_forward", [&](auto tag_) {
    using T = decltype(tag_);
    with_storage<T>(a, [&](auto* ap) {
      using A = std::remove_pointer_t<decltype(ap)>;
      launch(gate_forward_kernel<T, A>, grid_for(N), kThreads, 0, g.data<T>(), beta.data<T>(), ap,
             static_cast<const A*>(b.raw_data()), A_log.data<T>(), dt_bias.data<T>(), N, H, st);
    });
  });
}

void gdn_gate_backward(const Tensor& da, const Tensor& db, const Tensor& dA_log, const Tensor& ddt_bias,
                       const Tensor& dg, const Tensor& dbeta, const Tensor& a, const Tensor& b, const Tensor& A_log,
                       const Tensor& dt_bias) {
  GDN_CHECK(dg.is_contiguous() && dbeta.is_contiguous(), "gdn_gate_backward: dg, dbeta contiguous only");
  GDN_CHECK(A_log.is_contiguous() && dt_bias.is_contiguous() && dA_log.is_contiguous() && ddt_bias.is_contiguous(),
            "gdn_gate_backward: contiguous only");
  const int64_t H = A_log.numel(), N = a.numel();
  if (H == 0) return;
  const GateStrides st{a.checked_row_stride("gdn_gate_backward: a"), b.checked_row_stride("gdn_gate_backward: b"),
                       da.checked_row_stride("gdn_gate_backward: da"),
                       db.checked_row_stride("gdn_gate_backward: db")};
  GDN_CHECK(b.dtype() == a.dtype() && da.dtype() == a.dtype() && db.dtype() == a.dtype(),
            "gdn_gate_backward: a, b, da, db must be of one dtype, got {}, {}, {}, {}", a.dtype(), b.dtype(),
            da.dtype(), db.dtype());
  // S blocks along the rows (a function of N and H only), ceil(H / Hb) along the heads.
  const int Hb = gate_block_heads(H);
  const int64_t R = N / H, P = kThreads / Hb, heads_y = (H + Hb - 1) / Hb;
  const int64_t S = std::clamp<int64_t>((R + P - 1) / P, 1, std::max<int64_t>(1, kGateBlocks / heads_y));
  Tensor partial = Tensor::empty({S, 2 * H}, kFloat64, a.device());
  dispatch_float(arithmetic_dtype(a.dtype()), "cuda gdn_gate_backward", [&](auto tag_) {
    using T = decltype(tag_);
    with_storage<T>(a, [&](auto* ap) {
      using A = std::remove_pointer_t<decltype(ap)>;
      launch(gate_backward_kernel<T, A>, dim3(static_cast<unsigned>(S), static_cast<unsigned>(heads_y)), kThreads, 0,
             static_cast<A*>(da.raw_data()), static_cast<A*>(db.raw_data()), partial.data<double>(), dg.data<T>(),
             dbeta.data<T>(), ap, static_cast<const A*>(b.raw_data()), A_log.data<T>(), dt_bias.data<T>(), R, H, st);
      // dA_log, ddt_bias [H]: the S block partials of each, a warp per column.
      launch(column_finalize_kernel<GateParamStore<T>>, grid_for(2 * H * 32), kThreads, 0, partial.data<double>(), S,
             2 * H, GateParamStore<T>{dA_log.data<T>(), ddt_bias.data<T>(), H});
    });
  });
}

}  // namespace

void register_gated_deltanet_ops_kernels(KernelTable& t) {
  t.l2norm_forward = l2norm_forward;
  t.l2norm_backward = l2norm_backward;
  t.rms_norm_gated_forward = rms_norm_gated_forward;
  t.rms_norm_gated_backward = rms_norm_gated_backward;
  t.gdn_gate_forward = gdn_gate_forward;
  t.gdn_gate_backward = gdn_gate_backward;
}

}  // namespace gdn::cuda
