// cuda/cross_entropy.cu — CUDA kernels of the cross-entropy over [N, V] logits: forward, backward and the two in one
// pass (float32 and float64; bfloat16 logits with float32 arithmetic). The CPU twins are in ops/cpu/nn_cpu.cpp.
//
// cross_entropy_forward: a block per row, one pass over it: each thread keeps its running max m and sum
//   s = sum_j exp(x_j - m) (exp in T, sum in double, rescaled when m grows; rows four elements per load where
//   aligned, kLoadBatch such loads in flight per thread before the first is used; float rows take the values of
//   those loads as one group: m moves once to the group's max, the group's exps are summed in float and that sum is
//   added to s in double, one conversion and one double add per group), then the block's max M and sum of
//   s exp(m - M), lse = M + log(sum); the row's loss lse - x[t] and a kept flag go to a double scratch [2,N]; a
//   one-block second pass adds them in a fixed order: loss = total / kept (0 when nothing is kept), count = kept.
//   Rows that fit the register kernel (below) take it instead, the same reductions with its grouping.
//   Everything stays on the device. The CPU sums exp() in T with Eigen's vectorised order; here it is double, so lse
//   agrees to float rounding, not bit for bit.
// cross_entropy_backward: a block per row: dx_j = scale * exp(x_j - lse) - scale [j = t], scale = dloss / count
//   (0 when count = 0), both read on the device; ignored rows are 0; four elements per load and store where aligned,
//   kLoadBatch such loads in flight per thread (as in the forward); bfloat16 rows that fit the register kernel take
//   its 16-byte loads and stores. For float32 logits dx may be bfloat16 (each value rounded to nearest even once, as
//   the CPU twin does).
// cross_entropy_fused: both in one pass over each row (dx for a scale known beforehand: linear_cross_entropy's
//   dloss / N), the row held between them in the register kernel where it fits. Other rows go through shared memory
//   (dynamic, the row in its storage type, 1024 threads; the forward's pass and grouping), and rows too wide for that
//   take the two kernels.
// The register kernel (cross_entropy_regs_kernel: a row's forward, fused pass or backward): float32 or bfloat16 logits,
//   V a multiple of 16 bytes' elements and at most 49152, 16-byte aligned (bfloat16: 512 threads of 96 values, two
//   blocks per SM; float32: 1024 threads of 48 values, one block per SM; 64 registers a thread). Each thread issues all
//   its 16-byte loads before using the first; the forward takes its max over them, then sums exp in float per 16
//   values, each group's sum added in double (the forward's groups, with m fixed at the thread's max); dx leaves from
//   the registers, 16 bytes per store (8 for float32 logits' bfloat16 dx).
// bfloat16 logits (the bf16 lm_head's in a training step): float32 arithmetic on their values (T = float, L the
//   storage), loss, lse and count in float32, dx in bfloat16.
//
// Targets out of range: the CPU twin throws ("target {} at row {} outside [0, V)"). Reporting that from here would
// need a host read of device memory (a sync), which the kernels must not do. Instead no kernel reads or writes out of
// bounds, and the bad value shows up loudly in the results: cross_entropy_forward counts a row with a bad target as
// kept with a NaN loss (so the mean loss is NaN) and cross_entropy_backward omits the one-hot term of a bad target.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <type_traits>

#include "cuda/cuda_kernels.h"
#include "cuda/launch.h"
#include "cuda/stream.h"

namespace gdn::cuda {

namespace {

constexpr int kRowThreads = 512;  // threads per block of the cross-entropy row kernels
constexpr int kLoadBatch = 4;     // loads of four elements each thread issues before it uses the first

// One thread's running (max, sum of exp) over its elements of a row: s = sum exp(x - m) in double, exp in T, s
// rescaled by exp(m_old - m_new) when a larger element arrives (one pass over the row instead of two).
template <typename T> struct RowMaxSum {
  T m = T(-INFINITY);
  double s = 0;
  __device__ void add(T x) {
    if (x > m) {
      s = m == T(-INFINITY) ? 0.0 : s * static_cast<double>(exp(m - x));
      m = x;
    }
    if (m != T(-INFINITY)) s += static_cast<double>(exp(x - m));
  }
  // The n values of x at once (T = float): m moves once to their max, their exps are summed in float, then that sum
  // is added to s. NaN and infinite values give what add() would: a NaN never raises m (fmaxf skips it) but its exp
  // makes s NaN once m is finite; +inf makes m = inf and exp(inf - inf) = NaN.
  template <int n>
  __device__ void add_group(const float (&x)[n]) {
    float bm = x[0];
#pragma unroll
    for (int i = 1; i < n; ++i) bm = fmaxf(bm, x[i]);
    if (bm > m) {
      s = m == T(-INFINITY) ? 0.0 : s * static_cast<double>(exp(m - bm));
      m = bm;
    }
    if (m == T(-INFINITY)) return;
    float t = 0;
#pragma unroll
    for (int i = 0; i < n; ++i) t += exp(x[i] - m);
    s += static_cast<double>(t);
  }
};

// One thread's pass over its elements of row xr (L: the logits' storage, T or bfloat16 for T = float; rows of a
// multiple of 4, aligned, four elements per load where vec4): their running max and sum; each element also copied to
// stash when given (the fused kernel's row in shared memory, in L).
template <typename T, typename L>
__device__ RowMaxSum<T> row_max_sum(const L* __restrict__ xr, int64_t V, bool vec4, L* __restrict__ stash) {
  RowMaxSum<T> a;
  if constexpr (std::is_same_v<T, float>) {
    if (vec4) {
      using Raw = std::conditional_t<std::is_same_v<L, float>, float4, uint2>;  // four elements of L
      const Raw* x4 = reinterpret_cast<const Raw*>(xr);
      Raw* s4 = reinterpret_cast<Raw*>(stash);
      // The four values of L of one load into x[0 .. 3] (and the raw load into the stash).
      auto take = [&](const Raw& raw, int64_t j, float* x) {
        if (stash) s4[j] = raw;
        const float4 q = load4(reinterpret_cast<const L*>(&raw), 0);
        x[0] = q.x, x[1] = q.y, x[2] = q.z, x[3] = q.w;
      };
      // kLoadBatch loads in flight per thread before any is used, their 4 kLoadBatch values added as one group (one
      // update of the max, one double add: the per-value conversion and double add had bounded the kernel).
      const int64_t n4 = V / 4, step = blockDim.x;
      int64_t j = threadIdx.x;
      for (; j + (kLoadBatch - 1) * step < n4; j += kLoadBatch * step) {
        Raw raw[kLoadBatch];
#pragma unroll
        for (int k = 0; k < kLoadBatch; ++k) raw[k] = x4[j + k * step];
        float x[4 * kLoadBatch];
#pragma unroll
        for (int k = 0; k < kLoadBatch; ++k) take(raw[k], j + k * step, x + 4 * k);
        a.add_group(x);
      }
      for (; j < n4; j += step) {
        float x[4];
        take(x4[j], j, x);
        a.add_group(x);
      }
      return a;
    }
  }
  for (int64_t j = threadIdx.x; j < V; j += blockDim.x) {
    const L v = xr[j];
    a.add(in_value<T>(v));
    if (stash) stash[j] = v;
  }
  return a;
}

// The row's lse from every thread's (max, sum), returned to all threads (through *sl; ends with a block barrier);
// thread 0 writes lse[i], rows[i] = lse - x[t] (0 when ignored) and rows[N + i] = 1 when kept.
template <typename T, typename L>
__device__ T row_lse(const RowMaxSum<T>& a, T* lse, double* rows, const L* xr, int64_t t, int64_t i, int64_t N,
                     int64_t V, int64_t ignore_index, T* smax, double* ssum, T* sl) {
  const T m = block_max(a.m, smax);
  double s = a.m == T(-INFINITY) ? 0.0 : a.s * static_cast<double>(exp(a.m - m));
  s = block_sum(s, ssum);
  if (threadIdx.x == 0) {
    const double l = static_cast<double>(m) + log(s);
    lse[i] = static_cast<T>(l);
    *sl = static_cast<T>(l);
    if (t == ignore_index) {
      rows[i] = 0;
      rows[N + i] = 0;
    } else {
      rows[i] = t >= 0 && t < V ? l - static_cast<double>(in_value<T>(xr[t])) : static_cast<double>(NAN);
      rows[N + i] = 1;
    }
  }
  __syncthreads();
  return *sl;
}

// A block per row: lse[i], rows[i], rows[N + i] (row_lse).
template <typename T, typename L>
__global__ void cross_entropy_rows_kernel(T* __restrict__ lse, double* __restrict__ rows, const L* __restrict__ x,
                                          const int64_t* __restrict__ targets, int64_t N, int64_t V,
                                          int64_t ignore_index, bool vec4) {
  pdl_enter();
  __shared__ T smax[32], sl;
  __shared__ double ssum[32];
  for (int64_t i = blockIdx.x; i < N; i += gridDim.x) {
    const L* xr = x + i * V;
    row_lse(row_max_sum<T>(xr, V, vec4, static_cast<L*>(nullptr)), lse, rows, xr, targets[i], i, N, V,
            ignore_index, smax, ssum, &sl);
  }
}

// Whether the rows take the four-element path: V a multiple of 4, every pointer aligned for four of its elements.
bool ce_vec4(int64_t V, std::initializer_list<const Tensor*> ts) { return V % 4 == 0 && aligned4(ts); }

// One block: loss = sum(rows[0:N]) / kept, count = kept = sum(rows[N:2N]).
template <typename T>
__global__ void cross_entropy_mean_kernel(T* __restrict__ loss, T* __restrict__ count, const double* __restrict__ rows,
                                          int64_t N) {
  pdl_enter();
  __shared__ double scratch[32];
  double total = 0, kept = 0;
  for (int64_t i = threadIdx.x; i < N; i += blockDim.x) {
    total += rows[i];
    kept += rows[N + i];
  }
  total = block_sum(total, scratch);
  kept = block_sum(kept, scratch);
  if (threadIdx.x == 0) {
    loss[0] = static_cast<T>(kept > 0 ? total / kept : 0.0);
    count[0] = static_cast<T>(kept);
  }
}

// One row of dx: scale * exp(x_j - l) - scale [j = t], 0 when the row is ignored. T: the arithmetic; L: the logits'
// storage, O: dx's (each T, or bfloat16 for T = float). xr in global or shared memory; rows of a multiple of 4 four
// elements per load and store where vec4 (every pointer aligned for four of its elements).
template <typename T, typename L, typename O>
__device__ void write_grad_row(O* __restrict__ drow, const L* __restrict__ xr, T scale, T l, int64_t t, bool ignored,
                               int64_t V, bool vec4) {
  auto grad = [&](int64_t j, T xj) {
    if (ignored) return T(0);
    T v = scale * exp(xj - l);
    if (j == t) v -= scale;
    return v;
  };
  if constexpr (std::is_same_v<T, float>) {
    if (vec4) {
      auto put = [&](const float4& v, int64_t q) {
        const int64_t j = 4 * q;
        store4(drow, q, make_float4(grad(j, v.x), grad(j + 1, v.y), grad(j + 2, v.z), grad(j + 3, v.w)));
      };
      const int64_t n4 = V / 4, step = blockDim.x;
      int64_t q = threadIdx.x;
      for (; q + (kLoadBatch - 1) * step < n4; q += kLoadBatch * step) {  // kLoadBatch loads in flight, as above
        float4 v[kLoadBatch];
#pragma unroll
        for (int k = 0; k < kLoadBatch; ++k) v[k] = load4(xr, q + k * step);
#pragma unroll
        for (int k = 0; k < kLoadBatch; ++k) put(v[k], q + k * step);
      }
      for (; q < n4; q += step) put(load4(xr, q), q);
      return;
    }
  }
  for (int64_t j = threadIdx.x; j < V; j += blockDim.x) drow[j] = out_value<O>(grad(j, in_value<T>(xr[j])));
}

// scale = dloss / count (0 when count = 0), or dloss itself when count is null.
template <typename T>
__device__ T ce_scale(const T* dloss, const T* count) {
  if (!count) return dloss[0];
  const T c = count[0];
  return c > T(0) ? dloss[0] / c : T(0);
}

template <typename T, typename L, typename O>
__global__ void cross_entropy_backward_kernel(O* __restrict__ dx, const T* __restrict__ dloss,
                                              const L* __restrict__ x, const T* __restrict__ lse,
                                              const T* __restrict__ count, const int64_t* __restrict__ targets,
                                              int64_t N, int64_t V, int64_t ignore_index, bool vec4) {
  pdl_enter();
  const T scale = ce_scale(dloss, count);
  for (int64_t i = blockIdx.x; i < N; i += gridDim.x) {
    const int64_t t = targets[i];
    const bool ignored = t == ignore_index;
    write_grad_row(dx + i * V, x + i * V, scale, ignored ? T(0) : lse[i], t, ignored, V, vec4);
  }
}

// The forward and the backward of a row in one pass over the logits (cross_entropy_fused, rows that the register
// kernel below does not take): the row is read once from global memory into shared memory (dynamic, V elements)
// while its max and sum run, then dx comes from there.
template <typename T, typename L, typename O>
__global__ void cross_entropy_fused_kernel(O* __restrict__ dx, T* __restrict__ lse, double* __restrict__ rows,
                                           const L* __restrict__ x, const int64_t* __restrict__ targets,
                                           const T* __restrict__ dscale, int64_t N, int64_t V, int64_t ignore_index,
                                           bool vec4) {
  pdl_enter();
  extern __shared__ __align__(16) unsigned char ce_row[];
  L* row = reinterpret_cast<L*>(ce_row);
  __shared__ T smax[32], sl;
  __shared__ double ssum[32];
  const T scale = dscale[0];
  for (int64_t i = blockIdx.x; i < N; i += gridDim.x) {
    const L* xr = x + i * V;
    const int64_t t = targets[i];
    const bool ignored = t == ignore_index;
    const T l = row_lse(row_max_sum<T>(xr, V, vec4, row), lse, rows, xr, t, i, N, V, ignore_index, smax, ssum, &sl);
    write_grad_row(dx + i * V, row, scale, ignored ? T(0) : l, t, ignored, V, vec4);
    __syncthreads();  // the row's readers are done before the next row is stashed
  }
}

// The values of one 16-byte load of L as float: 8 bfloat16 or 4 float32.
template <typename L>
__device__ inline void unpack16(const uint4& r, float* v) {
  const uint32_t w[4] = {r.x, r.y, r.z, r.w};
#pragma unroll
  for (int c = 0; c < 4; ++c) {
    if constexpr (std::is_same_v<L, __nv_bfloat16>) {
      v[2 * c] = __uint_as_float(w[c] << 16);
      v[2 * c + 1] = __uint_as_float(w[c] & 0xffff0000u);
    } else {
      v[c] = __uint_as_float(w[c]);
    }
  }
}

// The largest value of one 16-byte load of L folded into m; NaN skipped (fmaxf; bfloat16 pairs by max.bf16x2, whose
// NaN rule is the same, on the packed words, so that no unpacked value stays live).
template <typename L>
__device__ inline void max16(const uint4& r, float& m) {
  if constexpr (std::is_same_v<L, __nv_bfloat16>) {
    uint32_t a, b;
    asm("max.bf16x2 %0, %1, %2;" : "=r"(a) : "r"(r.x), "r"(r.y));
    asm("max.bf16x2 %0, %1, %2;" : "=r"(b) : "r"(r.z), "r"(r.w));
    asm("max.bf16x2 %0, %1, %2;" : "=r"(a) : "r"(a), "r"(b));
    m = fmaxf(m, fmaxf(__uint_as_float(a << 16), __uint_as_float(a & 0xffff0000u)));
  } else {
    m = fmaxf(m, fmaxf(fmaxf(__uint_as_float(r.x), __uint_as_float(r.y)),
                       fmaxf(__uint_as_float(r.z), __uint_as_float(r.w))));
  }
}

// n values to p in O (bfloat16 rounded to nearest even once) as 16-byte stores, or one 8-byte store for 8 bytes;
// p aligned for them.
template <typename O, int n>
__device__ inline void store_vec(O* p, const float (&v)[n]) {
  constexpr int words = n * static_cast<int>(sizeof(O)) / 4;
  static_assert(words == 2 || words % 4 == 0, "8 bytes or a multiple of 16");
  uint32_t w[words];
#pragma unroll
  for (int c = 0; c < words; ++c) {
    if constexpr (std::is_same_v<O, __nv_bfloat16>) {
      const __nv_bfloat162 h = __floats2bfloat162_rn(v[2 * c], v[2 * c + 1]);
      w[c] = *reinterpret_cast<const uint32_t*>(&h);
    } else {
      w[c] = __float_as_uint(v[c]);
    }
  }
  if constexpr (words == 2) {
    *reinterpret_cast<uint2*>(p) = make_uint2(w[0], w[1]);
  } else {
#pragma unroll
    for (int c = 0; c < words / 4; ++c)
      reinterpret_cast<uint4*>(p)[c] = make_uint4(w[4 * c], w[4 * c + 1], w[4 * c + 2], w[4 * c + 3]);
  }
}

// What cross_entropy_regs_kernel does with a row: its lse (the forward's), its lse and then dx (the fused pass), or
// dx from a given lse (the backward).
enum class CeMode { kForward, kFused, kBackward };

// The register-resident row (float32 arithmetic; L float32 or bfloat16): rows of at most kThr * kLoads * kVec
// elements, kVec = 16 bytes of L, V a multiple of kVec. Thread j's loads are the 16-byte chunks q = j, j + kThr, ...
// (kLoads of them, past the row's end -inf), all issued before the first is used. Forward and fused: its max m is
// taken over all of them first, then their exps are summed 16 values at a time (as RowMaxSum::add_group: each
// group's exps summed in float, that sum added to s in double; m never moves) and row_lse reduces over the block.
// Fused and backward: dx goes out from the same registers, kVec values per store, scale = ce_scale(dscale, count).
template <CeMode kMode, typename L, typename O, int kThr, int kLoads, int kMinBlocks>
__global__ void __launch_bounds__(kThr, kMinBlocks)
    cross_entropy_regs_kernel(O* __restrict__ dx, float* __restrict__ lse, double* __restrict__ rows,
                              const L* __restrict__ x, const int64_t* __restrict__ targets,
                              const float* __restrict__ dscale, const float* __restrict__ count, int64_t N, int64_t V,
                              int64_t ignore_index) {
  pdl_enter();
  constexpr int kVec = 16 / static_cast<int>(sizeof(L)), kGroup = 16 / kVec;  // loads per group of 16 values
  static_assert(kLoads % kGroup == 0, "whole groups");
  constexpr uint32_t kPad = std::is_same_v<L, __nv_bfloat16> ? 0xff80ff80u : 0xff800000u;  // -inf in L
  __shared__ float smax[32], sl;
  __shared__ double ssum[32];
  float scale = 0;
  if constexpr (kMode != CeMode::kForward) scale = ce_scale(dscale, count);
  const int n = static_cast<int>(V / kVec);
  for (int64_t i = blockIdx.x; i < N; i += gridDim.x) {
    const L* xr = x + i * V;
    const uint4* x4 = reinterpret_cast<const uint4*>(xr);
    uint4 raw[kLoads];
#pragma unroll
    for (int k = 0; k < kLoads; ++k) {
      const int q = threadIdx.x + k * kThr;  // past the end: the row's last chunk again (no branch), then -inf
      const uint4 r = __ldcs(x4 + min(q, n - 1));
      raw[k] = q < n ? r : make_uint4(kPad, kPad, kPad, kPad);
    }
    const int64_t t = targets[i];
    const bool ignored = t == ignore_index;
    float l;
    if constexpr (kMode == CeMode::kBackward) {
      l = ignored ? 0.0f : lse[i];
    } else {
      RowMaxSum<float> a;
#pragma unroll
      for (int k = 0; k < kLoads; ++k) max16<L>(raw[k], a.m);
      // add_group's arithmetic for each 16 values with m already at their max: their exps summed in float, that sum
      // added in double; nothing when m = -inf (the fused pass branches around the sums, the forward drops them: each
      // way ptxas fits it in 64 registers). Each value goes into its exp as it is unpacked.
      if (kMode == CeMode::kForward || a.m != -INFINITY) {
#pragma unroll
        for (int g = 0; g < kLoads / kGroup; ++g) {
          float sum = 0;
#pragma unroll
          for (int k = 0; k < kGroup; ++k) {
            float v[kVec];
            unpack16<L>(raw[g * kGroup + k], v);
#pragma unroll
            for (int e = 0; e < kVec; ++e) sum += exp(v[e] - a.m);
          }
          a.s += static_cast<double>(sum);
        }
      }
      if (a.m == -INFINITY) a.s = 0;
      l = row_lse(a, lse, rows, xr, t, i, N, V, ignore_index, smax, ssum, &sl);
    }
    if constexpr (kMode != CeMode::kForward) {
      O* dr = dx + i * V;
#pragma unroll
      for (int k = 0; k < kLoads; ++k) {
        const int q = threadIdx.x + k * kThr;
        if (q >= n) break;
        const int64_t tq = t - static_cast<int64_t>(q) * kVec;  // the target's place in this chunk, if in [0, kVec)
        float v[kVec], d[kVec];
        unpack16<L>(raw[k], v);
#pragma unroll
        for (int e = 0; e < kVec; ++e) {
          d[e] = ignored ? 0.0f : scale * exp(v[e] - l);
          if (!ignored && e == tq) d[e] -= scale;
        }
        store_vec(dr + static_cast<int64_t>(q) * kVec, d);
      }
    }
  }
}

// The register kernel's shape for logits of L (bfloat16: 512 threads of 96 values, two blocks per SM; float32: 1024
// threads of 48 values, one block per SM; at most 64 registers a thread either way): rows up to kLoads * kThr * kVec
// = 49152 elements.
template <typename L> struct CeRegs {
  static constexpr bool bf16 = std::is_same_v<L, __nv_bfloat16>;
  static constexpr int kThr = bf16 ? 512 : 1024, kLoads = 12, kMinBlocks = bf16 ? 2 : 1;
  static constexpr int64_t kVec = 16 / sizeof(L), kMaxV = int64_t{kThr} * kLoads * kVec;
};
// Whether the register kernel has an instance for arithmetic T, logits L and dx O: float32 arithmetic, dx in float32
// or bfloat16 for float32 logits, in bfloat16 for bfloat16 logits.
template <typename T, typename L, typename O>
constexpr bool kRegsTypes = std::is_same_v<T, float> && !(std::is_same_v<L, __nv_bfloat16> && std::is_same_v<O, float>);

// Whether the register kernel takes the rows: float32 or bfloat16 logits, N and V > 0, V a multiple of 16 bytes'
// elements and at most kMaxV, logits 16-byte aligned, dlogits (when given) aligned for a chunk's values (8 or 16).
bool ce_regs(const Tensor& logits, const Tensor* dlogits) {
  const int64_t N = logits.size(0), V = logits.size(1);
  const bool bf16 = logits.dtype() == kBFloat16;
  if (!bf16 && logits.dtype() != kFloat32) return false;
  const int64_t vec = 16 / element_size(logits.dtype());
  return N > 0 && V > 0 && V % vec == 0 && V <= (bf16 ? CeRegs<__nv_bfloat16>::kMaxV : CeRegs<float>::kMaxV) &&
         is_aligned(logits.raw_data(), 16) &&
         (!dlogits || is_aligned(dlogits->raw_data(), std::min<int64_t>(16, vec * element_size(dlogits->dtype()))));
}

// The register kernel in mode kMode over the N rows (dx unused in the forward, rows and count null where unused).
template <CeMode kMode, typename L, typename O>
void launch_regs(O* dx, float* lse, double* rows, const L* x, const Tensor& targets, const float* dscale,
                 const float* count, int64_t N, int64_t V, int64_t ignore_index) {
  using R = CeRegs<L>;
  launch(cross_entropy_regs_kernel<kMode, L, O, R::kThr, R::kLoads, R::kMinBlocks>, grid_for(N, 1), R::kThr, 0, dx,
         lse, rows, x, targets.data<int64_t>(), dscale, count, N, V, ignore_index);
}

void cross_entropy_forward(const Tensor& loss, const Tensor& lse, const Tensor& count, const Tensor& logits,
                           const Tensor& targets, int64_t ignore_index) {
  GDN_CHECK(logits.is_contiguous() && targets.is_contiguous() && lse.is_contiguous(),
            "cross_entropy: contiguous only");
  GDN_CHECK(logits.dim() == 2, "cross_entropy: logits must be [N, V], got {}", shape_str(logits.shape()));
  GDN_CHECK(targets.dtype() == kInt64, "cross_entropy: targets must be int64, got {}", targets.dtype());
  const int64_t N = logits.size(0), V = logits.size(1);
  GDN_CHECK(targets.numel() == N && lse.numel() == N, "cross_entropy: targets {} / lse {} for logits {}",
            shape_str(targets.shape()), shape_str(lse.shape()), shape_str(logits.shape()));
  Tensor rows = Tensor::empty({2, std::max<int64_t>(N, 1)}, kFloat64, logits.device());
  dispatch_float(arithmetic_dtype(logits.dtype()), "cuda cross_entropy", [&](auto tag) {
    using T = decltype(tag);
    if (N > 0) {
      const bool vec4 = ce_vec4(V, {&logits}), regs = ce_regs(logits, nullptr);
      with_storage<T>(logits, [&](auto* lp) {
        using L = std::remove_pointer_t<decltype(lp)>;
        if constexpr (std::is_same_v<T, float>) {
          if (regs) {
            launch_regs<CeMode::kForward>(static_cast<L*>(nullptr), lse.data<T>(), rows.data<double>(), lp, targets,
                                          nullptr, nullptr, N, V, ignore_index);
            return;
          }
        }
        launch(cross_entropy_rows_kernel<T, L>, grid_for(N, 1), kRowThreads, 0, lse.data<T>(), rows.data<double>(), lp,
               targets.data<int64_t>(), N, V, ignore_index, vec4);
      });
    }
    launch(cross_entropy_mean_kernel<T>, 1, 1024, 0, loss.data<T>(), count.data<T>(), rows.data<double>(), N);
  });
}

// The checks shared by the backward and the fused kernel: contiguous, dlogits of the logits' shape, in their dtype or
// in bfloat16 for float32 logits; the logits may be bfloat16 (float32 arithmetic).
void check_dlogits(const Tensor& dlogits, const Tensor& logits, const Tensor& lse, const Tensor& targets,
                   const char* what) {
  GDN_CHECK(dlogits.is_contiguous() && logits.is_contiguous() && lse.is_contiguous() && targets.is_contiguous(),
            "{}: contiguous only", what);
  GDN_CHECK(logits.dim() == 2 && dlogits.shape() == logits.shape(), "{}: dlogits {} logits {}", what,
            shape_str(dlogits.shape()), shape_str(logits.shape()));
  GDN_CHECK(dlogits.dtype() == logits.dtype() || (dlogits.dtype() == kBFloat16 && logits.dtype() == kFloat32),
            "{}: {} dlogits for {} logits", what, dlogits.dtype(), logits.dtype());
}

// f(logits, dlogits, vec4) with the typed pointers (T, or bfloat16 for T = float) and whether four-element rows
// apply.
template <typename T, typename F>
void with_dlogits(const Tensor& dlogits, const Tensor& logits, F f) {
  const bool vec4 = ce_vec4(logits.size(1), {&logits, &dlogits});
  with_storage<T>(logits, [&](auto* lp) { with_storage<T>(dlogits, [&](auto* dp) { f(lp, dp, vec4); }); });
}

// dlogits from the logits and their lse: scale = dloss / count, or dloss itself when count is null.
void grad_rows(const Tensor& dlogits, const Tensor& dloss, const Tensor* count, const Tensor& logits,
               const Tensor& lse, const Tensor& targets, int64_t ignore_index) {
  const int64_t N = logits.size(0), V = logits.size(1);
  if (N == 0 || V == 0) return;
  dispatch_float(arithmetic_dtype(logits.dtype()), "cuda cross_entropy_backward", [&](auto tag) {
    using T = decltype(tag);
    const bool regs = ce_regs(logits, &dlogits);
    with_dlogits<T>(dlogits, logits, [&](auto* lp, auto* out, bool vec4) {
      using L = std::remove_pointer_t<decltype(lp)>;
      using O = std::remove_pointer_t<decltype(out)>;
      if constexpr (kRegsTypes<T, L, O> && std::is_same_v<L, __nv_bfloat16>) {  // bfloat16 logits and dx
        if (regs) {
          launch_regs<CeMode::kBackward>(out, lse.data<T>(), nullptr, lp, targets, dloss.data<T>(),
                                         count ? count->data<T>() : nullptr, N, V, ignore_index);
          return;
        }
      }
      launch(cross_entropy_backward_kernel<T, L, O>, grid_for(N, 1), kThreads, 0, out, dloss.data<T>(), lp,
             lse.data<T>(), count ? count->data<T>() : nullptr, targets.data<int64_t>(), N, V, ignore_index, vec4);
    });
  });
}

void cross_entropy_backward(const Tensor& dlogits, const Tensor& dloss, const Tensor& logits, const Tensor& lse,
                            const Tensor& count, const Tensor& targets, int64_t ignore_index) {
  check_dlogits(dlogits, logits, lse, targets, "cross_entropy_backward");
  grad_rows(dlogits, dloss, &count, logits, lse, targets, ignore_index);
}

void cross_entropy_fused(const Tensor& loss, const Tensor& lse, const Tensor& count, const Tensor& dlogits,
                         const Tensor& dscale, const Tensor& logits, const Tensor& targets, int64_t ignore_index) {
  check_dlogits(dlogits, logits, lse, targets, "cross_entropy_fused");
  GDN_CHECK(targets.dtype() == kInt64 && targets.numel() == logits.size(0) && lse.numel() == logits.size(0),
            "cross_entropy_fused: targets {} / lse {} for logits {}", shape_str(targets.shape()),
            shape_str(lse.shape()), shape_str(logits.shape()));
  const int64_t N = logits.size(0), V = logits.size(1);
  const size_t row_bytes = static_cast<size_t>(V) * element_size(logits.dtype());
  const bool regs = ce_regs(logits, &dlogits);
  int optin = 0;
  CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, current_device()));
  if (!regs && (N == 0 || V == 0 || row_bytes + 4096 > static_cast<size_t>(optin))) {  // two passes
    cross_entropy_forward(loss, lse, count, logits, targets, ignore_index);
    grad_rows(dlogits, dscale, nullptr, logits, lse, targets, ignore_index);
    return;
  }
  Tensor rows = Tensor::empty({2, N}, kFloat64, logits.device());
  dispatch_float(arithmetic_dtype(logits.dtype()), "cuda cross_entropy_fused", [&](auto tag) {
    using T = decltype(tag);
    with_dlogits<T>(dlogits, logits, [&](auto* lp, auto* out, bool vec4) {
      using L = std::remove_pointer_t<decltype(lp)>;
      using O = std::remove_pointer_t<decltype(out)>;
      if constexpr (kRegsTypes<T, L, O>) {
        if (regs) {
          launch_regs<CeMode::kFused>(out, lse.data<T>(), rows.data<double>(), lp, targets, dscale.data<T>(), nullptr,
                                      N, V, ignore_index);
          return;
        }
      }
      const auto kernel = cross_entropy_fused_kernel<T, L, O>;
      if (row_bytes > 48 * 1024)
        CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        static_cast<int>(row_bytes)));
      launch(kernel, grid_for(N, 1), 1024, row_bytes, out, lse.data<T>(), rows.data<double>(), lp,
             targets.data<int64_t>(), dscale.data<T>(), N, V, ignore_index, vec4);
    });
    launch(cross_entropy_mean_kernel<T>, 1, 1024, 0, loss.data<T>(), count.data<T>(), rows.data<double>(), N);
  });
}

}  // namespace

void register_cross_entropy_kernels(KernelTable& t) {
  t.cross_entropy_forward = cross_entropy_forward;
  t.cross_entropy_backward = cross_entropy_backward;
  t.cross_entropy_fused = cross_entropy_fused;
}

}  // namespace gdn::cuda
