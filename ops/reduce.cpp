// ops/reduce.cpp — see reduce.h.
#include "ops/reduce.h"

#include <algorithm>

#include "autograd/grad_mode.h"
#include "autograd/node.h"
#include "core/dispatch.h"
#include "ops/creation.h"
#include "ops/elementwise.h"
#include "ops/shape_ops.h"

namespace gdn {

namespace {
// Normalized, sorted, unique dims; all dims when empty.
std::vector<int64_t> reduce_dims(const Tensor& x, const std::vector<int64_t>& dims) {
  std::vector<int64_t> out;
  if (dims.empty()) {
    for (int64_t d = 0; d < x.dim(); ++d) out.push_back(d);
    return out;
  }
  for (int64_t d : dims) out.push_back(normalize_dim(d, x.dim()));
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

Shape keep_shape(const Tensor& x, const std::vector<int64_t>& rdims) {
  Shape s = x.shape();
  for (int64_t d : rdims) s[d] = 1;
  return s;
}

Shape drop_shape(const Tensor& x, const std::vector<int64_t>& rdims) {
  Shape s;
  for (int64_t d = 0; d < x.dim(); ++d)
    if (!std::binary_search(rdims.begin(), rdims.end(), d)) s.push_back(x.size(d));
  return s;
}
}  // namespace

Tensor sum(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim) {
  GDN_CHECK(is_floating(x.dtype()), "sum: expected a floating tensor, got {}", x.str());
  std::vector<int64_t> rdims = reduce_dims(x, dims);
  Tensor out = Tensor::empty(keep_shape(x, rdims), x.dtype(), x.device());
  kernels::sum_to(x.device(), out, x);
  record("sum", {out}, {x}, [from = x.shape()](const TensorList& g) -> TensorList {
    Tensor dx = Tensor::empty(from, g[0].dtype(), g[0].device());
    kernels::copy(dx.device(), dx, broadcast_view(g[0], from));
    return {dx};
  });
  return keepdim ? out : reshape(out, drop_shape(x, rdims));
}

Tensor mean(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim) {
  std::vector<int64_t> rdims = reduce_dims(x, dims);
  int64_t count = 1;
  for (int64_t d : rdims) count *= x.size(d);
  GDN_CHECK(count > 0, "mean over an empty dimension of {}", shape_str(x.shape()));
  return mul(sum(x, rdims, keepdim), 1.0 / static_cast<double>(count));
}

std::pair<Tensor, Tensor> max_with_indices(const Tensor& x, int64_t dim, bool keepdim) {
  dim = normalize_dim(dim, x.dim());
  Tensor xc = contiguous(x);
  Shape keep = keep_shape(x, {dim});
  Tensor values = Tensor::empty(keep, x.dtype(), x.device());
  Tensor indices = Tensor::empty(keep, kInt64, x.device());
  kernels::max_dim(x.device(), values, indices, xc, dim);
  record("max", {values}, {xc}, [from = x.shape(), dim, idx = indices](const TensorList& g) -> TensorList {
    Tensor dx = Tensor::empty(from, g[0].dtype(), g[0].device());
    kernels::scatter_dim(dx.device(), dx, contiguous(g[0]), idx, dim);
    return {dx};
  });
  if (keepdim) return {values, indices};
  Shape dropped = drop_shape(x, {dim});
  return {reshape(values, dropped), indices.as_strided(dropped, contiguous_strides(dropped), indices.offset())};
}

Tensor max(const Tensor& x, int64_t dim, bool keepdim) { return max_with_indices(x, dim, keepdim).first; }

Tensor argmax(const Tensor& x, int64_t dim, bool keepdim) {
  NoGradGuard no_grad;
  return max_with_indices(x, dim, keepdim).second;
}

Tensor sum_to_shape(const Tensor& x, const Shape& shape) {
  if (x.shape() == shape) return x;
  const int64_t lead = x.dim() - static_cast<int64_t>(shape.size());
  GDN_CHECK(lead >= 0, "sum_to_shape: {} to {}", shape_str(x.shape()), shape_str(shape));
  std::vector<int64_t> dims;
  for (int64_t d = 0; d < x.dim(); ++d)
    if (d < lead || (shape[d - lead] == 1 && x.size(d) != 1)) dims.push_back(d);
  if (dims.empty()) return reshape(x, shape);
  return reshape(sum(x, dims, /*keepdim=*/true), shape);
}

}  // namespace gdn
