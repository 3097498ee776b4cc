// cuda/causal_conv1d_common.cuh — the building blocks of the causal conv1d kernels (cuda/causal_conv1d.cu, whose
// header describes the decomposition): vector accesses of 1, 2 or 4 channels (float32, float64, or bfloat16 storage
// of float32 values: the layer's in_proj output x and its gradient dx under bf16 products), the branch-free sigmoid,
// the call's geometry (x and the initial state), the output / gradient channel parts, and the thread's run of rows.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <initializer_list>
#include <type_traits>
#include <vector>

#include "core/tensor.h"
#include "cuda/launch.h"

namespace gdn::cuda::conv1d {

// Channels per thread of the V-wide paths: float32 only (float4 / float2 accesses).
template <typename T, int V> constexpr int kVec = std::is_same_v<T, float> ? V : 1;

// V consecutive elements at p: one 16-byte (V = 4) or 8-byte (V = 2) access of float32 aligned to V elements (of
// bfloat16 storage, S: one 8- or 4-byte access, each value widened exactly or rounded once to nearest even), else one
// at a time. The loads read tensors that the kernel does not write (x, dy), so they take the read-only path (__ldg);
// the stores are __stwb (the default write-back policy), so that each stays one vector store (nvcc splits a plain
// float2 store into two).
template <int V, typename T, typename S> __device__ inline void load_v(T (&v)[V], const S* p) {
  static_assert(V == 1 || std::is_same_v<T, float>, "the 2- and 4-wide accesses are float2 / float4");
  if constexpr (std::is_same_v<S, __nv_bfloat16>) {
    static_assert(std::is_same_v<T, float>, "bfloat16 storage holds float32 values");
    if constexpr (V == 4) {
      const uint2 u = __ldg(reinterpret_cast<const uint2*>(p));
      v[0] = __uint_as_float(u.x << 16), v[1] = __uint_as_float(u.x & 0xffff0000u);
      v[2] = __uint_as_float(u.y << 16), v[3] = __uint_as_float(u.y & 0xffff0000u);
    } else if constexpr (V == 2) {
      const unsigned u = __ldg(reinterpret_cast<const unsigned*>(p));
      v[0] = __uint_as_float(u << 16), v[1] = __uint_as_float(u & 0xffff0000u);
    } else {
#pragma unroll
      for (int k = 0; k < V; ++k) v[k] = in_value<T>(p[k]);
    }
  } else if constexpr (V == 4) {
    const float4 q = __ldg(reinterpret_cast<const float4*>(p));
    v[0] = q.x, v[1] = q.y, v[2] = q.z, v[3] = q.w;
  } else if constexpr (V == 2) {
    const float2 q = __ldg(reinterpret_cast<const float2*>(p));
    v[0] = q.x, v[1] = q.y;
  } else {
#pragma unroll
    for (int k = 0; k < V; ++k) v[k] = p[k];
  }
}
template <int V, typename S, typename T> __device__ inline void store_v(S* p, const T (&v)[V]) {
  static_assert(V == 1 || std::is_same_v<T, float>, "the 2- and 4-wide accesses are float2 / float4");
  if constexpr (std::is_same_v<S, __nv_bfloat16>) {
    static_assert(std::is_same_v<T, float>, "bfloat16 storage holds float32 values");
    if constexpr (V == 4) {
      const __nv_bfloat162 lo = __floats2bfloat162_rn(v[0], v[1]), hi = __floats2bfloat162_rn(v[2], v[3]);
      __stwb(reinterpret_cast<uint2*>(p),
             make_uint2(*reinterpret_cast<const unsigned*>(&lo), *reinterpret_cast<const unsigned*>(&hi)));
    } else if constexpr (V == 2) {
      const __nv_bfloat162 h = __floats2bfloat162_rn(v[0], v[1]);
      __stwb(reinterpret_cast<unsigned*>(p), *reinterpret_cast<const unsigned*>(&h));
    } else {
#pragma unroll
      for (int k = 0; k < V; ++k) p[k] = out_value<S>(v[k]);
    }
  } else if constexpr (V == 4) {
    __stwb(reinterpret_cast<float4*>(p), make_float4(v[0], v[1], v[2], v[3]));
  } else if constexpr (V == 2) {
    __stwb(reinterpret_cast<float2*>(p), make_float2(v[0], v[1]));
  } else {
#pragma unroll
    for (int k = 0; k < V; ++k) p[k] = v[k];
  }
}

// sigmoid_of (the CPU's 1 / (1 + exp(-x)) for x >= 0, e / (1 + e) with e = exp(x) below) without its branch: the same
// operations on the same values, so the same bits, with one exp and one division where a warp of mixed signs would
// run both branches.
template <typename T> __device__ inline T sigmoid_nb(T x) {
  const bool pos = x >= T(0);
  const T e = exp(pos ? -x : x);
  return (pos ? T(1) : e) / (T(1) + e);
}

// The geometry of one conv call, and the input at (b, t, c) for any t >= -(W-1) (initial state or 0 before t=0).
// S: x's storage (T, or bfloat16 for T = float: the layer's in_proj output under bf16 products).
template <typename T, typename S = T> struct ConvGeometry {
  int64_t B, T_, C, W;
  const S* x;     // [B,T,C]
  const T* init;  // [B,C,W-1] or null
  __device__ T input(int64_t b, int64_t t, int64_t c) const {
    if (t >= 0) return in_value<T>(x[(b * T_ + t) * C + c]);
    return init ? init[(b * C + c) * (W - 1) + (W - 1 + t)] : T(0);
  }
  // The inputs at (b, t, c .. c+V-1): one load_v from x for t >= 0, else one input() per channel.
  template <int V> __device__ void inputs(T (&v)[V], int64_t b, int64_t t, int64_t c) const {
    if (t >= 0) return load_v(v, x + (b * T_ + t) * C + c);
#pragma unroll
    for (int k = 0; k < V; ++k) v[k] = input(b, t, c + k);
  }
  // p = bias + sum_w weight[c,w] x[t-W+1+w], in the CPU's order (bias first, then w ascending).
  __device__ T preactivation(const T* weight, const T* bias, int64_t b, int64_t t, int64_t c) const {
    T p = bias ? bias[c] : T(0);
    for (int64_t w = 0; w < W; ++w) {
      const int64_t ts = t - (W - 1) + w;
      if (ts >= 0)
        p += weight[c * W + w] * in_value<T>(x[(b * T_ + ts) * C + c]);
      else if (init)
        p += weight[c * W + w] * input(b, ts, c);
    }
    return p;
  }
};

// A [B,T,C] conv output or gradient given as its channel parts: contiguous [B,T,C_i] tensors, in order, at most
// kMaxParts (the layer's q | k | v come out as three). at(r, c): the element of row r = b*T + t, channel c.
constexpr int kMaxParts = 4;
template <typename T> struct ChannelParts {
  T* p[kMaxParts];
  int64_t c0[kMaxParts + 1];  // part i holds channels [c0[i], c0[i+1])
  int n;
  struct Column {  // channel c of one part: the element of row r is p[r * stride]
    T* p;
    int64_t stride;
  };
  __device__ Column locate(int64_t c) const {  // unrolled: constant indices keep the struct out of local memory
#pragma unroll
    for (int i = kMaxParts - 1; i > 0; --i)
      if (i < n && c >= c0[i]) return {p[i] + (c - c0[i]), c0[i + 1] - c0[i]};
    return {p[0] + c, c0[1]};
  }
  __device__ T& at(int64_t r, int64_t c) const {
    const Column col = locate(c);
    return col.p[r * col.stride];
  }
};
template <typename T>
ChannelParts<T> channel_parts(const std::vector<Tensor>& parts, const Tensor& x, const char* what) {
  GDN_CHECK(!parts.empty() && parts.size() <= static_cast<size_t>(kMaxParts), "{}: {} parts (1 to {})", what,
            parts.size(), kMaxParts);
  ChannelParts<T> cp{};
  cp.n = static_cast<int>(parts.size());
  for (int i = 0; i < cp.n; ++i) {
    const Tensor& t = parts[i];
    GDN_CHECK(t.is_contiguous() && t.dim() == 3 && t.size(0) == x.size(0) && t.size(1) == x.size(1) &&
                  t.dtype() == arithmetic_dtype(x.dtype()),
              "{}: part {} for x {} {}", what, shape_str(t.shape()), shape_str(x.shape()), x.dtype());
    cp.p[i] = const_cast<T*>(t.data<std::remove_const_t<T>>());
    cp.c0[i + 1] = cp.c0[i] + t.size(2);
  }
  GDN_CHECK(cp.c0[cp.n] == x.size(2), "{}: parts of {} channels for C = {}", what, cp.c0[cp.n], x.size(2));
  return cp;
}

// Whether a call may give each thread V channels: every part boundary (and C) a multiple of V, so that a thread's
// channels lie in one part, and every part and tensor in `ps` aligned to V elements of T (then so is every row's
// group; bfloat16 x and dx need half that).
template <typename T> bool groups_of(int V, const ChannelParts<T>& cp, std::initializer_list<const void*> ps) {
  const uintptr_t bytes = V * sizeof(T);
  for (int i = 0; i < cp.n; ++i)
    if (cp.c0[i + 1] % V != 0 || !is_aligned(cp.p[i], bytes)) return false;
  for (const void* p : ps)
    if (!is_aligned(p, bytes)) return false;
  return true;
}

// The forward, dp and dx kernels: grid (ceil(C / (V x threads)), ceil(T / kConvRows), B), a thread per V channels
// (the dp and dx kernels: 1) and a run of kConvRows time steps (no index division; the channel fastest, so every
// load and store is coalesced).
constexpr int kConvRows = 8;
constexpr int kConvMaxW = 8;  // widest kernel of the register-window kernels

struct ConvRows {
  int64_t b, c, t0, t1;  // batch row, first channel, time steps [t0, t1); c < 0: no channel for this thread
};
__device__ inline ConvRows conv_rows(int64_t C, int64_t T_, int V = 1) {
  const int64_t c = (blockIdx.x * int64_t(blockDim.x) + threadIdx.x) * V, t0 = blockIdx.y * kConvRows;
  return {blockIdx.z, c < C ? c : -1, t0, min(T_, t0 + kConvRows)};
}

}  // namespace gdn::cuda::conv1d
