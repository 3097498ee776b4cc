// cuda/reduce.cu — CUDA reductions: sum over broadcast dimensions (sum_to), max along a dimension with its first
// index (max_dim), and the scatter of max's gradient (scatter_dim); float32 and float64.
//
// sum_to: out[m] = sum_r in[m, r], where m runs over the M output elements (the "kept" dimensions, where out and in
// have the same size) and r over the R elements of the reduced dimensions (out has size 1, in does not). Any strides
// of `in` and `out`. Accumulation is in double whatever T, as in the CPU twin (ops/cpu/reduce_cpu.cpp). Adjacent
// reduced dimensions that are contiguous with each other are merged first, so the usual cases (a full reduction, a
// bias gradient [B,T,D] -> [1,1,D]) address the reduced elements as r * stride. Two decompositions, picked from the
// strides so that a warp reads consecutive addresses:
//   row    (the reduced dimensions are the innermost, or M = 1): a block per (m, split); the block's threads read
//          consecutive r of the split's range, each thread sums its strided subset in order, then block_sum.
//   column (a kept dimension is the innermost): a 32 x 8 block; threadIdx.x runs over 32 consecutive m, threadIdx.y
//          over 8 interleaved lanes of the split's r range; the 8 lane sums are added in lane order in shared memory.
// When R is long, it is cut into S splits (S depends only on M and R), each writes a double partial [S, M], and a
// second kernel adds the S partials of every m in split order (block per m, block_sum). Hence deterministic: the same
// shapes always add in the same order. The order differs from the CPU twin's (serial in index order, or OpenMP
// chunks for a contiguous full reduction), so float results agree to rounding of a double sum, not bit for bit.
//
// max_dim / scatter_dim see the contiguous input as [outer, n, inner] like the CPU twin. max_dim: with inner = 1 and
// n >= 256 (argmax over a vocabulary) a block per row, each thread scanning a strided subset, then a block-wide
// (value, index) reduction; otherwise a thread per (outer, inner) scanning j = 0..n-1 like the CPU loop. The CPU loop
// keeps `best` and replaces it when row[j] > row[best]: a NaN never wins, except a NaN at j = 0 which is never
// replaced. The parallel form reproduces exactly that: the largest non-NaN value, first index on ties, and index 0
// when row[0] is NaN. scatter_dim writes every dx element once: dx[o, j, i] = (indices[o, i] == j) ? dy[o, i] : 0,
// so there is no zero pass and no race; an index outside [0, n) matches no j and writes nothing there.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "cuda/cuda_kernels.h"
#include "cuda/launch.h"

namespace gdn::cuda {

namespace {

constexpr int kMaxDims = 8;

// ---------------------------------------------------------------------------------------------------------------
// sum_to
// ---------------------------------------------------------------------------------------------------------------

// How output element m and reduced element r map to offsets. Kept dimensions: m = sum_k idx_k * prod(later sizes).
struct SumGeometry {
  int nkeep = 0, nred = 0;
  int64_t M = 1, R = 1;
  int64_t keep_size[kMaxDims] = {};
  int64_t keep_in_stride[kMaxDims] = {};
  int64_t keep_out_stride[kMaxDims] = {};
  int64_t red_size[kMaxDims] = {};
  int64_t red_stride[kMaxDims] = {};
};

__device__ inline void keep_offsets(const SumGeometry& g, int64_t m, int64_t& in_off, int64_t& out_off) {
  in_off = 0;
  out_off = 0;
  for (int k = g.nkeep - 1; k >= 0; --k) {
    const int64_t idx = m % g.keep_size[k];
    m /= g.keep_size[k];
    in_off += idx * g.keep_in_stride[k];
    out_off += idx * g.keep_out_stride[k];
  }
}

__device__ inline int64_t red_offset(const SumGeometry& g, int64_t r) {
  if (g.nred == 1) return r * g.red_stride[0];
  int64_t off = 0;
  for (int k = g.nred - 1; k >= 0; --k) {
    off += (r % g.red_size[k]) * g.red_stride[k];
    r /= g.red_size[k];
  }
  return off;
}

// Range [r0, r1) of split s out of S over R elements.
__device__ inline void split_range(int64_t R, int64_t S, int64_t s, int64_t& r0, int64_t& r1) {
  const int64_t chunk = (R + S - 1) / S;
  r0 = min(R, s * chunk);
  r1 = min(R, r0 + chunk);
}

// Row decomposition: a block per (m, split), grid-stride over the M * S pairs. Writes out (S == 1) or partial [S, M].
template <typename T>
__global__ void sum_rows_kernel(T* __restrict__ out, double* __restrict__ partial, const T* __restrict__ in,
                                SumGeometry g, int64_t S) {
  pdl_enter();
  __shared__ double scratch[32];
  for (int64_t b = blockIdx.x; b < g.M * S; b += gridDim.x) {
    const int64_t m = b / S, s = b % S;
    int64_t in_base, out_off;
    keep_offsets(g, m, in_base, out_off);
    int64_t r0, r1;
    split_range(g.R, S, s, r0, r1);
    double acc = 0;
    for (int64_t r = r0 + threadIdx.x; r < r1; r += blockDim.x)
      acc += static_cast<double>(in[in_base + red_offset(g, r)]);
    acc = block_sum(acc, scratch);
    if (threadIdx.x == 0) {
      if (partial) partial[s * g.M + m] = acc;
      else out[out_off] = static_cast<T>(acc);
    }
  }
}

constexpr int kColX = 32, kColY = 8;

// Column decomposition: block (32, 8); blockIdx.x picks 32 consecutive m, blockIdx.y the split.
template <typename T>
__global__ void sum_cols_kernel(T* __restrict__ out, double* __restrict__ partial, const T* __restrict__ in,
                                SumGeometry g, int64_t S) {
  pdl_enter();
  __shared__ double lanes[kColY][kColX];
  const int64_t m = blockIdx.x * int64_t(kColX) + threadIdx.x;
  const int64_t s = blockIdx.y;
  double acc = 0;
  int64_t out_off = 0;
  if (m < g.M) {
    int64_t in_base;
    keep_offsets(g, m, in_base, out_off);
    int64_t r0, r1;
    split_range(g.R, S, s, r0, r1);
    for (int64_t r = r0 + threadIdx.y; r < r1; r += kColY) acc += static_cast<double>(in[in_base + red_offset(g, r)]);
  }
  lanes[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y == 0 && m < g.M) {
    double total = 0;
    for (int y = 0; y < kColY; ++y) total += lanes[y][threadIdx.x];
    if (partial) partial[s * g.M + m] = total;
    else out[out_off] = static_cast<T>(total);
  }
}

// out[m] = sum over s of partial[s, m], in split order (block per m, grid-stride).
template <typename T>
__global__ void sum_partials_kernel(T* __restrict__ out, const double* __restrict__ partial, SumGeometry g, int64_t S) {
  pdl_enter();
  __shared__ double scratch[32];
  for (int64_t m = blockIdx.x; m < g.M; m += gridDim.x) {
    double acc = 0;
    for (int64_t s = threadIdx.x; s < S; s += blockDim.x) acc += partial[s * g.M + m];
    acc = block_sum(acc, scratch);
    if (threadIdx.x == 0) {
      int64_t in_base, out_off;
      keep_offsets(g, m, in_base, out_off);
      out[out_off] = static_cast<T>(acc);
    }
  }
}

int threads_for(int64_t n, int cap) {  // a multiple of 32, at least 32, at most cap
  int t = 32;
  while (t < cap && t < n) t *= 2;
  return t;
}

void sum_to(const Tensor& out, const Tensor& in) {
  GDN_CHECK(out.dim() == in.dim(), "sum_to: rank {} vs {}", out.dim(), in.dim());
  GDN_CHECK(in.dim() <= kMaxDims, "CUDA sum_to: at most {} dimensions, got {}", kMaxDims, in.dim());
  GDN_CHECK(out.dtype() == in.dtype(), "sum_to: dtype {} vs {}", out.dtype(), in.dtype());
  GDN_CHECK(out.device() == in.device(), "sum_to: out on {}, in on {}", out.device(), in.device());
  SumGeometry g;
  for (int64_t d = 0; d < in.dim(); ++d) {
    GDN_CHECK(out.size(d) == in.size(d) || out.size(d) == 1, "sum_to: {} from {}", shape_str(out.shape()),
              shape_str(in.shape()));
    const int64_t n = in.size(d);
    if (out.size(d) == n) {
      if (n == 1) continue;  // size 1 on both sides: contributes nothing
      g.keep_size[g.nkeep] = n;
      g.keep_in_stride[g.nkeep] = in.stride(d);
      g.keep_out_stride[g.nkeep] = out.stride(d);
      ++g.nkeep;
      g.M *= n;
    } else {
      // Merge with the previous reduced dimension when its stride is this one's times n: the offset of r is then
      // the same function of r (a kept dimension in between does not matter, it is addressed through m).
      if (g.nred > 0 && g.red_stride[g.nred - 1] == in.stride(d) * n) {
        g.red_size[g.nred - 1] *= n;
        g.red_stride[g.nred - 1] = in.stride(d);
      } else {
        g.red_size[g.nred] = n;
        g.red_stride[g.nred] = in.stride(d);
        ++g.nred;
      }
      g.R *= n;
    }
  }
  if (g.M == 0) return;
  if (g.R == 0) g.nred = 0;  // an empty reduced dimension: every sum is 0 (the loops below run no iteration)

  // The innermost (smallest |stride|) reduced and kept dimensions decide which side the warp reads along.
  auto min_abs = [](const int64_t* s, int n) {
    int64_t best = INT64_MAX;
    for (int k = 0; k < n; ++k) best = std::min<int64_t>(best, s[k] < 0 ? -s[k] : s[k]);
    return best;
  };
  const bool rows = g.nkeep == 0 || (g.nred > 0 && g.R >= 32 &&
                                     min_abs(g.red_stride, g.nred) <= min_abs(g.keep_in_stride, g.nkeep));

  dispatch_float(in.dtype(), "cuda sum_to", [&](auto tag) {
    using T = decltype(tag);
    T* o = out.data<T>();
    const T* x = in.data<T>();
    int64_t S = 1;
    if (rows) {
      // Splits: about 4096 elements each, and no more than needed to give ~2048 blocks in all.
      const int threads = threads_for(g.R, kThreads);
      S = std::max<int64_t>(1, std::min<int64_t>((g.R + 4095) / 4096, 2048 / std::max<int64_t>(1, g.M)));
      Tensor partial;
      if (S > 1) partial = Tensor::empty({S, g.M}, kFloat64, in.device());
      double* p = S > 1 ? partial.data<double>() : nullptr;
      launch(sum_rows_kernel<T>, grid_for(g.M * S, 1), threads, 0, o, p, x, g, S);
      if (S > 1) {
        launch(sum_partials_kernel<T>, grid_for(g.M, 1), threads_for(S, kThreads), 0, o, p, g, S);
      }
    } else {
      // Splits: enough column blocks for ~1024 blocks in all, each split at least 256 elements long.
      const int64_t gx = (g.M + kColX - 1) / kColX;
      GDN_CHECK(gx <= INT32_MAX, "CUDA sum_to: {} outputs", g.M);
      S = std::max<int64_t>(1, std::min<int64_t>({(1024 + gx - 1) / gx, (g.R + 255) / 256, 65535}));
      Tensor partial;
      if (S > 1) partial = Tensor::empty({S, g.M}, kFloat64, in.device());
      double* p = S > 1 ? partial.data<double>() : nullptr;
      const dim3 grid(static_cast<unsigned>(gx), static_cast<unsigned>(S));
      launch(sum_cols_kernel<T>, grid, dim3(kColX, kColY), 0, o, p, x, g, S);
      if (S > 1) {
        launch(sum_partials_kernel<T>, grid_for(g.M, 1), threads_for(S, kThreads), 0, o, p, g, S);
      }
    }
  });
}

// ---------------------------------------------------------------------------------------------------------------
// max_dim, scatter_dim
// ---------------------------------------------------------------------------------------------------------------

struct OuterInner {
  int64_t outer = 1, n = 1, inner = 1;
};

OuterInner split_at(const Shape& shape, int64_t dim) {
  OuterInner s;
  for (int64_t d = 0; d < static_cast<int64_t>(shape.size()); ++d) {
    if (d < dim) s.outer *= shape[d];
    else if (d == dim) s.n = shape[d];
    else s.inner *= shape[d];
  }
  return s;
}

// The CPU loop's rule, one step: does candidate (v, j) replace (bv, bj)? NaN never does; ties go to the lower index.
template <typename T> __device__ inline bool better(T v, int64_t j, T bv, int64_t bj) {
  return v > bv || (v == bv && j < bj);
}

// A thread per (o, i): the CPU loop verbatim.
template <typename T>
__global__ void max_serial_kernel(T* __restrict__ values, int64_t* __restrict__ indices, const T* __restrict__ x,
                                  OuterInner s) {
  pdl_enter();
  const int64_t total = s.outer * s.inner;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total; e += int64_t(blockDim.x) * gridDim.x) {
    const int64_t o = e / s.inner, i = e % s.inner;
    const T* row = x + o * s.n * s.inner + i;
    int64_t best = 0;
    T bv = row[0];
    for (int64_t j = 1; j < s.n; ++j) {
      const T v = row[j * s.inner];
      if (v > bv) {
        bv = v;
        best = j;
      }
    }
    values[e] = bv;
    indices[e] = best;
  }
}

// A block per row of n contiguous values (inner == 1), grid-stride over the rows.
template <typename T>
__global__ void max_rows_kernel(T* __restrict__ values, int64_t* __restrict__ indices, const T* __restrict__ x,
                                int64_t rows, int64_t n) {
  pdl_enter();
  __shared__ T sv[32];
  __shared__ int64_t sj[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const T* xr = x + row * n;
    // Sentinel: -inf at index n loses every tie against a real -inf, and a NaN never replaces anything.
    T bv = -INFINITY;
    int64_t bj = n;
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x) {
      const T v = xr[j];
      if (better(v, j, bv, bj)) {
        bv = v;
        bj = j;
      }
    }
    for (int off = 16; off > 0; off >>= 1) {
      const T ov = __shfl_xor_sync(0xffffffffu, bv, off);
      const int64_t oj = __shfl_xor_sync(0xffffffffu, bj, off);
      if (better(ov, oj, bv, bj)) {
        bv = ov;
        bj = oj;
      }
    }
    __syncthreads();  // sv/sj may still be read for the previous row
    if (lane == 0) {
      sv[warp] = bv;
      sj[warp] = bj;
    }
    __syncthreads();
    if (warp == 0) {
      bv = lane < warps ? sv[lane] : T(-INFINITY);
      bj = lane < warps ? sj[lane] : n;
      for (int off = 16; off > 0; off >>= 1) {
        const T ov = __shfl_xor_sync(0xffffffffu, bv, off);
        const int64_t oj = __shfl_xor_sync(0xffffffffu, bj, off);
        if (better(ov, oj, bv, bj)) {
          bv = ov;
          bj = oj;
        }
      }
      if (lane == 0) {
        const T first = xr[0];
        if (first != first || bj >= n) bj = 0;  // NaN at 0 is never replaced; bj >= n cannot happen (n > 0 and
                                                // x[0] not NaN means a non-NaN candidate exists), kept for safety
        values[row] = xr[bj];
        indices[row] = bj;
      }
    }
  }
}

void max_dim(const Tensor& values, const Tensor& indices, const Tensor& in, int64_t dim) {
  GDN_CHECK(in.is_contiguous() && values.is_contiguous() && indices.is_contiguous(), "max_dim: contiguous only");
  GDN_CHECK(indices.dtype() == kInt64, "max_dim: indices must be int64, got {}", indices.dtype());
  OuterInner s = split_at(in.shape(), dim);
  GDN_CHECK(s.n > 0, "max over an empty dimension");
  if (s.outer * s.inner == 0) return;
  int64_t* idx = indices.data<int64_t>();
  dispatch_float(in.dtype(), "cuda max_dim", [&](auto tag) {
    using T = decltype(tag);
    const T* x = in.data<T>();
    T* v = values.data<T>();
    if (s.inner == 1 && s.n >= 256) {
      launch(max_rows_kernel<T>, grid_for(s.outer, 1), kThreads, 0, v, idx, x, s.outer, s.n);
    } else {
      launch(max_serial_kernel<T>, grid_for(s.outer * s.inner), kThreads, 0, v, idx, x, s);
    }
  });
}

template <typename T>
__global__ void scatter_dim_kernel(T* __restrict__ dx, const T* __restrict__ dy, const int64_t* __restrict__ idx,
                                   OuterInner s) {
  pdl_enter();
  const int64_t total = s.outer * s.n * s.inner;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total; e += int64_t(blockDim.x) * gridDim.x) {
    const int64_t i = e % s.inner, rest = e / s.inner;
    const int64_t j = rest % s.n, o = rest / s.n;
    const int64_t k = o * s.inner + i;
    dx[e] = idx[k] == j ? dy[k] : T(0);
  }
}

void scatter_dim(const Tensor& dx, const Tensor& dy, const Tensor& indices, int64_t dim) {
  GDN_CHECK(dx.is_contiguous() && dy.is_contiguous() && indices.is_contiguous(), "scatter_dim: contiguous only");
  GDN_CHECK(indices.dtype() == kInt64, "scatter_dim: indices must be int64, got {}", indices.dtype());
  OuterInner s = split_at(dx.shape(), dim);
  GDN_CHECK(dy.numel() == s.outer * s.inner && indices.numel() == s.outer * s.inner,
            "scatter_dim: dy {} / indices {} for dx {} at dim {}", shape_str(dy.shape()), shape_str(indices.shape()),
            shape_str(dx.shape()), dim);
  const int64_t total = dx.numel();
  if (total == 0) return;
  dispatch_float(dx.dtype(), "cuda scatter_dim", [&](auto tag) {
    using T = decltype(tag);
    launch(scatter_dim_kernel<T>, grid_for(total), kThreads, 0, dx.data<T>(), dy.data<T>(), indices.data<int64_t>(), s);
  });
}

}  // namespace

void register_reduce_kernels(KernelTable& t) {
  t.sum_to = sum_to;
  t.max_dim = max_dim;
  t.scatter_dim = scatter_dim;
}

}  // namespace gdn::cuda
