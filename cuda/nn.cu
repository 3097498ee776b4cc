// cuda/nn.cu — CUDA kernels of the neural-network ops: embedding (forward, deterministic backward), fused
// cross-entropy, RMSNorm; float32 and float64. The CPU twins are in ops/cpu/nn_cpu.cpp.
//
// embedding_forward: out [N,D] = weight [V,D][ids [N]] (int32 or int64 ids). A group of threads per row (a warp for
//   D <= 32 up to a block of 256), grid-stride over rows; coalesced along D.
// embedding_backward: dweight [V,D] = sum over {i : ids[i] = v} of dout[i] (also scatter_add_rows, V = tokens).
//   Deterministic, without atomics: (key = id, value = position) pairs are sorted by cub::DeviceRadixSort (stable,
//   so equal ids keep position order), a pass over the sorted keys writes where each vocabulary row's run starts,
//   then a thread group per row v takes its run [lo, hi) and adds dout[pos[lo]], dout[pos[lo+1]], ... in T starting
//   from 0, writing every element of dweight once (0 for ids that never occur). That is exactly the CPU loop's order
//   (positions ascending), so the result is bit-identical to the CPU twin.
// cross_entropy_forward: a block per row, one pass over it: each thread keeps its running max m and sum
//   s = sum_j exp(x_j - m) (exp in T, sum in double, rescaled when m grows; float32 rows read as float4), then the
//   block's max M and sum of s exp(m - M), lse = M + log(sum); the row's loss lse - x[t] and a kept flag go to a
//   double scratch [2,N]; a one-block second pass adds them in a fixed order: loss = total / kept (0 when nothing is
//   kept), count = kept. Everything stays on the device. The CPU sums exp() in T with Eigen's vectorised order; here
//   it is double, so lse agrees to float rounding, not bit for bit.
// cross_entropy_backward: a block per row: dx_j = scale * exp(x_j - lse) - scale [j = t], scale = dloss / count
//   (0 when count = 0), both read on the device; ignored rows are 0; float32 rows as float4 where aligned. For
//   float32 logits dx may be bfloat16 (each value rounded to nearest even once, as the CPU twin does).
// rms_norm_forward / rms_norm_backward: a warp per row for D <= 1024, else a block per row; sums of squares and
//   dot products in double as on the CPU; the residual add before the norm (h = x + r) and the residual gradient
//   after it (dx + dres) fused in when given; y may be bfloat16 for float32 x (each value rounded once: the operand
//   of a bf16 GEMM, written by the norm instead of a copy kernel). dx = r * (dy * w - xh * mean(dy * w * xh)),
//   xh = x * r. dw [D] = sum over rows of dy * xh in double: blocks of 32 columns x 8 row lanes, each block summing a
//   fixed range of rows into a double partial [P,D] (lanes added in lane order), then a warp per column adding the P
//   partials in a fixed order (warp_column_sum; two-pass, deterministic; the CPU adds rows serially, so dw agrees to
//   rounding of a double sum).
//
// Ids and targets out of range: the CPU twins throw (embedding: "id {} at position {} is outside [0, V)";
// cross_entropy: "target {} at row {} outside [0, V)"). Reporting that from here would need a host read of device
// memory (a sync), which the kernels must not do. Instead no kernel reads or writes out of bounds, and the bad value
// shows up loudly in the results: embedding_forward writes NaN rows for bad ids, cross_entropy_forward counts a row
// with a bad target as kept with a NaN loss (so the mean loss is NaN); embedding_backward skips bad ids (their dout
// rows are dropped) and cross_entropy_backward omits the one-hot term of a bad target.
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
      embedding_forward_kernel<T, I><<<grid, block, 0, current_stream()>>>(out.data<T>(), weight.data<T>(),
                                                                           ids.data<I>(), N, V, D);
      CUDA_CHECK_LAST();
    });
  });
}

// keys[i] = ids[i] when in [0, V), else V (sorted past every real row and never looked up); pos[i] = i.
template <typename I>
__global__ void embedding_keys_kernel(uint32_t* __restrict__ keys, int32_t* __restrict__ pos,
                                      const I* __restrict__ ids, int64_t N, int64_t V) {
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
      embedding_keys_kernel<I><<<grid_for(N), kThreads, 0, stream>>>(kin, pin, ids.data<I>(), N, V);
      CUDA_CHECK_LAST();
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
  embedding_starts_kernel<<<grid_for(N + 1), kThreads, 0, stream>>>(starts.data<int32_t>(), keys_out, N, V);
  CUDA_CHECK_LAST();
  const int tpr = threads_for((D + kCols - 1) / kCols, kThreads);
  const dim3 block(tpr, kThreads / tpr);
  dispatch_float(dweight.dtype(), "cuda embedding_backward", [&](auto tag) {
    using T = decltype(tag);
    embedding_backward_kernel<T><<<grid_for(V, kThreads / tpr), block, 0, stream>>>(
        dweight.data<T>(), dout.data<T>(), starts.data<int32_t>(), pos_out, V, D);
    CUDA_CHECK_LAST();
  });
}

// ---------------------------------------------------------------------------------------------------------------
// cross-entropy
// ---------------------------------------------------------------------------------------------------------------

constexpr int kRowThreads = 512;  // threads per block of the cross-entropy row kernels

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
      for (int64_t j = threadIdx.x; j < V / 4; j += blockDim.x) {
        const Raw raw = reinterpret_cast<const Raw*>(xr)[j];
        if (stash) reinterpret_cast<Raw*>(stash)[j] = raw;
        const float4 q = load4(reinterpret_cast<const L*>(&raw), 0);
        a.add(q.x);
        a.add(q.y);
        a.add(q.z);
        a.add(q.w);
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
  __shared__ T smax[32], sl;
  __shared__ double ssum[32];
  for (int64_t i = blockIdx.x; i < N; i += gridDim.x) {
    const L* xr = x + i * V;
    row_lse(row_max_sum<T>(xr, V, vec4, static_cast<L*>(nullptr)), lse, rows, xr, targets[i], i, N, V,
            ignore_index, smax, ssum, &sl);
  }
}

// The arithmetic type of logits stored in `dt` (float32 for bfloat16 logits: lse, loss and count are float32 then).
DType ce_arithmetic(DType dt) { return dt == kBFloat16 ? kFloat32 : dt; }

// Whether the rows take the four-element path: V a multiple of 4, every pointer aligned for four of its elements.
bool ce_vec4(int64_t V, std::initializer_list<const Tensor*> ts) {
  if (V % 4 != 0) return false;
  for (const Tensor* t : ts)
    if (!is_aligned(t->raw_data(), 4 * element_size(t->dtype()))) return false;
  return true;
}

// One block: loss = sum(rows[0:N]) / kept, count = kept = sum(rows[N:2N]).
template <typename T>
__global__ void cross_entropy_mean_kernel(T* __restrict__ loss, T* __restrict__ count, const double* __restrict__ rows,
                                          int64_t N) {
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

void cross_entropy_forward(const Tensor& loss, const Tensor& lse, const Tensor& count, const Tensor& logits,
                           const Tensor& targets, int64_t ignore_index) {
  GDN_CHECK(logits.is_contiguous() && targets.is_contiguous() && lse.is_contiguous(),
            "cross_entropy: contiguous only");
  GDN_CHECK(logits.dim() == 2, "cross_entropy: logits must be [N, V], got {}", shape_str(logits.shape()));
  GDN_CHECK(targets.dtype() == kInt64, "cross_entropy: targets must be int64, got {}", targets.dtype());
  const int64_t N = logits.size(0), V = logits.size(1);
  GDN_CHECK(targets.numel() == N && lse.numel() == N, "cross_entropy: targets {} / lse {} for logits {}",
            shape_str(targets.shape()), shape_str(lse.shape()), shape_str(logits.shape()));
  cudaStream_t stream = current_stream();
  Tensor rows = Tensor::empty({2, std::max<int64_t>(N, 1)}, kFloat64, logits.device());
  dispatch_float(ce_arithmetic(logits.dtype()), "cuda cross_entropy", [&](auto tag) {
    using T = decltype(tag);
    if (N > 0) {
      const bool vec4 = ce_vec4(V, {&logits});
      with_storage<T>(logits, [&](auto* lp) {
        cross_entropy_rows_kernel<T><<<grid_for(N, 1), kRowThreads, 0, stream>>>(
            lse.data<T>(), rows.data<double>(), lp, targets.data<int64_t>(), N, V, ignore_index, vec4);
      });
      CUDA_CHECK_LAST();
    }
    cross_entropy_mean_kernel<T><<<1, 1024, 0, stream>>>(loss.data<T>(), count.data<T>(), rows.data<double>(), N);
    CUDA_CHECK_LAST();
  });
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
      for (int64_t q = threadIdx.x; q < V / 4; q += blockDim.x) {
        const float4 v = load4(xr, q);
        const int64_t j = 4 * q;
        store4(drow, q, make_float4(grad(j, v.x), grad(j + 1, v.y), grad(j + 2, v.z), grad(j + 3, v.w)));
      }
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
  const T scale = ce_scale(dloss, count);
  for (int64_t i = blockIdx.x; i < N; i += gridDim.x) {
    const int64_t t = targets[i];
    const bool ignored = t == ignore_index;
    write_grad_row(dx + i * V, x + i * V, scale, ignored ? T(0) : lse[i], t, ignored, V, vec4);
  }
}

// The forward and the backward of a row in one pass over the logits (cross_entropy_fused): the row is read once from
// global memory into shared memory (dynamic, V elements) while its max and sum run, then dx comes from there.
template <typename T, typename L, typename O>
__global__ void cross_entropy_fused_kernel(O* __restrict__ dx, T* __restrict__ lse, double* __restrict__ rows,
                                           const L* __restrict__ x, const int64_t* __restrict__ targets,
                                           const T* __restrict__ dscale, int64_t N, int64_t V, int64_t ignore_index,
                                           bool vec4) {
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
  dispatch_float(ce_arithmetic(logits.dtype()), "cuda cross_entropy_backward", [&](auto tag) {
    using T = decltype(tag);
    with_dlogits<T>(dlogits, logits, [&](auto* lp, auto* out, bool vec4) {
      cross_entropy_backward_kernel<T><<<grid_for(N, 1), kThreads, 0, current_stream()>>>(
          out, dloss.data<T>(), lp, lse.data<T>(), count ? count->data<T>() : nullptr, targets.data<int64_t>(), N, V,
          ignore_index, vec4);
      CUDA_CHECK_LAST();
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
  int optin = 0;
  CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, current_device()));
  if (N == 0 || V == 0 || row_bytes + 4096 > static_cast<size_t>(optin)) {  // no row in shared memory: two passes
    cross_entropy_forward(loss, lse, count, logits, targets, ignore_index);
    grad_rows(dlogits, dscale, nullptr, logits, lse, targets, ignore_index);
    return;
  }
  Tensor rows = Tensor::empty({2, N}, kFloat64, logits.device());
  dispatch_float(ce_arithmetic(logits.dtype()), "cuda cross_entropy_fused", [&](auto tag) {
    using T = decltype(tag);
    with_dlogits<T>(dlogits, logits, [&](auto* lp, auto* out, bool vec4) {
      using L = std::remove_pointer_t<decltype(lp)>;
      using O = std::remove_pointer_t<decltype(out)>;
      const auto kernel = cross_entropy_fused_kernel<T, L, O>;
      if (row_bytes > 48 * 1024)
        CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        static_cast<int>(row_bytes)));
      kernel<<<grid_for(N, 1), 1024, row_bytes, current_stream()>>>(out, lse.data<T>(), rows.data<double>(), lp,
                                                                     targets.data<int64_t>(), dscale.data<T>(), N, V,
                                                                     ignore_index, vec4);
      CUDA_CHECK_LAST();
    });
    cross_entropy_mean_kernel<T><<<1, 1024, 0, current_stream()>>>(loss.data<T>(), count.data<T>(),
                                                                  rows.data<double>(), N);
    CUDA_CHECK_LAST();
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

// With dres: dx + dres (the residual sum's gradient from its other consumers).
template <int G, typename T>
__global__ void rms_norm_dx_kernel(T* __restrict__ dx, const T* __restrict__ dy, const T* __restrict__ dres,
                                   const T* __restrict__ x, const T* __restrict__ w, const T* __restrict__ rstd,
                                   int64_t N, int64_t D) {
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

constexpr int kColX = 32, kColY = 8;

// Block (32, 8), blockIdx.x: 32 columns, blockIdx.y: split p of the rows. Writes dw (P == 1) or partial [P, D].
template <typename T>
__global__ void rms_norm_dw_kernel(T* __restrict__ dw, double* __restrict__ partial, const T* __restrict__ dy,
                                   const T* __restrict__ x, const T* __restrict__ rstd, int64_t N, int64_t D,
                                   int64_t P) {
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
  const int64_t warps = blockDim.x >> 5;
  for (int64_t d = blockIdx.x * warps + (threadIdx.x >> 5); d < D; d += warps * gridDim.x) {
    const double total = warp_column_sum(partial, P, D, d);
    if ((threadIdx.x & 31) == 0) dw[d] = static_cast<T>(total);
  }
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
      if (D <= 1024) {
        rms_norm_forward_kernel<32, T, Y><<<grid_for(N, kThreads / 32), kThreads, 0, current_stream()>>>(
            yp, rstd.data<T>(), hp, x.data<T>(), rp, w.data<T>(), N, D, eps);
      } else {
        rms_norm_forward_kernel<kThreads, T, Y><<<grid_for(N, 1), kThreads, 0, current_stream()>>>(
            yp, rstd.data<T>(), hp, x.data<T>(), rp, w.data<T>(), N, D, eps);
      }
    });
    CUDA_CHECK_LAST();
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
  cudaStream_t stream = current_stream();
  dispatch_float(x.dtype(), "cuda rms_norm_backward", [&](auto tag) {
    using T = decltype(tag);
    const T* drp = dres.defined() ? dres.data<T>() : nullptr;
    if (N > 0) {
      if (D <= 1024) {
        rms_norm_dx_kernel<32, T><<<grid_for(N, kThreads / 32), kThreads, 0, stream>>>(
            dx.data<T>(), dy.data<T>(), drp, x.data<T>(), w.data<T>(), rstd.data<T>(), N, D);
      } else {
        rms_norm_dx_kernel<kThreads, T><<<grid_for(N, 1), kThreads, 0, stream>>>(
            dx.data<T>(), dy.data<T>(), drp, x.data<T>(), w.data<T>(), rstd.data<T>(), N, D);
      }
      CUDA_CHECK_LAST();
    }
    // dw: about 1024 blocks in all, each split at least 64 rows long (8 per lane: a short chain of loads per
    // thread), at most 256 splits.
    const int64_t gx = (D + kColX - 1) / kColX;
    GDN_CHECK(gx <= INT32_MAX, "CUDA rms_norm_backward: D = {}", D);
    const int64_t P = std::max<int64_t>(1, std::min<int64_t>({(1024 + gx - 1) / gx, (N + 63) / 64, 256}));
    Tensor partial;
    if (P > 1) partial = Tensor::empty({P, D}, kFloat64, x.device());
    double* pp = P > 1 ? partial.data<double>() : nullptr;
    rms_norm_dw_kernel<T><<<dim3(static_cast<unsigned>(gx), static_cast<unsigned>(P)), dim3(kColX, kColY), 0,
                            stream>>>(dw.data<T>(), pp, dy.data<T>(), x.data<T>(), rstd.data<T>(), N, D, P);
    CUDA_CHECK_LAST();
    if (P > 1) {
      rms_norm_dw_partials_kernel<T><<<grid_for(D * 32), kThreads, 0, stream>>>(dw.data<T>(), pp, D, P);
      CUDA_CHECK_LAST();
    }
  });
}

}  // namespace

void register_nn_kernels(KernelTable& t) {
  t.embedding_forward = embedding_forward;
  t.embedding_backward = embedding_backward;
  t.cross_entropy_forward = cross_entropy_forward;
  t.cross_entropy_backward = cross_entropy_backward;
  t.cross_entropy_fused = cross_entropy_fused;
  t.rms_norm_forward = rms_norm_forward;
  t.rms_norm_backward = rms_norm_backward;
}

}  // namespace gdn::cuda
