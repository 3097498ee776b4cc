// cuda/causal_conv1d.cu — CUDA twin of the causal depthwise conv1d of ops/cpu/gated_deltanet_cpu.cpp (forward and
// backward, float32 and float64).
//
// Math (B batch, T time, C channels, W conv width): p[t,c] = bias[c] + sum_w weight[c,w] x[t-W+1+w, c], y = silu(p)
// or p; x before t = 0 comes from initial_state [B,C,W-1] (oldest first) or is 0; final_state [B,C,W-1] = the inputs
// at T-W+1 .. T-1. Backward: dp = dy s (1 + p (1 - s)) with p recomputed (dp = dy without SiLU),
// dx[t] = sum_w weight[c,w] dp[t+W-1-w], dinitial_state[j] = sum_w weight[c,w] dp[j-w],
// dweight[c,w] = sum_{b,t} dp[t] x[t-W+1+w], dbias[c] = sum_{b,t} dp[t].
//
// Parallel decomposition: the forward, dp and dx are a thread per channel and a run of 4 time steps (grid
// (channel blocks, time blocks, B): no index division), final_state and dinitial_state one thread per output
// element, grid-stride; the channel is fastest so loads are coalesced. dweight and dbias (W <= kConvMaxW): two
// passes; a block of 32 channels x 8 lanes owns a slice of rows, each lane a run of consecutive rows along which it
// slides its window of W inputs (one load per row) and adds all W taps and the bias in double; lanes are added in
// lane order, then the slices by a warp per column in a fixed order (warp_column_sum; the slice count depends only
// on the shapes: the same bits every run, no atomics). Wider kernels use the generic column reduction of
// cuda/gated_deltanet_common.cuh. The double sums differ from the CPU's (per OpenMP thread) only in their order; a
// dweight term before t = 0 without an initial state is 0 (the CPU adds nothing there either). Without SiLU the
// backward reads dy directly instead of a copy of it.
#include <cuda_runtime.h>

#include <algorithm>

#include "cuda/cuda_kernels.h"
#include "cuda/gated_deltanet_common.cuh"
#include "cuda/launch.h"

namespace gdn::cuda {

namespace {

using namespace gdn_common;

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

// The forward, dp and dx kernels: grid (ceil(C / threads), ceil(T / kConvRows), B), a thread per channel and a run
// of kConvRows time steps (no index division; the channel fastest, so every load and store is coalesced).
constexpr int64_t kConvRows = 4;

struct ConvRows {
  int64_t b, c, t0, t1;  // batch row, channel, time steps [t0, t1); c < 0: no channel for this thread
};
__device__ inline ConvRows conv_rows(int64_t C, int64_t T_) {
  const int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x, t0 = blockIdx.y * kConvRows;
  return {blockIdx.z, c < C ? c : -1, t0, min(T_, t0 + kConvRows)};
}

// y [B,T,C].
template <typename T>
__global__ void conv_forward_kernel(T* y, ConvGeometry<T> geo, const T* weight, const T* bias, bool silu) {
  const ConvRows r = conv_rows(geo.C, geo.T_);
  if (r.c < 0) return;
  for (int64_t t = r.t0; t < r.t1; ++t) {
    T p = geo.preactivation(weight, bias, r.b, t, r.c);
    if (silu) p = p * sigmoid_of(p);
    y[(r.b * geo.T_ + t) * geo.C + r.c] = p;
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
  const ConvRows r = conv_rows(geo.C, geo.T_);
  if (r.c < 0) return;
  for (int64_t t = r.t0; t < r.t1; ++t) {
    const int64_t i = (r.b * geo.T_ + t) * geo.C + r.c;
    const T p = geo.preactivation(weight, bias, r.b, t, r.c), s = sigmoid_of(p);
    dp[i] = dy[i] * s * (T(1) + p * (T(1) - s));
  }
}

// dx [B,T,C]: dx[t] = sum_w weight[c,w] dp[t+W-1-w] over outputs inside [0, T).
template <typename T>
__global__ void conv_dx_kernel(T* dx, const T* dp, const T* weight, int64_t T_, int64_t C, int64_t W) {
  const ConvRows r = conv_rows(C, T_);
  if (r.c < 0) return;
  for (int64_t t = r.t0; t < r.t1; ++t) {
    T s = T(0);
    for (int64_t w = 0; w < W; ++w) {
      const int64_t to = t + W - 1 - w;
      if (to < T_) s += weight[r.c * W + w] * dp[(r.b * T_ + to) * C + r.c];
    }
    dx[(r.b * T_ + t) * C + r.c] = s;
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

// dweight [C,W] and dbias [C] for W <= kConvMaxW, deterministic in two passes like column_reduce, but a thread owns a
// channel and a run of consecutive rows, so it slides the window of its W inputs along the rows (one new load per
// row) and adds all W taps and the bias at once, in double; no index division per term. Block (kColTile channels,
// kRowLanes lanes); lane y of slice s takes rows [s*rps + y*lr, min(.., +lr)) with lr = ceil(rps / kRowLanes).
// partial [S, W+1, C]: lanes added in lane order; conv_weight_finalize_kernel adds the slices, a warp per column.
constexpr int kConvMaxW = 8;

template <typename T>
__global__ void conv_weight_partials_kernel(double* partial, ConvGeometry<T> geo, const T* dp, int64_t rows_per_slice) {
  __shared__ double lanes[kRowLanes][kConvMaxW + 1][kColTile];
  const int64_t C = geo.C, W = geo.W, R = geo.B * geo.T_;
  const int64_t c = blockIdx.x * int64_t(kColTile) + threadIdx.x;
  const int64_t lane_rows = (rows_per_slice + kRowLanes - 1) / kRowLanes;
  const int64_t begin = blockIdx.y * rows_per_slice + threadIdx.y * lane_rows;
  const int64_t end = std::min<int64_t>(std::min<int64_t>(R, (blockIdx.y + int64_t(1)) * rows_per_slice), begin + lane_rows);
  double acc[kConvMaxW + 1];
#pragma unroll
  for (int w = 0; w <= kConvMaxW; ++w) acc[w] = 0;
  if (c < C && begin < end) {
    T win[kConvMaxW];  // win[w] = input at t - (W-1) + w
    int64_t b = begin / geo.T_, t = begin % geo.T_;
#pragma unroll
    for (int w = 0; w < kConvMaxW; ++w)
      if (w < W) win[w] = geo.input(b, t - (W - 1) + w, c);
    for (int64_t r = begin; r < end; ++r) {
      const double d = static_cast<double>(dp[r * C + c]);
#pragma unroll
      for (int w = 0; w < kConvMaxW; ++w)
        if (w < W) acc[w] += d * static_cast<double>(win[w]);
      acc[kConvMaxW] += d;
      if (r + 1 == end) break;
      if (++t == geo.T_) {  // the next row starts a new sequence: a fresh window
        t = 0;
        ++b;
#pragma unroll
        for (int w = 0; w < kConvMaxW; ++w)
          if (w < W) win[w] = geo.input(b, w - (W - 1), c);
      } else {  // slide: drop the oldest input, the newest is row r + 1's
        const T next = geo.x[(r + 1) * C + c];
#pragma unroll
        for (int w = 0; w < kConvMaxW; ++w) {
          if (w + 1 < kConvMaxW && w + 1 < W) win[w] = win[w + 1];
          else if (w + 1 == W) win[w] = next;
        }
      }
    }
  }
  if (c < C) {
#pragma unroll
    for (int w = 0; w < kConvMaxW; ++w)
      if (w < W) lanes[threadIdx.y][w][threadIdx.x] = acc[w];
    lanes[threadIdx.y][W][threadIdx.x] = acc[kConvMaxW];
  }
  __syncthreads();
  // Thread (x, y) adds the lanes of tap y (and y + kRowLanes, ...) of channel c in lane order.
  for (int64_t w = threadIdx.y; w <= W && c < C; w += kRowLanes) {
    double s = lanes[0][w][threadIdx.x];
    for (int y = 1; y < kRowLanes; ++y) s += lanes[y][w][threadIdx.x];
    partial[(blockIdx.y * (W + 1) + w) * C + c] = s;
  }
}

template <typename T>
__global__ void conv_weight_finalize_kernel(T* dweight, T* dbias, const double* partial, int64_t S, int64_t C,
                                            int64_t W) {
  const int64_t M = (W + 1) * C, warps = blockDim.x >> 5;
  for (int64_t m = blockIdx.x * warps + (threadIdx.x >> 5); m < M; m += warps * gridDim.x) {
    const double s = warp_column_sum(partial, S, M, m);
    if ((threadIdx.x & 31) != 0) continue;
    const int64_t w = m / C, c = m % C;
    if (w < W)
      dweight[c * W + w] = static_cast<T>(s);
    else if (dbias)
      dbias[c] = static_cast<T>(s);
  }
}

// Launch shape of the forward, dp and dx kernels: up to kThreads channels per block (a multiple of 32 covering C).
int conv_threads(int64_t C) { return static_cast<int>(std::min<int64_t>(kThreads, (C + 31) / 32 * 32)); }
dim3 conv_grid(int64_t B, int64_t T_, int64_t C) {
  const int64_t gx = (C + conv_threads(C) - 1) / conv_threads(C), gy = (T_ + kConvRows - 1) / kConvRows;
  GDN_CHECK(gx <= INT32_MAX && gy <= 65535 && B <= 65535, "CUDA causal_conv1d: B {} x T {} x C {} is too large", B,
            T_, C);
  return dim3(static_cast<unsigned>(gx), static_cast<unsigned>(gy), static_cast<unsigned>(B));
}

void causal_conv1d_forward(const Tensor& y, const Tensor& final_state, const Tensor& x, const Tensor& weight,
                           const Tensor& bias, const Tensor& initial_state, bool silu) {
  GDN_CHECK(y.is_contiguous() && x.is_contiguous() && weight.is_contiguous(), "causal_conv1d: contiguous only");
  const int64_t B = x.size(0), T_ = x.size(1), C = x.size(2), W = weight.size(1);
  dispatch_float(x.dtype(), "cuda causal_conv1d_forward", [&](auto tag_) {
    using T = decltype(tag_);
    const ConvGeometry<T> geo{B, T_, C, W, x.data<T>(), initial_state.defined() ? initial_state.data<T>() : nullptr};
    const T* bp = bias.defined() ? bias.data<T>() : nullptr;
    if (B * T_ * C > 0) {
      conv_forward_kernel<T><<<conv_grid(B, T_, C), conv_threads(C), 0, current_stream()>>>(
          y.data<T>(), geo, weight.data<T>(), bp, silu);
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
      conv_dp_kernel<T><<<conv_grid(B, T_, C), conv_threads(C), 0, current_stream()>>>(dp_buf.data<T>(), dy.data<T>(),
                                                                                       geo, wp, bp);
      CUDA_CHECK_LAST();
      dp = dp_buf.data<T>();
    }
    if (n > 0) {
      conv_dx_kernel<T><<<conv_grid(B, T_, C), conv_threads(C), 0, current_stream()>>>(dx.data<T>(), dp, wp, T_, C, W);
      CUDA_CHECK_LAST();
    }
    if (dinitial_state.defined() && B * C * (W - 1) > 0) {
      conv_dinit_kernel<T><<<grid_for(B * C * (W - 1)), kThreads, 0, current_stream()>>>(
          dinitial_state.data<T>(), dp, wp, B, T_, C, W);
      CUDA_CHECK_LAST();
    }
    // dweight [C,W] and dbias [C]: sums over the B*T rows, in double.
    T* dbp = dbias.defined() ? dbias.data<T>() : nullptr;
    if (W <= kConvMaxW && C > 0) {
      const ColumnPlan plan = column_plan(B * T_, C);
      Tensor partial = Tensor::empty({plan.slices, W + 1, C}, kFloat64, x.device());
      const dim3 grid(static_cast<unsigned>((C + kColTile - 1) / kColTile), static_cast<unsigned>(plan.slices));
      conv_weight_partials_kernel<T><<<grid, dim3(kColTile, kRowLanes), 0, current_stream()>>>(
          partial.data<double>(), geo, dp, plan.rows_per_slice);
      CUDA_CHECK_LAST();
      conv_weight_finalize_kernel<T><<<grid_for((W + 1) * C * 32), kThreads, 0, current_stream()>>>(
          dweight.data<T>(), dbp, partial.data<double>(), plan.slices, C, W);
      CUDA_CHECK_LAST();
    } else {
      const int64_t M = (W + (dbias.defined() ? 1 : 0)) * C;
      column_reduce(x.device(), B * T_, M, ConvWeightTerm<T>{geo, dp}, ConvWeightStore<T>{dweight.data<T>(), dbp, C, W});
    }
  });
}

}  // namespace

void register_causal_conv1d_kernels(KernelTable& t) {
  t.causal_conv1d_forward = causal_conv1d_forward;
  t.causal_conv1d_backward = causal_conv1d_backward;
}

}  // namespace gdn::cuda
