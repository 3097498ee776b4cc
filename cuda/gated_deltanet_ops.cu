// cuda/gated_deltanet_ops.cu — CUDA kernels of the small Gated DeltaNet operators: l2norm and gated RMSNorm; float32
// and float64. The gated RMSNorm's z and dz may be bfloat16 storage of float32 arithmetic (the layer's in_proj output
// under bf16 products and its gradient: each value widened exactly on load, rounded once on store). The gate is in
// cuda/gdn_gate.cu, the causal conv1d in cuda/causal_conv1d.cu, the delta rule elsewhere; the scalar helpers and the
// column reduction they share are in cuda/gated_deltanet_common.cuh.
//
// Math (glossary N rows, D row width):
//   l2norm: y = x r, r = 1/sqrt(sum x^2 + eps); dx = r (dy - (dy . y) y).
//   gated RMSNorm: n = x r, r = 1/sqrt(mean x^2 + eps), y = n w silu(z) (y may be bfloat16 for float32 x: the operand
//          of a bf16 GEMM, rounded once);
//          dn = dy w silu(z), dx = r (dn - n mean(dn n)), dz = dy n w silu'(z), dw = sum_rows dy n silu(z).
//
// Parallel decomposition:
//   * row reductions (l2norm, gated RMSNorm): G lanes per row of D (a warp for D > 64; 16 lanes for D <= 64 and 8
//     for D <= 32, so that a warp works on 2 or 4 rows at once and keeps more loads in flight: the heads' rows are
//     64 wide), grid-stride over rows; the row sums are kept in double like the CPU (lane partials, then shuffles
//     within the group: warp_sum<G>). l2norm of float32 rows with D % 4 == 0 (D <= 16 G) and 16-byte aligned data
//     goes four columns a load and a store, each lane holding its groups of four l, l + G, ... of a row in registers
//     (all of the row's loads issued before the first use); other rows go one element per lane at a time.
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
      add_dot4(ss, xv[k], xv[k]);
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
      add_dot4(dot, gv[k], yv[k]);
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

}  // namespace

void register_gated_deltanet_ops_kernels(KernelTable& t) {
  t.l2norm_forward = l2norm_forward;
  t.l2norm_backward = l2norm_backward;
  t.rms_norm_gated_forward = rms_norm_gated_forward;
  t.rms_norm_gated_backward = rms_norm_gated_backward;
}

}  // namespace gdn::cuda
