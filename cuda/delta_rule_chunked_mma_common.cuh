// cuda/delta_rule_chunked_mma_common.cuh — the machinery of the bfloat16 tensor-core kernels of the chunked gated
// delta rule (included by cuda/delta_rule_chunked_mma.cuh): the block geometry, shared-memory carving, the wmma tile
// products and their per-warp epilogue (mma_acc, mma_tiles), the fixed shapes (Shape, shaped) and the staging of
// float32 (or bf16) rows into bf16 tiles (stage_bf16, stage_rows, fetch_rows / put_rows). The conventions (padding,
// zero rows, one owner lane per output element) are in cuda/delta_rule_chunked_mma.cuh's header comment.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <mma.h>

#include <cstdint>
#include <type_traits>

#include "cuda/delta_rule_chunked_tiled.cuh"
#include "cuda/launch.h"

namespace gdn::cuda::delta_rule_tiled::mma {

using bf16 = __nv_bfloat16;
namespace wmma = nvcuda::wmma;
using RowMajor = wmma::row_major;
using ColMajor = wmma::col_major;

constexpr int kWarps = 8;   // warps per block of the recurrences (256 threads)
constexpr int kParWarps = kParThreads<float> / 32;  // warps per block of the chunk-parallel kernels
constexpr int kPadB = 8;    // bf16 row padding of every staged tile
constexpr int kStage = 256;  // floats of one warp's accumulator stage [16,16]

__host__ __device__ inline int64_t pad16(int64_t x) { return (x + 15) / 16 * 16; }

// Byte offsets of a shared-memory layout, every piece 128-byte aligned.
struct Carve {
  size_t off = 0;
  template <typename T>
  __host__ __device__ size_t take(int64_t n) {
    const size_t o = off;
    off += (static_cast<size_t>(n) * sizeof(T) + 127) / 128 * 128;
    return o;
  }
};

template <typename T>
__device__ __forceinline__ T* at(unsigned char* base, size_t off) {
  return reinterpret_cast<T*>(base + off);
}

using Acc = wmma::fragment<wmma::accumulator, 16, 16, 16, float>;

// acc += A[16 tm.., k0..k1) B[k0..k1, 16 tn..) with A(i, k) = A[i lda + k] (RowMajor) or A[k lda + i] (ColMajor) and
// B(k, j) = B[k ldb + j] (RowMajor) or B[j ldb + k] (ColMajor); k0, k1 multiples of 16.
template <typename LA, typename LB>
__device__ __forceinline__ void mma_acc(Acc& acc, int tm, int tn, int k0, int k1, const bf16* A, int lda,
                                        const bf16* B, int ldb) {
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
  wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, LA> a;
  wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, LB> b;
  for (int k = k0; k < k1; k += 16) {
    if constexpr (std::is_same_v<LA, RowMajor>)
      wmma::load_matrix_sync(a, A + (tm * 16) * lda + k, lda);
    else
      wmma::load_matrix_sync(a, A + k * lda + tm * 16, lda);
    if constexpr (std::is_same_v<LB, RowMajor>)
      wmma::load_matrix_sync(b, B + k * ldb + tn * 16, ldb);
    else
      wmma::load_matrix_sync(b, B + (tn * 16) * ldb + k, ldb);
    wmma::mma_sync(acc, a, b, acc);
  }
#else
  __trap();  // bfloat16 wmma needs sm_80 or newer (the host never selects this path there)
#endif
}

// The tile loop of mma_tiles and mma_tiles_rmw: for every 16x16 tile (tm, tn) of an M x N output, tile t =
// tm ceil(N/16) + tn on warp t mod the block's warps: acc = 0, body(tm, tn, acc) adds its products, acc goes to the
// warp's stage st ([16,16] float32, row-major) and epi(st, tm, tn) reads it, between two __syncwarp.
template <typename FB, typename FE>
__device__ __forceinline__ void mma_tile_loop(int M, int N, float* stage, FB body, FE epi) {
  const int warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  const int mt = (M + 15) >> 4, nt = (N + 15) >> 4;
  float* st = stage + warp * kStage;
  for (int t = warp; t < mt * nt; t += nw) {
    const int tm = t / nt, tn = t - tm * nt;
    Acc acc;
    wmma::fill_fragment(acc, 0.0f);
    body(tm, tn, acc);
    wmma::store_matrix_sync(st, acc, 16, wmma::mem_row_major);
    __syncwarp();
    epi(st, tm, tn);
    __syncwarp();
  }
}

// For every 16x16 tile (tm, tn) of an M x N output (mma_tile_loop): acc = 0, body(tm, tn, acc) adds its products,
// then out(i, j, acc(i, j)) for every i < M, j < N of the tile, one lane per element (through the warp's stage). No
// block synchronization inside; two calls with the same M, N give (i, j) to the same lane.
template <typename FB, typename FO>
__device__ __forceinline__ void mma_tiles(int M, int N, float* stage, FB body, FO out) {
  const int lane = threadIdx.x & 31;
  mma_tile_loop(M, N, stage, body, [&](const float* st, int tm, int tn) {
    for (int e = lane; e < kStage; e += 32) {
      const int i = tm * 16 + (e >> 4), j = tn * 16 + (e & 15);
      if (i < M && j < N) out(i, j, st[e]);
    }
  });
}

// mma_tiles for an epilogue that adds to what the output holds: each lane first reads old(i, j) for all its elements
// of the tile, then calls out(i, j, old value, acc(i, j)) for each. With mma_tiles' one call per element the
// compiler cannot move an element's load above the previous element's store (they might alias), so every element
// of an output in global memory waits for its own round trip to L2; here a lane's loads are in flight together (the
// chunk gradient's dQ, dK, X and Xs: with the gates' serial loops gone, 2393 -> 2173 us at 4x4096x16x128,
// docs/PERF.md). The same tiles, lanes, values and order of operations as mma_tiles.
template <typename FB, typename FL, typename FO>
__device__ __forceinline__ void mma_tiles_rmw(int M, int N, float* stage, FB body, FL old, FO out) {
  const int lane = threadIdx.x & 31;
  mma_tile_loop(M, N, stage, body, [&](const float* st, int tm, int tn) {
    constexpr int kPer = kStage / 32;
    float prev[kPer];
#pragma unroll
    for (int u = 0; u < kPer; ++u) {
      const int e = lane + 32 * u, i = tm * 16 + (e >> 4), j = tn * 16 + (e & 15);
      prev[u] = i < M && j < N ? old(i, j) : 0.0f;
    }
#pragma unroll
    for (int u = 0; u < kPer; ++u) {
      const int e = lane + 32 * u, i = tm * 16 + (e >> 4), j = tn * 16 + (e & 15);
      if (i < M && j < N) out(i, j, prev[u], st[e]);
    }
  });
}

// dst[i ld + c] = bf16(f(i, c)) for i < rows, c < cols; 0 for rows <= i < rows_pad (loads batched as batched_copy).
template <typename F>
__device__ __forceinline__ void stage_bf16(bf16* dst, int ld, int rows, int rows_pad, int cols, F f) {
  batched_copy<float>(
      rows_pad * cols,
      [&](int e) {
        const int i = e / cols;
        return i < rows ? static_cast<float>(f(i, e - i * cols)) : 0.0f;
      },
      [&](int e, float x) {
        const int i = e / cols;
        dst[i * ld + (e - i * cols)] = __float2bfloat16(x);
      });
}

// The shape a kernel is compiled for: chunk length C, key and value head dims K, V, and (the chunk-parallel state
// kernels) value tiles of 64 columns. Fixed shapes let the compiler fold every index, loop bound and shared-memory
// offset derived from them (each phase's element loops divide by a constant, most of them by a power of two), and
// their staging moves four floats per load (stage_rows). Shape<0, 0, 0> (Generic) reads them from Dims at run time
// and stages one element per load; the host picks a fixed shape only where it applies (mma::with_shape).
template <int C_, int K_, int V_>
struct Shape {
  static constexpr int C = C_, K = K_, V = V_;
  static constexpr bool fixed = C_ != 0;
};
using Generic = Shape<0, 0, 0>;
constexpr int kFixedTile = 64;  // value columns per block of the chunk-parallel state kernels at fixed shapes

// d with the dimensions of S where S is fixed (the compiler then folds them like constants).
template <typename S>
__device__ __forceinline__ Dims shaped(Dims d) {
  if constexpr (S::fixed) {
    d.C = S::C;
    d.K = S::K;
    d.V = S::V;
  }
  return d;
}

// Four bf16 values at src (8-byte aligned) as float32, one 8-byte load.
__device__ __forceinline__ float4 get_bf16x4(const bf16* src) {
  const uint2 u = *reinterpret_cast<const uint2*>(src);
  const float2 lo = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&u.x));
  const float2 hi = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&u.y));
  return make_float4(lo.x, lo.y, hi.x, hi.y);
}
// Four consecutive values at src as float32: one 16-byte load of float32 (16-byte aligned) or 8-byte load of bf16.
__device__ __forceinline__ float4 load4(const float* src) { return *reinterpret_cast<const float4*>(src); }
__device__ __forceinline__ float4 load4(const bf16* src) { return get_bf16x4(src); }
__device__ __forceinline__ float as_float(float x) { return x; }
__device__ __forceinline__ float as_float(bf16 x) { return __bfloat162float(x); }
// Four float32 values rounded to bf16 at dst (8-byte aligned), one 8-byte store.
__device__ __forceinline__ void put_bf16x4(bf16* dst, float4 x) {
  const __nv_bfloat162 lo = __floats2bfloat162_rn(x.x, x.y), hi = __floats2bfloat162_rn(x.z, x.w);
  uint2 u;
  u.x = *reinterpret_cast<const unsigned*>(&lo);
  u.y = *reinterpret_cast<const unsigned*>(&hi);
  *reinterpret_cast<uint2*>(dst) = u;
}

// dst[i ld + c] = bf16(scale(i) row(i)[c]) for i < rows, c < cols; 0 for rows <= i < rows_pad. row(i) points at
// the float32 (or bf16) row i. Fixed shapes: row(i) 16-byte aligned and cols a multiple of 4 (the host checks both),
// one load4 and one 8-byte store per four elements; Generic: stage_bf16. Either way each element is scale(i) x
// rounded once.
template <typename S, typename FR, typename FS>
__device__ __forceinline__ void stage_rows(bf16* dst, int ld, int rows, int rows_pad, int cols, FR row, FS scale) {
  if constexpr (S::fixed) {
    const int cv = cols / 4;
    batched_copy<float4>(
        rows_pad * cv,
        [&](int e) {
          const int i = e / cv;
          if (i >= rows) return make_float4(0.0f, 0.0f, 0.0f, 0.0f);
          const float s = scale(i);
          const float4 x = load4(row(i) + 4 * (e - i * cv));
          return make_float4(s * x.x, s * x.y, s * x.z, s * x.w);
        },
        [&](int e, float4 x) {
          const int i = e / cv;
          put_bf16x4(dst + i * ld + (e - i * cv) * 4, x);
        });
  } else {
    stage_bf16(dst, ld, rows, rows_pad, cols, [&](int i, int c) { return scale(i) * as_float(row(i)[c]); });
  }
}
// scale(i) of an unscaled stage_rows.
struct Unscaled {
  __device__ float operator()(int) const { return 1.0f; }
};

// One-pass staging at fixed shapes, in two steps so that a kernel can issue the loads of all its operands before the
// first store: fetch_rows<kPer> loads a thread's kPer float4 of a [pad, 4 cv] float32 (or bf16) operand (items
// e = threadIdx.x + u kParThreads, row e / cv; row i at src + i stride, 16-byte aligned; rows at or past `rows` read
// as 0) and, given a per-row scale in global memory, the scale of each item's row; put_rows stores them as bf16 at
// dst + i ld + 4 q, element (i, j) as f(i, j, scale x).
template <int kPer> struct Fetched {
  float4 v[kPer];
  float s[kPer];
};
template <int kPer, typename T>
__device__ __forceinline__ Fetched<kPer> fetch_rows(const T* src, int64_t stride, int rows, int cv,
                                                    const float* scale = nullptr) {
  Fetched<kPer> f;
#pragma unroll
  for (int u = 0; u < kPer; ++u) {
    const int e = threadIdx.x + u * kParThreads<float>, i = e / cv, q = e - i * cv;
    f.v[u] = i < rows ? load4(src + i * stride + 4 * q) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    f.s[u] = scale && i < rows ? scale[i] : 1.0f;
  }
  return f;
}
template <int kPer, typename F>
__device__ __forceinline__ void put_rows(const Fetched<kPer>& f, bf16* dst, int ld, int cv, F fn) {
#pragma unroll
  for (int u = 0; u < kPer; ++u) {
    const int e = threadIdx.x + u * kParThreads<float>, i = e / cv, j = 4 * (e - i * cv);
    const float s = f.s[u];
    put_bf16x4(dst + i * ld + j, make_float4(fn(i, j, s * f.v[u].x), fn(i, j + 1, s * f.v[u].y),
                                             fn(i, j + 2, s * f.v[u].z), fn(i, j + 3, s * f.v[u].w)));
  }
}
// put_rows' element function for a plain copy, and for the lower triangle (j <= i) of a square operand.
struct AsIs {
  __device__ float operator()(int, int, float x) const { return x; }
};
struct Lower {
  __device__ float operator()(int i, int j, float x) const { return j <= i ? x : 0.0f; }
};

// Two stage_rows of [L, K] float32 rows (row i at A + i stride, B + i stride) at a fixed shape in one pass, by a
// block of kT threads: a thread issues its 16-byte loads of both, up to kMax + kMax at a time (2 keeps
// prepare_mma_kernel at its 64 registers), before their stores (rows L.. zero).
template <typename S, int kT = kParThreads<float>, int kMax = 2>
__device__ __forceinline__ void stage_rows2(bf16* Ab, bf16* Bb, int ld, int L, const float* A, const float* B,
                                            int64_t stride) {
  constexpr int cv = S::K / 4, kPer = S::C * cv / kT, kB = kPer < kMax ? kPer : kMax;
  static_assert(S::C * cv % kT == 0 && kPer % kB == 0, "whole float4s per thread");
  const float4 zero = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
#pragma unroll
  for (int u0 = 0; u0 < kPer; u0 += kB) {
    float4 a[kB], b[kB];
#pragma unroll
    for (int u = 0; u < kB; ++u) {
      const int e = threadIdx.x + (u0 + u) * kT, i = e / cv, q = e - i * cv;
      a[u] = i < L ? reinterpret_cast<const float4*>(A + i * stride)[q] : zero;
      b[u] = i < L ? reinterpret_cast<const float4*>(B + i * stride)[q] : zero;
    }
#pragma unroll
    for (int u = 0; u < kB; ++u) {
      const int e = threadIdx.x + (u0 + u) * kT, i = e / cv, q = e - i * cv;
      put_bf16x4(Ab + i * ld + 4 * q, a[u]);
      put_bf16x4(Bb + i * ld + 4 * q, b[u]);
    }
  }
}

// 16 bytes global -> shared, asynchronous (cp_async_wait_all() completes it, as cp_async_elem).
__device__ __forceinline__ void cp_async16(void* dst, const void* src) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(dst));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(s), "l"(src) : "memory");
}
// Rows dst[i ld + c] = src[i stride + c], i < rows, c < cols, 16 bytes a copy, asynchronously (bf16 or float32: cols,
// ld and stride multiples of 16 / sizeof(T), src 16-byte aligned).
template <typename T>
__device__ __forceinline__ void async_rows16(T* dst, int ld, const T* src, int64_t stride, int rows, int cols) {
  constexpr int per = 16 / sizeof(T);
  const int cv = cols / per;
  for (int e = threadIdx.x; e < rows * cv; e += blockDim.x) {
    const int i = e / cv, c = (e - i * cv) * per;
    cp_async16(dst + i * ld + c, src + i * stride + c);
  }
}
// The same copies for kRows full rows of kCols at compile-time sizes by a block of kT threads: unrolled, each thread's
// row and column fixed, so that a copy costs an address add and the cp.async (the loop above, with a run-time
// bound and stride, spent several integer instructions on each).
template <int kT, int kRows, int kCols, typename T>
__device__ __forceinline__ void async_rows16_full(T* dst, int ld, const T* src, int64_t stride) {
  constexpr int per = 16 / sizeof(T), cv = kCols / per;
  static_assert(kCols % per == 0 && kRows * cv % kT == 0 && kT % cv == 0, "whole copies per thread");
  const int i0 = threadIdx.x / cv, c = (threadIdx.x % cv) * per;
  T* d = dst + i0 * ld + c;
  const T* s = src + i0 * stride + c;
#pragma unroll
  for (int u = 0; u < kRows * cv / kT; ++u) cp_async16(d + u * (kT / cv) * ld, s + u * (kT / cv) * stride);
}
// Asks L2 for rows [0, rows) of `bytes` bytes each (row i at base + i stride bytes), one prefetch per 128-byte line,
// spread over the block's threads; nothing waits for them. For the operands of a kernel's later phase, so that the
// phase's loads find them in L2 instead of waiting for DRAM.
__device__ __forceinline__ void prefetch_rows_l2(const void* base, int64_t stride, int rows, int bytes) {
  const int lines = (bytes + 127) / 128;
  const char* p = static_cast<const char*>(base);
  for (int e = threadIdx.x; e < rows * lines; e += blockDim.x) {
    const int i = e / lines, l = e - i * lines;
    asm volatile("prefetch.global.L2 [%0];\n" ::"l"(p + i * stride + l * 128));
  }
}
// The cp.async copies this thread issued since its last commit become one group.
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
// Waits until at most N of this thread's committed groups (the newest) are still in flight.
template <int N>
__device__ __forceinline__ void cp_async_wait_group() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}
// The gates of one chunk at the fixed shapes (C = 64, a block of at least 64 threads), with no serial loop:
// chunk_gates_tiled (cuda/delta_rule_chunked_tiled.cuh) sums the log-gates on one thread and builds each column of
// Gam as a running product on one thread, and meanwhile the rest of the block waits at its barrier (several thousand
// cycles a chunk). Here warp 0 sums gam_i = sum_{m<=i} g_m in double as a scan over its lanes (lane l holds rows 2l
// and 2l + 1), and then every thread takes its share of eg_i = exp(gam_i), r_i = exp(gam_{L-1} - gam_i) (double, as
// chunk_gates_tiled) and Gam_ij = exp(gam_i - gam_j) for j <= i, 0 above the diagonal (a float32 exponential of the
// double difference, rounded to float32: relative differences from the running product of about 1e-7 (1 + |gam_i -
// gam_j|), far inside the bf16 products' rounding). The scan adds in another order than the serial sum, so gam may
// differ in its last bits of double. Fills gam [C] (double), eg, r, bt [C] and Gam [L, L] (row stride ld); ends with
// a __syncthreads.
template <int C>
__device__ __forceinline__ void chunk_gates_scan(const Dims& d, const float* g, const float* beta, int64_t b,
                                                 int64_t hv, int64_t t0, int L, double* gam, float* eg, float* r,
                                                 float* bt, float* Gam, int ld) {
  static_assert(C == 64, "two rows a lane of warp 0");
  if (threadIdx.x < 32) {
    const int lane = threadIdx.x, i0 = 2 * lane, i1 = i0 + 1;
    const double g0 = i0 < L ? static_cast<double>(g[d.gate(b, t0 + i0, hv)]) : 0.0;
    const double g1 = i1 < L ? static_cast<double>(g[d.gate(b, t0 + i1, hv)]) : 0.0;
    if (i0 < L) bt[i0] = beta[d.gate(b, t0 + i0, hv)];
    if (i1 < L) bt[i1] = beta[d.gate(b, t0 + i1, hv)];
    const double before = warp_exclusive_sum(g0 + g1);  // the rows before i0
    gam[i0] = before + g0;
    gam[i1] = gam[i0] + g1;
  }
  __syncthreads();
  const double last = gam[L - 1];
  for (int i = threadIdx.x; i < L; i += blockDim.x) {
    eg[i] = static_cast<float>(exp(gam[i]));
    r[i] = static_cast<float>(exp(last - gam[i]));
  }
  for (int e = threadIdx.x; e < C * C; e += blockDim.x) {
    const int i = e / C, j = e - i * C;
    if (i < L && j < L) Gam[i * ld + j] = j <= i ? expf(static_cast<float>(gam[i] - gam[j])) : 0.0f;
  }
  __syncthreads();
}
// Rows [r0, r1) of a bf16 tile with cols columns set to 0.
__device__ __forceinline__ void zero_rows_bf16(bf16* dst, int ld, int r0, int r1, int cols) {
  for (int e = threadIdx.x; e < (r1 - r0) * cols; e += blockDim.x) {
    const int i = r0 + e / cols;
    dst[i * ld + e % cols] = __float2bfloat16(0.0f);
  }
}

}  // namespace gdn::cuda::delta_rule_tiled::mma
