// ops/cpu/reduce_cpu.cpp — CPU reductions: sum over broadcast dimensions, max along a dimension, and its scatter.
//
// sum_to accumulates in double whatever the element type, so long float32 sums (bias gradients over B*T rows)
// do not drift. max_dim and scatter_dim see the input as [outer, n, inner] (contiguous), the usual trick to reduce
// one dimension of any rank without index arithmetic per element.
#include <vector>

#include "ops/cpu/cpu_kernels.h"
#include "ops/cpu/cpu_loops.h"

namespace gdn::cpu {

namespace {

void sum_to(const Tensor& out, const Tensor& in) {
  GDN_CHECK(out.dim() == in.dim(), "sum_to: rank {} vs {}", out.dim(), in.dim());
  // Accumulator laid out like a contiguous `out`, viewed with stride 0 along the reduced dimensions.
  Strides acc_strides = contiguous_strides(out.shape());
  for (int64_t d = 0; d < in.dim(); ++d) {
    GDN_CHECK(out.size(d) == in.size(d) || out.size(d) == 1, "sum_to: {} from {}", shape_str(out.shape()),
              shape_str(in.shape()));
    if (out.size(d) == 1 && in.size(d) != 1) acc_strides[d] = 0;
  }
  if (out.numel() == 1 && in.is_contiguous()) {  // full reduction (losses, gradient norms): parallel, in double
    dispatch_float(in.dtype(), "sum_to", [&](auto tag_) {
      using T = decltype(tag_);
      const T* x = in.data<T>();
      const int64_t n = in.numel();
      double total = 0;
#pragma omp parallel for simd reduction(+ : total) if (n >= kParallelGrain)
      for (int64_t i = 0; i < n; ++i) total += static_cast<double>(x[i]);
      out.data<T>()[0] = static_cast<T>(total);
    });
    return;
  }
  std::vector<double> acc(out.numel(), 0.0);
  dispatch_float(in.dtype(), "sum_to", [&](auto tag_) {
    using scalar_t = decltype(tag_);
    const auto* x = in.data<scalar_t>();
    // Serial on purpose: several input elements share an accumulator slot.
    const Shape& shape = in.shape();
    const int64_t n = in.numel(), nd = in.dim();
    std::vector<int64_t> idx(nd, 0);
    int64_t oa = 0, ox = 0;
    for (int64_t i = 0; i < n; ++i) {
      acc[oa] += static_cast<double>(x[ox]);
      for (int64_t d = nd - 1; d >= 0; --d) {
        if (++idx[d] < shape[d]) {
          oa += acc_strides[d];
          ox += in.strides()[d];
          break;
        }
        oa -= acc_strides[d] * (shape[d] - 1);
        ox -= in.strides()[d] * (shape[d] - 1);
        idx[d] = 0;
      }
    }
    Tensor acc_tensor = Tensor::empty(out.shape(), kFloat64);
    std::copy(acc.begin(), acc.end(), acc_tensor.data<double>());
    auto* o = out.data<scalar_t>();
    const double* a = acc_tensor.data<double>();
    strided_for_each<2>({&out, &acc_tensor}, [&](const std::array<int64_t, 2>& off) {
      o[off[0]] = static_cast<scalar_t>(a[off[1]]);
    });
  });
}

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

void max_dim(const Tensor& values, const Tensor& indices, const Tensor& in, int64_t dim) {
  GDN_CHECK(in.is_contiguous() && values.is_contiguous() && indices.is_contiguous(), "max_dim: contiguous only");
  OuterInner s = split_at(in.shape(), dim);
  GDN_CHECK(s.n > 0, "max over an empty dimension");
  int64_t* idx = indices.data<int64_t>();
  dispatch_float(in.dtype(), "max_dim", [&](auto tag_) {
    using scalar_t = decltype(tag_);
    const auto* x = in.data<scalar_t>();
    auto* v = values.data<scalar_t>();
#pragma omp parallel for if (s.outer * s.n * s.inner >= kParallelGrain)
    for (int64_t o = 0; o < s.outer; ++o)
      for (int64_t i = 0; i < s.inner; ++i) {
        const scalar_t* row = x + o * s.n * s.inner + i;
        int64_t best = 0;
        for (int64_t j = 1; j < s.n; ++j)
          if (row[j * s.inner] > row[best * s.inner]) best = j;
        v[o * s.inner + i] = row[best * s.inner];
        idx[o * s.inner + i] = best;
      }
  });
}

void scatter_dim(const Tensor& dx, const Tensor& dy, const Tensor& indices, int64_t dim) {
  GDN_CHECK(dx.is_contiguous() && dy.is_contiguous() && indices.is_contiguous(), "scatter_dim: contiguous only");
  OuterInner s = split_at(dx.shape(), dim);
  const int64_t* idx = indices.data<int64_t>();
  dispatch_float(dx.dtype(), "scatter_dim", [&](auto tag_) {
    using scalar_t = decltype(tag_);
    auto* o = dx.data<scalar_t>();
    const auto* g = dy.data<scalar_t>();
    std::fill(o, o + dx.numel(), scalar_t(0));
    for (int64_t a = 0; a < s.outer; ++a)
      for (int64_t i = 0; i < s.inner; ++i) {
        int64_t j = idx[a * s.inner + i];
        o[(a * s.n + j) * s.inner + i] = g[a * s.inner + i];
      }
  });
}

}  // namespace

void register_reduce_kernels(KernelTable& t) {
  t.sum_to = sum_to;
  t.max_dim = max_dim;
  t.scatter_dim = scatter_dim;
}

}  // namespace gdn::cpu
