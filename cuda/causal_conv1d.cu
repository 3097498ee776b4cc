// cuda/causal_conv1d.cu — CUDA twin of the causal depthwise conv1d of ops/cpu/gated_deltanet_cpu.cpp (forward and
// backward, float32 and float64; x and dx may also be bfloat16 storage of float32 arithmetic, the layer's in_proj
// output and its gradient under bf16 products, each value widened exactly on load and dx rounded once on store; y,
// the weights and the states stay float32). The building blocks (vector accesses, geometry, channel parts) are in
// cuda/causal_conv1d_common.cuh.
//
// Math (B batch, T time, C channels, W conv width): p[t,c] = bias[c] + sum_w weight[c,w] x[t-W+1+w, c], y = silu(p)
// or p; x before t = 0 comes from initial_state [B,C,W-1] (oldest first) or is 0; final_state [B,C,W-1] = the inputs
// at T-W+1 .. T-1. Backward: dp = dy s (1 + p (1 - s)) with p recomputed (dp = dy without SiLU),
// dx[t] = sum_w weight[c,w] dp[t+W-1-w], dinitial_state[j] = sum_w weight[c,w] dp[j-w],
// dweight[c,w] = sum_{b,t} dp[t] x[t-W+1+w], dbias[c] = sum_{b,t} dp[t].
//
// Parallel decomposition: the forward is a thread per V channels and a run of kConvRows = 8 time steps (grid (channel
// blocks, time blocks, B): no index division; the channel fastest, so loads are coalesced), its inputs loaded into
// registers before any store, its part of the output looked up once; final_state one thread per output element. The
// backward (W <= kConvMaxW = 8) is one pass, conv_backward_fused_kernel: a block of 32 threads of V channels x 8
// lanes owns 64 time steps of one sequence, each lane 8 of them, recomputes p and dp in registers, writes dx (and
// dinitial_state), and adds its dweight (and, when asked for, dbias) terms in double; lanes are added in lane order,
// then the blocks of a column in a fixed order (conv_weight_finalize_kernel, 32 columns a block, coalesced; the block
// count depends only on the shapes: the same bits every run, no atomics). V = 4 forward (float4) and 2 backward
// (float2) for float32 at W = 4 when C, the part widths and the pointers allow it (groups_of), else 1 (bfloat16 x and
// dx: 8- and 4-byte accesses); W = 4 is compiled in (register arrays of 4 taps), other widths read at run time. The
// sigmoid is sigmoid_of without its branch (sigmoid_nb: the same bits).
// Wider kernels: conv_dp_kernel, conv_dx_kernel, conv_dinit_kernel and the generic column reduction of
// cuda/gated_deltanet_common.cuh (without SiLU the backward reads dy directly instead of a copy of it). The double
// sums differ from the CPU's (per OpenMP thread) only in their order; a dweight term before t = 0 without an initial
// state is 0 (the CPU adds nothing there either). The output y and the gradient dy may come as up to 4 channel parts
// (ChannelParts: the layer's q | k | v, each its own tensor), read and written in place.
#include <cuda_runtime.h>

#include <algorithm>
#include <type_traits>
#include <vector>

#include "cuda/causal_conv1d_common.cuh"
#include "cuda/cuda_kernels.h"
#include "cuda/gated_deltanet_common.cuh"
#include "cuda/launch.h"

namespace gdn::cuda {

namespace {

using namespace gdn_common;
using namespace conv1d;

// y [B,T,C], W <= kConvMaxW (FW: W compiled in, or 0 for any W read at run time), V channels per thread: the thread's
// inputs (its kConvRows rows and the W-1 before them) are loaded into registers first, so their loads overlap (a
// store to y between them would have ordered them one after another). Its part of y is looked up once.
template <typename T, int FW, int V, typename S>
__global__ void __launch_bounds__(kThreads)
    conv_forward_kernel(ChannelParts<T> y, ConvGeometry<T, S> geo, const T* __restrict__ weight,
                        const T* __restrict__ bias, bool silu) {
  pdl_enter();
  constexpr int MW = FW != 0 ? FW : kConvMaxW;  // the register arrays' width
  const ConvRows r = conv_rows(geo.C, geo.T_, V);
  if (r.c < 0) return;
  const int W = FW != 0 ? FW : static_cast<int>(geo.W);
  T wt[MW][V], xs[kConvRows + MW - 1][V], b0[V];
#pragma unroll
  for (int k = 0; k < V; ++k) {
    b0[k] = bias ? bias[r.c + k] : T(0);
#pragma unroll
    for (int w = 0; w < MW; ++w) wt[w][k] = w < W ? weight[(r.c + k) * W + w] : T(0);
  }
#pragma unroll
  for (int i = 0; i < kConvRows + MW - 1; ++i) {
    const int64_t t = r.t0 - (W - 1) + i;
    if (i < kConvRows + W - 1 && t < geo.T_) {
      geo.inputs(xs[i], r.b, t, r.c);
    } else {
#pragma unroll
      for (int k = 0; k < V; ++k) xs[i][k] = T(0);
    }
  }
  const typename ChannelParts<T>::Column out = y.locate(r.c);
  T* yr = out.p + (r.b * geo.T_ + r.t0) * out.stride;
#pragma unroll
  for (int i = 0; i < kConvRows; ++i) {
    if (r.t0 + i >= r.t1) break;
    T v[V];
#pragma unroll
    for (int k = 0; k < V; ++k) {
      T p = b0[k];  // the CPU's order: bias first, then w ascending
#pragma unroll
      for (int w = 0; w < MW; ++w)
        if (w < W) p += wt[w][k] * xs[i + w][k];
      if (silu) p = p * sigmoid_nb(p);
      v[k] = p;
    }
    store_v(yr + i * out.stride, v);
  }
}

// y for W > kConvMaxW: p recomputed from global memory for every time step.
template <typename T, typename S>
__global__ void conv_forward_wide_kernel(ChannelParts<T> y, ConvGeometry<T, S> geo, const T* weight, const T* bias,
                                         bool silu) {
  pdl_enter();
  const ConvRows r = conv_rows(geo.C, geo.T_);
  if (r.c < 0) return;
  for (int64_t t = r.t0; t < r.t1; ++t) {
    T p = geo.preactivation(weight, bias, r.b, t, r.c);
    if (silu) p = p * sigmoid_nb(p);
    y.at(r.b * geo.T_ + t, r.c) = p;
  }
}

// final_state [B,C,W-1] = the inputs at T-(W-1)+j, oldest first (from the initial state or 0 when T < W-1).
template <typename T, typename S> __global__ void conv_final_state_kernel(T* fs, ConvGeometry<T, S> geo) {
  pdl_enter();
  const int64_t K = geo.W - 1, n = geo.B * geo.C * K;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(blockDim.x) * gridDim.x) {
    const int64_t j = i % K, bc = i / K;
    fs[i] = geo.input(bc / geo.C, geo.T_ - K + j, bc % geo.C);
  }
}

// dp [B,T,C] = dy * silu'(p), p recomputed (silu), or dy itself.
template <typename T, typename S>
__global__ void conv_dp_kernel(T* dp, ChannelParts<const T> dy, ConvGeometry<T, S> geo, const T* weight,
                               const T* bias, bool silu) {
  pdl_enter();
  const ConvRows r = conv_rows(geo.C, geo.T_);
  if (r.c < 0) return;
  for (int64_t t = r.t0; t < r.t1; ++t) {
    const int64_t row = r.b * geo.T_ + t;
    const T g = dy.at(row, r.c);
    if (!silu) {
      dp[row * geo.C + r.c] = g;
      continue;
    }
    const T p = geo.preactivation(weight, bias, r.b, t, r.c), s = sigmoid_nb(p);
    dp[row * geo.C + r.c] = g * s * (T(1) + p * (T(1) - s));
  }
}

// dx [B,T,C]: dx[t] = sum_w weight[c,w] dp[t+W-1-w] over outputs inside [0, T); stored as S (x's storage).
template <typename T, typename S>
__global__ void conv_dx_kernel(S* dx, const T* dp, const T* weight, int64_t T_, int64_t C, int64_t W) {
  pdl_enter();
  const ConvRows r = conv_rows(C, T_);
  if (r.c < 0) return;
  for (int64_t t = r.t0; t < r.t1; ++t) {
    T s = T(0);
    for (int64_t w = 0; w < W; ++w) {
      const int64_t to = t + W - 1 - w;
      if (to < T_) s += weight[r.c * W + w] * dp[(r.b * T_ + to) * C + r.c];
    }
    dx[(r.b * T_ + t) * C + r.c] = out_value<S>(s);
  }
}

// dinitial_state [B,C,W-1]: the input at j-(W-1) < 0 feeds the outputs to = j-w in [0, T).
template <typename T>
__global__ void conv_dinit_kernel(T* di, const T* dp, const T* weight, int64_t B, int64_t T_, int64_t C, int64_t W) {
  pdl_enter();
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
template <typename T, typename S> struct ConvWeightTerm {
  ConvGeometry<T, S> geo;
  const T* dp;
  __device__ double operator()(int64_t r, int64_t m) const {
    const int64_t C = geo.C, w = m / C, c = m % C;
    const double d = static_cast<double>(dp[r * C + c]);
    if (w == geo.W) return d;
    const int64_t b = r / geo.T_, t = r % geo.T_, ts = t - (geo.W - 1) + w;
    if (ts >= 0) return d * static_cast<double>(in_value<T>(geo.x[(r - (geo.W - 1) + w) * C + c]));
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

// The whole backward for W <= kConvMaxW in one pass over dy and x: block (kColTile threads of V channels, kRowLanes
// lanes) owns kRowLanes * kConvRun time steps of one sequence (grid.y = B * tiles, tiles = ceil(T / (kRowLanes
// kConvRun))); lane y takes the kConvRun steps from t0 = tile start + y kConvRun. A thread loads its inputs
// x[t0-W+1 .. t0+kConvRun+W-2] and dy[t0 .. t0+kConvRun+W-2] into registers, recomputes p and dp there (as
// conv_dp_kernel: the same values), writes dx of its steps (as conv_dx_kernel, w ascending) and, when t0 = 0,
// dinitial_state of its sequence; its dweight (and, when asked for, dbias) terms of its own steps go to the lanes'
// shared sums, added in lane order into partial [S, nb, C] (nb = W, or W + 1 with dbias; conv_weight_finalize_kernel
// adds the S = B * tiles blocks). No dp buffer, one launch where there were three.
constexpr int kConvRun = 8;

// FW: the width the kernel is compiled for (4, the model's), or 0 for any W <= kConvMaxW read at run time: a
// compiled width sizes the register arrays and unrolls every tap loop exactly. Each block loads, computes, stores,
// then reduces, so blocks per SM keep loads in flight: float32 at W = 4 fits 64 registers at V = 1 (four blocks per
// SM) and stays under 128 at V = 2 (two blocks, each thread with twice the bytes per load). V = 4 would need more
// than 128 (x, dy, the taps and 4 x (W+1) double sums) and spilled there.
template <typename T, int FW, int V, typename S>
__global__ void __launch_bounds__(kColTile* kRowLanes, FW != 0 && sizeof(T) == 4 ? (V == 1 ? 4 : 2) : 1)
    conv_backward_fused_kernel(S* __restrict__ dx, T* __restrict__ dinit, double* __restrict__ partial,
                               ConvGeometry<T, S> geo, ChannelParts<const T> dy, const T* __restrict__ weight,
                               const T* __restrict__ bias, bool silu, int nb, int64_t tiles) {
  pdl_enter();
  constexpr int MW = FW != 0 ? FW : kConvMaxW, CT = kColTile * V;  // register arrays' width; the block's channels
  __shared__ double lanes[kRowLanes][MW + 1][CT];
  constexpr int NX = kConvRun + 2 * (MW - 1), ND = kConvRun + MW - 1;
  const int64_t C = geo.C, T_ = geo.T_, c = (blockIdx.x * int64_t(kColTile) + threadIdx.x) * V;
  const int W = FW != 0 ? FW : static_cast<int>(geo.W);
  const int64_t b = blockIdx.y / tiles, t0 = (blockIdx.y % tiles) * (kRowLanes * kConvRun) + threadIdx.y * kConvRun;
  double acc[MW + 1][V];
#pragma unroll
  for (int w = 0; w <= MW; ++w)
#pragma unroll
    for (int k = 0; k < V; ++k) acc[w][k] = 0;
  if (c < C && t0 < T_) {
    T wt[MW][V], xs[NX][V], dp[ND][V], b0[V];
#pragma unroll
    for (int k = 0; k < V; ++k) {
      b0[k] = bias ? bias[c + k] : T(0);
#pragma unroll
      for (int w = 0; w < MW; ++w) wt[w][k] = w < W ? weight[(c + k) * W + w] : T(0);
    }
#pragma unroll
    for (int i = 0; i < NX; ++i) {  // xs[i] = input at t0 - (W-1) + i
      const int64_t t = t0 - (W - 1) + i;
      if (i < kConvRun + 2 * (W - 1) && t < T_) {
        geo.inputs(xs[i], b, t, c);
      } else {
#pragma unroll
        for (int k = 0; k < V; ++k) xs[i][k] = T(0);
      }
    }
    const typename ChannelParts<const T>::Column g = dy.locate(c);
#pragma unroll
    for (int i = 0; i < ND; ++i) {  // dp[i] at t0 + i, 0 past the sequence
      const int64_t t = t0 + i;
      if (i < kConvRun + W - 1 && t < T_) {
        load_v(dp[i], g.p + (b * T_ + t) * g.stride);
      } else {
#pragma unroll
        for (int k = 0; k < V; ++k) dp[i][k] = T(0);
      }
    }
    if (silu) {
#pragma unroll
      for (int i = 0; i < ND; ++i)
#pragma unroll
        for (int k = 0; k < V; ++k) {
          T p = b0[k];
#pragma unroll
          for (int w = 0; w < MW; ++w)
            if (w < W) p += wt[w][k] * xs[i + w][k];
          const T sg = sigmoid_nb(p);
          dp[i][k] = dp[i][k] * sg * (T(1) + p * (T(1) - sg));
        }
    }
    // dx[t] = sum_w weight[w] dp[t + W-1-w], w ascending: u = W-1-w descending (weight w from wt when W is compiled
    // in, else from memory: a run-time index would put wt in local memory).
#pragma unroll
    for (int i = 0; i < kConvRun; ++i) {
      if (t0 + i >= T_) break;
      T v[V];
#pragma unroll
      for (int k = 0; k < V; ++k) {
        T sum = T(0);
#pragma unroll
        for (int u = MW - 1; u >= 0; --u) {
          if (u >= W || t0 + i + u >= T_) continue;
          if constexpr (FW != 0) sum += wt[FW - 1 - u][k] * dp[i + u][k];
          else sum += weight[(c + k) * W + (W - 1 - u)] * dp[i + u][k];
        }
        v[k] = sum;
      }
      store_v(dx + (b * T_ + t0 + i) * C + c, v);
    }
    if (dinit && t0 == 0) {  // the input at j-(W-1) < 0 feeds the outputs j-w in [0, T)
#pragma unroll
      for (int j = 0; j < MW - 1; ++j) {
        if (j >= W - 1) break;
#pragma unroll
        for (int k = 0; k < V; ++k) {
          T sum = T(0);
#pragma unroll
          for (int w = 0; w <= j; ++w)
            if (w < W && j - w < T_) sum += wt[w][k] * dp[j - w][k];
          dinit[(b * C + c + k) * (W - 1) + j] = sum;
        }
      }
    }
#pragma unroll
    for (int i = 0; i < kConvRun; ++i) {
      if (t0 + i >= T_) break;
#pragma unroll
      for (int k = 0; k < V; ++k) {
        const double d = static_cast<double>(dp[i][k]);
#pragma unroll
        for (int w = 0; w < MW; ++w)
          if (w < W) acc[w][k] += d * static_cast<double>(xs[i + w][k]);
        acc[MW][k] += d;
      }
    }
  }
  if (c < C) {
#pragma unroll
    for (int k = 0; k < V; ++k) {
#pragma unroll
      for (int w = 0; w < MW; ++w)
        if (w < W) lanes[threadIdx.y][w][threadIdx.x * V + k] = acc[w][k];
      lanes[threadIdx.y][W][threadIdx.x * V + k] = acc[MW][k];
    }
  }
  __syncthreads();
  // Column (w, j) of the block: its kRowLanes lane sums in lane order; consecutive threads take consecutive channels.
  const int64_t cb = blockIdx.x * int64_t(CT);
  for (int m = threadIdx.y * kColTile + threadIdx.x; m < nb * CT; m += kColTile * kRowLanes) {
    const int w = m / CT, j = m % CT;
    if (cb + j >= C) continue;
    double sum = lanes[0][w][j];
    for (int y = 1; y < kRowLanes; ++y) sum += lanes[y][w][j];
    partial[(blockIdx.y * int64_t(nb) + w) * C + cb + j] = sum;
  }
}

// dweight [C,W] and dbias [C] from partial [S, M / C, C] (column m = w C + c, w = W: dbias). Block (32, 32) over 32
// columns: thread (x, y) adds the partials k = y, y + 32, ... of column x in order (each warp's loads are 32
// consecutive doubles), then warp y adds column y's 32 sums with warp_sum's fixed butterfly: the order of
// warp_column_sum, so the same bits on every run.
template <typename T>
__global__ void __launch_bounds__(1024) conv_weight_finalize_kernel(T* dweight, T* dbias, const double* partial,
                                                                   int64_t S, int64_t C, int64_t W, int64_t M) {
  pdl_enter();
  __shared__ double sums[32][33];
  const int64_t m0 = blockIdx.x * int64_t(32);
  double s = 0;
  if (m0 + threadIdx.x < M)
    for (int64_t k = threadIdx.y; k < S; k += 32) s += partial[k * M + m0 + threadIdx.x];
  sums[threadIdx.y][threadIdx.x] = s;
  __syncthreads();
  s = warp_sum(sums[threadIdx.x][threadIdx.y]);
  const int64_t m = m0 + threadIdx.y, w = m / C, c = m % C;
  if (threadIdx.x != 0 || m >= M) return;
  if (w < W)
    dweight[c * W + w] = static_cast<T>(s);
  else
    dbias[c] = static_cast<T>(s);
}

// Launch shape of the forward, dp and dx kernels over G threads across the channels (C, or C / 4 on the 4-wide
// path): up to kThreads per block (a multiple of 32 covering G).
int conv_threads(int64_t G) { return static_cast<int>(std::min<int64_t>(kThreads, (G + 31) / 32 * 32)); }
dim3 conv_grid(int64_t B, int64_t T_, int64_t G) {
  const int64_t gx = (G + conv_threads(G) - 1) / conv_threads(G), gy = (T_ + kConvRows - 1) / kConvRows;
  GDN_CHECK(gx <= INT32_MAX && gy <= 65535 && B <= 65535,
            "CUDA causal_conv1d: B {} x T {} x {} channel threads is too large", B, T_, G);
  return dim3(static_cast<unsigned>(gx), static_cast<unsigned>(gy), static_cast<unsigned>(B));
}

void causal_conv1d_forward(const std::vector<Tensor>& ys, const Tensor& final_state, const Tensor& x,
                           const Tensor& weight, const Tensor& bias, const Tensor& initial_state, bool silu) {
  GDN_CHECK(x.is_contiguous() && weight.is_contiguous(), "causal_conv1d: contiguous only");
  const int64_t B = x.size(0), T_ = x.size(1), C = x.size(2), W = weight.size(1);
  dispatch_float(arithmetic_dtype(x.dtype()), "cuda causal_conv1d_forward", [&](auto tag_) {
    using T = decltype(tag_);
    with_storage<T>(x, [&](auto* xp) {  // x may be bfloat16 for float32 arithmetic
      using S = std::remove_pointer_t<decltype(xp)>;
      const ConvGeometry<T, S> geo{B, T_, C, W, xp, initial_state.defined() ? initial_state.data<T>() : nullptr};
      const T* bp = bias.defined() ? bias.data<T>() : nullptr;
      if (B * T_ * C > 0) {  // W = 4 compiled in, 4 channels per float32 thread where rows allow float4
        const ChannelParts<T> y = channel_parts<T>(ys, x, "causal_conv1d");
        constexpr int V = kVec<T, 4>;
        const bool wide = W == 4 && groups_of(V, y, {x.raw_data()});
        const int64_t G = wide ? C / V : C;
        const auto kernel = W > kConvMaxW ? conv_forward_wide_kernel<T, S>
                            : W != 4      ? conv_forward_kernel<T, 0, 1, S>
                            : wide        ? conv_forward_kernel<T, 4, V, S>
                                          : conv_forward_kernel<T, 4, 1, S>;
        launch(kernel, conv_grid(B, T_, G), conv_threads(G), 0, y, geo, weight.data<T>(), bp, silu);
      }
      if (final_state.defined() && B * C * (W - 1) > 0) {
        launch(conv_final_state_kernel<T, S>, grid_for(B * C * (W - 1)), kThreads, 0, final_state.data<T>(), geo);
      }
    });
  });
}

void causal_conv1d_backward(const Tensor& dx, const Tensor& dweight, const Tensor& dbias,
                            const Tensor& dinitial_state, const std::vector<Tensor>& dys, const Tensor& x,
                            const Tensor& weight, const Tensor& bias, const Tensor& initial_state, bool silu) {
  GDN_CHECK(dx.is_contiguous() && x.is_contiguous() && weight.is_contiguous(),
            "causal_conv1d_backward: contiguous only");
  GDN_CHECK(dx.dtype() == x.dtype(), "causal_conv1d_backward: dx is {} for {} x", dx.dtype(), x.dtype());
  const int64_t B = x.size(0), T_ = x.size(1), C = x.size(2), W = weight.size(1);
  dispatch_float(arithmetic_dtype(x.dtype()), "cuda causal_conv1d_backward", [&](auto tag_) {
    using T = decltype(tag_);
    with_storage<T>(x, [&](auto* xp) {  // x and dx may be bfloat16 for float32 arithmetic
      using S = std::remove_pointer_t<decltype(xp)>;
      S* dxp = static_cast<S*>(dx.raw_data());
      const ConvGeometry<T, S> geo{B, T_, C, W, xp, initial_state.defined() ? initial_state.data<T>() : nullptr};
      const T* wp = weight.data<T>();
      const T* bp = bias.defined() ? bias.data<T>() : nullptr;
      const int64_t n = B * T_ * C;
      T* dbp = dbias.defined() ? dbias.data<T>() : nullptr;
      const ChannelParts<const T> dy = channel_parts<const T>(dys, x, "causal_conv1d_backward");
      const int64_t tiles = (T_ + kRowLanes * kConvRun - 1) / (kRowLanes * kConvRun);
      if (W <= kConvMaxW && n > 0 && B * tiles <= 65535) {  // one pass (conv_backward_fused_kernel)
        const int nb = static_cast<int>(W) + (dbp ? 1 : 0);
        Tensor partial = Tensor::empty({B * tiles, nb, C}, kFloat64, x.device());
        constexpr int V = kVec<T, 2>;
        const bool wide = W == 4 && groups_of(V, dy, {x.raw_data(), dx.raw_data()});
        const int64_t G = wide ? C / V : C;
        const dim3 grid(static_cast<unsigned>((G + kColTile - 1) / kColTile), static_cast<unsigned>(B * tiles));
        const auto kernel = W != 4 ? conv_backward_fused_kernel<T, 0, 1, S>
                            : wide ? conv_backward_fused_kernel<T, 4, V, S>
                                   : conv_backward_fused_kernel<T, 4, 1, S>;
        launch(kernel, grid, dim3(kColTile, kRowLanes), 0, dxp,
               dinitial_state.defined() ? dinitial_state.data<T>() : nullptr, partial.data<double>(), geo, dy, wp, bp,
               silu, nb, tiles);
        const int64_t M = nb * C;
        launch(conv_weight_finalize_kernel<T>, static_cast<unsigned>((M + 31) / 32), dim3(32, 32), 0, dweight.data<T>(),
               dbp, partial.data<double>(), B * tiles, C, W, M);
        return;
      }

      // Wider kernels (and grids past 65535 tiles): dp = dy * act'(p) (without SiLU dp is dy itself, read in place
      // when it is one part), then dx, dinitial_state and the weight sums from it.
      Tensor dp_buf;
      const T* dp = dy.p[0];
      if ((silu || dy.n > 1) && n > 0) {
        dp_buf = Tensor::empty({B, T_, C}, weight.dtype(), x.device());
        launch(conv_dp_kernel<T, S>, conv_grid(B, T_, C), conv_threads(C), 0, dp_buf.data<T>(), dy, geo, wp, bp, silu);
        dp = dp_buf.data<T>();
      }
      if (n > 0) {
        launch(conv_dx_kernel<T, S>, conv_grid(B, T_, C), conv_threads(C), 0, dxp, dp, wp, T_, C, W);
      }
      if (dinitial_state.defined() && B * C * (W - 1) > 0) {
        launch(conv_dinit_kernel<T>, grid_for(B * C * (W - 1)), kThreads, 0, dinitial_state.data<T>(), dp, wp, B, T_, C,
               W);
      }
      // dweight [C,W] and dbias [C]: sums over the B*T rows, in double.
      const int64_t M = (W + (dbias.defined() ? 1 : 0)) * C;
      column_reduce(x.device(), B * T_, M, ConvWeightTerm<T, S>{geo, dp},
                    ConvWeightStore<T>{dweight.data<T>(), dbp, C, W});
    });
  });
}

}  // namespace

void register_causal_conv1d_kernels(KernelTable& t) {
  t.causal_conv1d_forward = causal_conv1d_forward;
  t.causal_conv1d_backward = causal_conv1d_backward;
}

}  // namespace gdn::cuda
