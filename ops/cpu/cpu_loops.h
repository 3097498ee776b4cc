// ops/cpu/cpu_loops.h — the loop helpers every CPU kernel uses.
//
// strided_for_each visits every index of a shape and hands the kernel body the element offset of each operand
// (strides in elements, stride 0 where an operand is broadcast). When every operand is contiguous it degenerates to a
// flat loop that OpenMP splits across threads; otherwise an odometer walks the index serially (strided inputs are rare
// on hot paths: ops that care make inputs contiguous first).
#pragma once

#include <omp.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <type_traits>

#include "core/dispatch.h"
#include "core/tensor.h"

namespace gdn::cpu {

// Work below this many elements stays on one thread (thread start-up costs more than it saves).
inline constexpr int64_t kParallelGrain = 1 << 15;

template <size_t N> bool all_contiguous_same_shape(const std::array<const Tensor*, N>& ts) {
  for (const Tensor* t : ts)
    if (!t->is_contiguous() || t->shape() != ts[0]->shape()) return false;
  return true;
}

// Tensors that may be stored in bfloat16 while the arithmetic is float32 (a bf16 GEMM's operand written by a norm or
// swiglu; the FFN's hidden products; the CUDA twins round the same way): with_storage<T>(t, f) calls f with t's typed
// pointer, T* or bfloat16* (the latter only for T = float); out_value<Y>(v) is v rounded once to nearest even where Y
// is bfloat16; in_value<T>(x) a stored value in the arithmetic type.
template <typename T, typename F> void with_storage(const Tensor& t, F&& f) {
  GDN_CHECK(t.dtype() == dtype_of<T>::value || (t.dtype() == kBFloat16 && std::is_same_v<T, float>),
            "a {} tensor where {} arithmetic runs", t.dtype(), dtype_of<T>::value);
  if constexpr (std::is_same_v<T, float>) {
    if (t.dtype() == kBFloat16) return f(t.data<bfloat16>());
  }
  f(t.data<T>());
}

template <typename Y, typename V> Y out_value(V v) {
  if constexpr (std::is_same_v<Y, bfloat16>) return bfloat16(static_cast<float>(v));
  else return static_cast<Y>(v);
}

template <typename T, typename S> T in_value(S x) {
  if constexpr (std::is_same_v<S, bfloat16>) return static_cast<float>(x);
  else return static_cast<T>(x);
}

// A float32 copy of t (bfloat16 operands and logits: their exact values, for kernels that compute in float32).
inline Tensor float32_copy(const Tensor& t) {
  Tensor f = Tensor::empty(t.shape(), kFloat32, kCPU);
  kernels::copy(kCPU, f, t);
  return f;
}

// body(begin, end) over [0, n), split into one contiguous range per thread when n >= grain. Inner loops written
// as `for (i = begin; i < end; ++i)` over raw pointers vectorise, which the per-element callback below does not.
template <typename F> void parallel_for(int64_t n, int64_t grain, F&& body) {
  if (n <= 0) return;
  if (n < grain || omp_get_max_threads() == 1) {
    body(int64_t{0}, n);
    return;
  }
#pragma omp parallel
  {
    const int64_t nt = omp_get_num_threads(), t = omp_get_thread_num();
    const int64_t chunk = (n + nt - 1) / nt, begin = t * chunk, end = std::min(n, begin + chunk);
    if (begin < end) body(begin, end);
  }
}

// f(std::array<int64_t, N> offsets) for every element; offsets relative to each operand's data<T>().
template <size_t N, typename F> void strided_for_each(const std::array<const Tensor*, N>& ts, F&& f) {
  const Shape& shape = ts[0]->shape();
  const int64_t n = shape_numel(shape);
  if (n == 0) return;
  if (all_contiguous_same_shape(ts)) {
#pragma omp parallel for if (n >= kParallelGrain) schedule(static)
    for (int64_t i = 0; i < n; ++i) {
      std::array<int64_t, N> offs;
      offs.fill(i);
      f(offs);
    }
    return;
  }
  const int64_t nd = static_cast<int64_t>(shape.size());
  std::vector<int64_t> idx(nd, 0);
  std::array<int64_t, N> offs{};
  for (int64_t i = 0; i < n; ++i) {
    f(offs);
    for (int64_t d = nd - 1; d >= 0; --d) {
      if (++idx[d] < shape[d]) {
        for (size_t k = 0; k < N; ++k) offs[k] += ts[k]->strides()[d];
        break;
      }
      for (size_t k = 0; k < N; ++k) offs[k] -= ts[k]->strides()[d] * (shape[d] - 1);
      idx[d] = 0;
    }
  }
}

// body(offsets, n, inner_strides) once per row along the last dimension, rows split across threads: offsets are
// each operand's offset of the row's first element, inner_strides their last-dimension strides. For strided
// copies and broadcasts, where a per-element odometer would dominate.
template <size_t N, typename F> void strided_rows(const std::array<const Tensor*, N>& ts, F&& body) {
  const Shape& shape = ts[0]->shape();
  const int64_t n = shape_numel(shape);
  if (n == 0) return;
  const int64_t nd = static_cast<int64_t>(shape.size());
  const int64_t inner = nd == 0 ? 1 : shape[nd - 1], rows = n / inner;
  std::array<int64_t, N> inner_strides;
  for (size_t k = 0; k < N; ++k) inner_strides[k] = nd == 0 ? 0 : ts[k]->strides()[nd - 1];
  parallel_for(rows, std::max<int64_t>(1, kParallelGrain / inner), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      std::array<int64_t, N> offs{};
      int64_t rest = r;
      for (int64_t d = nd - 2; d >= 0; --d) {
        const int64_t i = rest % shape[d];
        rest /= shape[d];
        for (size_t k = 0; k < N; ++k) offs[k] += i * ts[k]->strides()[d];
      }
      body(offs, inner, inner_strides);
    }
  });
}

// Element conversion between any two storage types (bfloat16 goes through float).
template <typename To, typename From> inline To convert(From v) {
  if constexpr (std::is_same_v<From, bfloat16>) {
    return static_cast<To>(static_cast<float>(v));
  } else if constexpr (std::is_same_v<To, bfloat16>) {
    return bfloat16(static_cast<float>(v));
  } else {
    return static_cast<To>(v);
  }
}

}  // namespace gdn::cpu
