// cuda/gated_deltanet_ops.cu — CUDA kernels of the small Gated DeltaNet operators: causal depthwise conv1d, l2norm,
// gated RMSNorm and the decay/write-strength gate; float32 and float64. The delta rule itself is elsewhere.
//
// Math (glossary B batch, T time, C channels, W conv width, H heads, N rows, D row width):
//   conv:  p[t,c] = bias[c] + sum_w weight[c,w] x[t-W+1+w, c], y = silu(p) or p; x before t = 0 comes from
//          initial_state [B,C,W-1] (oldest first) or is 0; final_state [B,C,W-1] = the inputs at T-W+1 .. T-1.
//          Backward: dp = dy s (1 + p (1 - s)) with p recomputed (dp = dy without SiLU),
//          dx[t] = sum_w weight[c,w] dp[t+W-1-w], dinitial_state[j] = sum_w weight[c,w] dp[j-w],
//          dweight[c,w] = sum_{b,t} dp[t] x[t-W+1+w], dbias[c] = sum_{b,t} dp[t].
//   l2norm: y = x r, r = 1/sqrt(sum x^2 + eps); dx = r (dy - (dy . y) y).
//   gated RMSNorm: n = x r, r = 1/sqrt(mean x^2 + eps), y = n w silu(z);
//          dn = dy w silu(z), dx = r (dn - n mean(dn n)), dz = dy n w silu'(z), dw = sum_rows dy n silu(z).
//   gate:  A = exp(min(A_log, kGateALogMax)), raw = -A softplus(a + dt_bias), g = max(raw, kGateMin) (a NaN stays
//          NaN), beta = sigmoid(b) (the guards: core/dispatch.h, docs/MATH.md "Gates"); where raw is above
//          kGateMin: da = dg (-A) sigmoid(a + dt_bias) and dA_log += dg raw if A_log < kGateALogMax; else da = 0 and
//          nothing is added; ddt_bias = sum da, db = dbeta beta (1 - beta).
//
// Parallel decomposition:
//   * elementwise passes (conv forward, conv dp / dx / dinitial_state, final_state, gate forward, gate da / db):
//     one thread per output element, grid-stride, the channel (or head) index fastest so loads are coalesced.
//   * row reductions (l2norm, gated RMSNorm): one warp per row of D, grid-stride over rows; the row sums are kept
//     in double like the CPU (lane partials, then warp shuffles).
//   * parameter-gradient sums over rows (conv dweight / dbias, RMSNorm dw, gate dA_log / ddt_bias): a two-pass
//     column reduction. The sum runs over R rows of a virtual [R, M] matrix of double terms. Pass 1: a block of
//     32 x 8 threads owns 32 columns and one slice of rows; each thread sums every 8th row of the slice, the 8
//     partials are added in order of threadIdx.y, and the block writes one double per column into partial [S, M].
//     Pass 2: one thread per column adds the S slice partials in slice order and converts to T. S depends only on
//     the shapes, so two runs give identical bits; no atomics anywhere.
//
// Mirroring the CPU twin (ops/cpu/gated_deltanet_cpu.cpp): the same expressions in the same operand order and
// precision (T for elementwise math, double where the CPU keeps double), the same sigmoid form (branch on the sign)
// and softplus threshold (x > 20). Differences are only in the order of the double sums: the row sums of the norms
// go lane-strided then through a shuffle tree (the CPU adds sequentially), and the parameter-gradient sums go by
// slice (the CPU adds per OpenMP thread); both are double sums rounded to T at the end. The conv dweight term for a
// position before t = 0 without an initial state is skipped (the CPU adds nothing there either). Without SiLU the
// conv backward reads dy directly instead of a copy of it.
#include <cuda_runtime.h>

#include <algorithm>

#include "cuda/cuda_kernels.h"
#include "cuda/launch.h"

namespace gdn::cuda {

namespace {

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

// store(m, sum) receives the slice partials of column m added in slice order.
template <typename Store> __global__ void column_finalize_kernel(const double* partial, int64_t S, int64_t M, Store store) {
  for (int64_t m = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; m < M; m += int64_t(blockDim.x) * gridDim.x) {
    double s = 0;
    for (int64_t k = 0; k < S; ++k) s += partial[k * M + m];
    store(m, s);
  }
}

template <typename Term, typename Store>
void column_reduce(Device device, int64_t R, int64_t M, const Term& term, const Store& store) {
  if (M == 0) return;
  const ColumnPlan plan = column_plan(R, M);
  Tensor partial = Tensor::empty({plan.slices, M}, kFloat64, device);
  const dim3 grid(static_cast<unsigned>((M + kColTile - 1) / kColTile), static_cast<unsigned>(plan.slices));
  column_partials_kernel<Term><<<grid, dim3(kColTile, kRowLanes), 0, current_stream()>>>(
      partial.data<double>(), R, M, plan.rows_per_slice, term);
  CUDA_CHECK_LAST();
  column_finalize_kernel<Store><<<grid_for(M), kThreads, 0, current_stream()>>>(partial.data<double>(), plan.slices,
                                                                              M, store);
  CUDA_CHECK_LAST();
}

// ---------------------------------------------------------------------------------------------------------------
// causal depthwise conv1d

// The geometry of one conv call, and the input at (b, t, c) for any t >= -(W-1) (initial state or 0 before t=0).
template <typename T> struct ConvGeometry {
  int64_t B, T_, C, W;
  const T* x;     // [B,T,C]
  const T* init;  // [B,C,W-1] or null
  __device__ T input(int64_t b, int64_t t, int64_t c) const {
    if (t >= 0) return x[(b * T_ + t) * C + c];
    return init ? init[(b * C + c) * (W - 1) + (W - 1 + t)] : T(0);
  }
  // p = bias + sum_w weight[c,w] x[t-W+1+w], in the CPU's order (bias first, then w ascending).
  __device__ T preactivation(const T* weight, const T* bias, int64_t b, int64_t t, int64_t c) const {
    T p = bias ? bias[c] : T(0);
    for (int64_t w = 0; w < W; ++w) {
      const int64_t ts = t - (W - 1) + w;
      if (ts >= 0)
        p += weight[c * W + w] * x[(b * T_ + ts) * C + c];
      else if (init)
        p += weight[c * W + w] * input(b, ts, c);
    }
    return p;
  }
};

// y [B,T,C]: one thread per element.
template <typename T>
__global__ void conv_forward_kernel(T* y, ConvGeometry<T> geo, const T* weight, const T* bias, bool silu) {
  const int64_t n = geo.B * geo.T_ * geo.C;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(blockDim.x) * gridDim.x) {
    const int64_t c = i % geo.C, bt = i / geo.C;
    T p = geo.preactivation(weight, bias, bt / geo.T_, bt % geo.T_, c);
    if (silu) p = p * sigmoid_of(p);
    y[i] = p;
  }
}

// final_state [B,C,W-1] = the inputs at T-(W-1)+j, oldest first (from the initial state or 0 when T < W-1).
template <typename T> __global__ void conv_final_state_kernel(T* fs, ConvGeometry<T> geo) {
  const int64_t K = geo.W - 1, n = geo.B * geo.C * K;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(blockDim.x) * gridDim.x) {
    const int64_t j = i % K, bc = i / K;
    fs[i] = geo.input(bc / geo.C, geo.T_ - K + j, bc % geo.C);
  }
}

// dp [B,T,C] = dy * silu'(p), p recomputed.
template <typename T>
__global__ void conv_dp_kernel(T* dp, const T* dy, ConvGeometry<T> geo, const T* weight, const T* bias) {
  const int64_t n = geo.B * geo.T_ * geo.C;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(blockDim.x) * gridDim.x) {
    const int64_t c = i % geo.C, bt = i / geo.C;
    const T p = geo.preactivation(weight, bias, bt / geo.T_, bt % geo.T_, c), s = sigmoid_of(p);
    dp[i] = dy[i] * s * (T(1) + p * (T(1) - s));
  }
}

// dx [B,T,C]: dx[t] = sum_w weight[c,w] dp[t+W-1-w] over outputs inside [0, T).
template <typename T>
__global__ void conv_dx_kernel(T* dx, const T* dp, const T* weight, int64_t B, int64_t T_, int64_t C, int64_t W) {
  const int64_t n = B * T_ * C;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(blockDim.x) * gridDim.x) {
    const int64_t c = i % C, bt = i / C, b = bt / T_, t = bt % T_;
    T s = T(0);
    for (int64_t w = 0; w < W; ++w) {
      const int64_t to = t + W - 1 - w;
      if (to < T_) s += weight[c * W + w] * dp[(b * T_ + to) * C + c];
    }
    dx[i] = s;
  }
}

// dinitial_state [B,C,W-1]: the input at j-(W-1) < 0 feeds the outputs to = j-w in [0, T).
template <typename T>
__global__ void conv_dinit_kernel(T* di, const T* dp, const T* weight, int64_t B, int64_t T_, int64_t C, int64_t W) {
  const int64_t K = W - 1, n = B * C * K;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(blockDim.x) * gridDim.x) {
    const int64_t j = i % K, bc = i / K, b = bc / C, c = bc % C;
    T s = T(0);
    for (int64_t w = 0; w < W; ++w) {
      const int64_t to = j - w;
      if (to >= 0 && to < T_) s += weight[c * W + w] * dp[(b * T_ + to) * C + c];
    }
    di[i] = s;
  }
}

// Column m < W*C is (w = m / C, c = m % C): dp[r,c] x[t-W+1+w, c]; column W*C + c is dbias's dp[r,c]. r = b*T + t.
template <typename T> struct ConvWeightTerm {
  ConvGeometry<T> geo;
  const T* dp;
  __device__ double operator()(int64_t r, int64_t m) const {
    const int64_t C = geo.C, w = m / C, c = m % C;
    const double d = static_cast<double>(dp[r * C + c]);
    if (w == geo.W) return d;
    const int64_t b = r / geo.T_, t = r % geo.T_, ts = t - (geo.W - 1) + w;
    if (ts >= 0) return d * static_cast<double>(geo.x[(r - (geo.W - 1) + w) * C + c]);
    return geo.init ? d * static_cast<double>(geo.input(b, ts, c)) : 0.0;
  }
};

template <typename T> struct ConvWeightStore {
  T* dweight;  // [C,W]
  T* dbias;    // [C] or null
  int64_t C, W;
  __device__ void operator()(int64_t m, double s) const {
    const int64_t w = m / C, c = m % C;
    if (w < W)
      dweight[c * W + w] = static_cast<T>(s);
    else
      dbias[c] = static_cast<T>(s);
  }
};

void causal_conv1d_forward(const Tensor& y, const Tensor& final_state, const Tensor& x, const Tensor& weight,
                           const Tensor& bias, const Tensor& initial_state, bool silu) {
  GDN_CHECK(y.is_contiguous() && x.is_contiguous() && weight.is_contiguous(), "causal_conv1d: contiguous only");
  const int64_t B = x.size(0), T_ = x.size(1), C = x.size(2), W = weight.size(1);
  dispatch_float(x.dtype(), "cuda causal_conv1d_forward", [&](auto tag_) {
    using T = decltype(tag_);
    const ConvGeometry<T> geo{B, T_, C, W, x.data<T>(), initial_state.defined() ? initial_state.data<T>() : nullptr};
    const T* bp = bias.defined() ? bias.data<T>() : nullptr;
    if (B * T_ * C > 0) {
      conv_forward_kernel<T><<<grid_for(B * T_ * C), kThreads, 0, current_stream()>>>(y.data<T>(), geo,
                                                                                      weight.data<T>(), bp, silu);
      CUDA_CHECK_LAST();
    }
    if (final_state.defined() && B * C * (W - 1) > 0) {
      conv_final_state_kernel<T><<<grid_for(B * C * (W - 1)), kThreads, 0, current_stream()>>>(
          final_state.data<T>(), geo);
      CUDA_CHECK_LAST();
    }
  });
}

void causal_conv1d_backward(const Tensor& dx, const Tensor& dweight, const Tensor& dbias,
                            const Tensor& dinitial_state, const Tensor& dy, const Tensor& x, const Tensor& weight,
                            const Tensor& bias, const Tensor& initial_state, bool silu) {
  GDN_CHECK(dx.is_contiguous() && dy.is_contiguous() && x.is_contiguous() && weight.is_contiguous(),
            "causal_conv1d_backward: contiguous only");
  const int64_t B = x.size(0), T_ = x.size(1), C = x.size(2), W = weight.size(1);
  dispatch_float(x.dtype(), "cuda causal_conv1d_backward", [&](auto tag_) {
    using T = decltype(tag_);
    const ConvGeometry<T> geo{B, T_, C, W, x.data<T>(), initial_state.defined() ? initial_state.data<T>() : nullptr};
    const T* wp = weight.data<T>();
    const T* bp = bias.defined() ? bias.data<T>() : nullptr;
    const int64_t n = B * T_ * C;

    // dp = dy * act'(p); without SiLU dp is dy itself.
    Tensor dp_buf;
    const T* dp = dy.data<T>();
    if (silu && n > 0) {
      dp_buf = Tensor::empty({B, T_, C}, x.dtype(), x.device());
      conv_dp_kernel<T><<<grid_for(n), kThreads, 0, current_stream()>>>(dp_buf.data<T>(), dy.data<T>(), geo, wp, bp);
      CUDA_CHECK_LAST();
      dp = dp_buf.data<T>();
    }
    if (n > 0) {
      conv_dx_kernel<T><<<grid_for(n), kThreads, 0, current_stream()>>>(dx.data<T>(), dp, wp, B, T_, C, W);
      CUDA_CHECK_LAST();
    }
    if (dinitial_state.defined() && B * C * (W - 1) > 0) {
      conv_dinit_kernel<T><<<grid_for(B * C * (W - 1)), kThreads, 0, current_stream()>>>(
          dinitial_state.data<T>(), dp, wp, B, T_, C, W);
      CUDA_CHECK_LAST();
    }
    // dweight [C,W] and dbias [C]: sums over the B*T rows, in double.
    const int64_t M = (W + (dbias.defined() ? 1 : 0)) * C;
    column_reduce(x.device(), B * T_, M, ConvWeightTerm<T>{geo, dp},
                  ConvWeightStore<T>{dweight.data<T>(), dbias.defined() ? dbias.data<T>() : nullptr, C, W});
  });
}

// ---------------------------------------------------------------------------------------------------------------
// row-wise norms: one warp per row of D

constexpr int kWarpsPerBlock = kThreads / 32;

inline unsigned row_grid(int64_t N) { return grid_for(N, kWarpsPerBlock); }

// Loops `row` over this warp's rows (grid-stride); the loop condition is the same for the whole warp.
#define GDN_FOR_EACH_WARP_ROW(row, N)                                                                              \
  for (int64_t row = (blockIdx.x * int64_t(blockDim.x) + threadIdx.x) / 32; row < (N);                            \
       row += int64_t(blockDim.x) * gridDim.x / 32)

template <typename T> __global__ void l2norm_forward_kernel(T* y, T* rstd, const T* x, int64_t N, int64_t D, double eps) {
  const int lane = threadIdx.x & 31;
  GDN_FOR_EACH_WARP_ROW(i, N) {
    const T* xr = x + i * D;
    double ss = 0;
    for (int64_t d = lane; d < D; d += 32) ss += static_cast<double>(xr[d]) * xr[d];
    ss = warp_sum(ss);
    const T r = static_cast<T>(1.0 / sqrt(ss + eps));
    if (lane == 0) rstd[i] = r;
    for (int64_t d = lane; d < D; d += 32) y[i * D + d] = xr[d] * r;
  }
}

template <typename T>
__global__ void l2norm_backward_kernel(T* dx, const T* dy, const T* y, const T* rstd, int64_t N, int64_t D) {
  const int lane = threadIdx.x & 31;
  GDN_FOR_EACH_WARP_ROW(i, N) {
    const T* gr = dy + i * D;
    const T* yr = y + i * D;
    double dot = 0;
    for (int64_t d = lane; d < D; d += 32) dot += static_cast<double>(gr[d]) * yr[d];
    const T dt = static_cast<T>(warp_sum(dot));
    const T r = rstd[i];
    for (int64_t d = lane; d < D; d += 32) dx[i * D + d] = r * (gr[d] - dt * yr[d]);
  }
}

template <typename T>
__global__ void rms_norm_gated_forward_kernel(T* y, T* rstd, const T* x, const T* z, const T* w, int64_t N, int64_t D,
                                              double eps) {
  const int lane = threadIdx.x & 31;
  GDN_FOR_EACH_WARP_ROW(i, N) {
    const T* xr = x + i * D;
    double ss = 0;
    for (int64_t d = lane; d < D; d += 32) ss += static_cast<double>(xr[d]) * xr[d];
    ss = warp_sum(ss);
    const T r = static_cast<T>(1.0 / sqrt(ss / D + eps));
    if (lane == 0) rstd[i] = r;
    for (int64_t d = lane; d < D; d += 32) {
      const T zv = z[i * D + d];
      y[i * D + d] = xr[d] * r * w[d] * zv * sigmoid_of(zv);
    }
  }
}

template <typename T>
__global__ void rms_norm_gated_backward_kernel(T* dx, T* dz, const T* dy, const T* x, const T* z, const T* w,
                                               const T* rstd, int64_t N, int64_t D) {
  const int lane = threadIdx.x & 31;
  GDN_FOR_EACH_WARP_ROW(i, N) {
    const T r = rstd[i];
    double dot = 0;  // sum dn * n
    for (int64_t d = lane; d < D; d += 32) {
      const int64_t k = i * D + d;
      const T zv = z[k], s = sigmoid_of(zv), n = x[k] * r;
      const T gy = dy[k];
      dot += static_cast<double>(gy * w[d] * zv * s) * n;
      dz[k] = gy * n * w[d] * s * (T(1) + zv * (T(1) - s));
    }
    const T mean_dot = static_cast<T>(warp_sum(dot) / D);
    for (int64_t d = lane; d < D; d += 32) {
      const int64_t k = i * D + d;
      const T zv = z[k], n = x[k] * r;
      const T dn = dy[k] * w[d] * zv * sigmoid_of(zv);
      dx[k] = r * (dn - n * mean_dot);
    }
  }
}

#undef GDN_FOR_EACH_WARP_ROW

// dw[d] terms: dy n silu(z) for row r, column d.
template <typename T> struct RmsGatedWeightTerm {
  const T *dy, *x, *z, *rstd;
  int64_t D;
  __device__ double operator()(int64_t r, int64_t d) const {
    const int64_t k = r * D + d;
    const T zv = z[k], s = sigmoid_of(zv), n = x[k] * rstd[r];
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
    l2norm_forward_kernel<T><<<row_grid(N), kThreads, 0, current_stream()>>>(y.data<T>(), rstd.data<T>(),
                                                                              x.data<T>(), N, D, eps);
    CUDA_CHECK_LAST();
  });
}

void l2norm_backward(const Tensor& dx, const Tensor& dy, const Tensor& y, const Tensor& rstd) {
  GDN_CHECK(dx.is_contiguous() && dy.is_contiguous() && y.is_contiguous(), "l2norm_backward: contiguous only");
  const int64_t D = y.size(-1), N = D > 0 ? y.numel() / D : 0;
  if (N == 0) return;
  dispatch_float(y.dtype(), "cuda l2norm_backward", [&](auto tag_) {
    using T = decltype(tag_);
    l2norm_backward_kernel<T><<<row_grid(N), kThreads, 0, current_stream()>>>(dx.data<T>(), dy.data<T>(),
                                                                               y.data<T>(), rstd.data<T>(), N, D);
    CUDA_CHECK_LAST();
  });
}

void rms_norm_gated_forward(const Tensor& y, const Tensor& rstd, const Tensor& x, const Tensor& z, const Tensor& w,
                            double eps) {
  GDN_CHECK(y.is_contiguous() && x.is_contiguous() && z.is_contiguous() && w.is_contiguous(),
            "rms_norm_gated: contiguous only");
  const int64_t D = x.size(-1), N = D > 0 ? x.numel() / D : 0;
  if (N == 0) return;
  dispatch_float(x.dtype(), "cuda rms_norm_gated_forward", [&](auto tag_) {
    using T = decltype(tag_);
    rms_norm_gated_forward_kernel<T><<<row_grid(N), kThreads, 0, current_stream()>>>(
        y.data<T>(), rstd.data<T>(), x.data<T>(), z.data<T>(), w.data<T>(), N, D, eps);
    CUDA_CHECK_LAST();
  });
}

void rms_norm_gated_backward(const Tensor& dx, const Tensor& dz, const Tensor& dw, const Tensor& dy, const Tensor& x,
                             const Tensor& z, const Tensor& w, const Tensor& rstd) {
  GDN_CHECK(dx.is_contiguous() && dz.is_contiguous() && dy.is_contiguous() && x.is_contiguous() &&
                z.is_contiguous() && w.is_contiguous(),
            "rms_norm_gated_backward: contiguous only");
  const int64_t D = x.size(-1), N = D > 0 ? x.numel() / D : 0;
  dispatch_float(x.dtype(), "cuda rms_norm_gated_backward", [&](auto tag_) {
    using T = decltype(tag_);
    if (N > 0) {
      rms_norm_gated_backward_kernel<T><<<row_grid(N), kThreads, 0, current_stream()>>>(
          dx.data<T>(), dz.data<T>(), dy.data<T>(), x.data<T>(), z.data<T>(), w.data<T>(), rstd.data<T>(), N, D);
      CUDA_CHECK_LAST();
    }
    // dw [D]: sums over the N rows, in double.
    column_reduce(x.device(), N, D, RmsGatedWeightTerm<T>{dy.data<T>(), x.data<T>(), z.data<T>(), rstd.data<T>(), D},
                  CastStore<T>{dw.data<T>()});
  });
}

// ---------------------------------------------------------------------------------------------------------------
// gate: rows of H heads, element i has head i % H

template <typename T>
__global__ void gate_forward_kernel(T* g, T* beta, const T* a, const T* b, const T* A_log, const T* dt_bias, int64_t N,
                                    int64_t H) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < N; i += int64_t(blockDim.x) * gridDim.x) {
    const int64_t h = i % H;
    g[i] = clamp_gate(raw_gate(A_log[h], a[i] + dt_bias[h]).raw);
    beta[i] = sigmoid_of(b[i]);
  }
}

template <typename T>
__global__ void gate_backward_kernel(T* da, T* db, const T* dg, const T* dbeta, const T* a, const T* b,
                                     const T* A_log, const T* dt_bias, int64_t N, int64_t H) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < N; i += int64_t(blockDim.x) * gridDim.x) {
    const int64_t h = i % H;
    const T xa = a[i] + dt_bias[h];
    const RawGate<T> rg = raw_gate(A_log[h], xa);
    da[i] = rg.raw < static_cast<T>(kGateMin) ? T(0) : dg[i] * (-rg.A) * sigmoid_of(xa);
    const T s = sigmoid_of(b[i]);
    db[i] = dbeta[i] * s * (T(1) - s);
  }
}

// Columns 0..H-1: dA_log terms dg * raw where no guard is active (0 elsewhere); columns H..2H-1: ddt_bias terms, the
// da values already written. Row r = b*T + t.
template <typename T> struct GateParamTerm {
  const T *dg, *da, *a, *A_log, *dt_bias;
  int64_t H;
  __device__ double operator()(int64_t r, int64_t m) const {
    if (m >= H) return static_cast<double>(da[r * H + (m - H)]);
    const int64_t i = r * H + m;
    const RawGate<T> rg = raw_gate(A_log[m], a[i] + dt_bias[m]);
    if (rg.raw < static_cast<T>(kGateMin) || !(A_log[m] < static_cast<T>(kGateALogMax))) return 0.0;
    return static_cast<double>(dg[i]) * rg.raw;
  }
};

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
  GDN_CHECK(g.is_contiguous() && beta.is_contiguous() && a.is_contiguous() && b.is_contiguous() &&
                A_log.is_contiguous() && dt_bias.is_contiguous(),
            "gdn_gate: contiguous only");
  const int64_t H = A_log.numel(), N = a.numel();
  if (N == 0 || H == 0) return;
  dispatch_float(a.dtype(), "cuda gdn_gate_forward", [&](auto tag_) {
    using T = decltype(tag_);
    gate_forward_kernel<T><<<grid_for(N), kThreads, 0, current_stream()>>>(
        g.data<T>(), beta.data<T>(), a.data<T>(), b.data<T>(), A_log.data<T>(), dt_bias.data<T>(), N, H);
    CUDA_CHECK_LAST();
  });
}

void gdn_gate_backward(const Tensor& da, const Tensor& db, const Tensor& dA_log, const Tensor& ddt_bias,
                       const Tensor& dg, const Tensor& dbeta, const Tensor& a, const Tensor& b, const Tensor& A_log,
                       const Tensor& dt_bias) {
  GDN_CHECK(da.is_contiguous() && db.is_contiguous() && dg.is_contiguous() && dbeta.is_contiguous() &&
                a.is_contiguous() && b.is_contiguous(),
            "gdn_gate_backward: contiguous only");
  GDN_CHECK(A_log.is_contiguous() && dt_bias.is_contiguous() && dA_log.is_contiguous() && ddt_bias.is_contiguous(),
            "gdn_gate_backward: contiguous only");
  const int64_t H = A_log.numel(), N = a.numel();
  if (H == 0) return;
  dispatch_float(a.dtype(), "cuda gdn_gate_backward", [&](auto tag_) {
    using T = decltype(tag_);
    if (N > 0) {
      gate_backward_kernel<T><<<grid_for(N), kThreads, 0, current_stream()>>>(
          da.data<T>(), db.data<T>(), dg.data<T>(), dbeta.data<T>(), a.data<T>(), b.data<T>(), A_log.data<T>(),
          dt_bias.data<T>(), N, H);
      CUDA_CHECK_LAST();
    }
    // dA_log, ddt_bias [H]: sums over the N / H rows, in double.
    column_reduce(a.device(), N / H, 2 * H,
                  GateParamTerm<T>{dg.data<T>(), da.data<T>(), a.data<T>(), A_log.data<T>(), dt_bias.data<T>(), H},
                  GateParamStore<T>{dA_log.data<T>(), ddt_bias.data<T>(), H});
  });
}

}  // namespace

void register_gated_deltanet_ops_kernels(KernelTable& t) {
  t.causal_conv1d_forward = causal_conv1d_forward;
  t.causal_conv1d_backward = causal_conv1d_backward;
  t.l2norm_forward = l2norm_forward;
  t.l2norm_backward = l2norm_backward;
  t.rms_norm_gated_forward = rms_norm_gated_forward;
  t.rms_norm_gated_backward = rms_norm_gated_backward;
  t.gdn_gate_forward = gdn_gate_forward;
  t.gdn_gate_backward = gdn_gate_backward;
}

}  // namespace gdn::cuda
