// ops/shape_ops.cpp — see shape_ops.h.
#include "ops/shape_ops.h"

#include <numeric>

#include "autograd/node.h"
#include "core/dispatch.h"
#include "ops/creation.h"
#include "ops/reduce.h"

namespace gdn {

Tensor broadcast_view(const Tensor& x, const Shape& shape) {
  if (x.shape() == shape) return x.detach();
  const int64_t n = static_cast<int64_t>(shape.size()), lead = n - x.dim();
  GDN_CHECK(lead >= 0, "cannot broadcast {} to {}", shape_str(x.shape()), shape_str(shape));
  Strides st(n, 0);
  for (int64_t d = 0; d < x.dim(); ++d) {
    GDN_CHECK(x.size(d) == shape[lead + d] || x.size(d) == 1, "cannot broadcast {} to {}", shape_str(x.shape()),
              shape_str(shape));
    st[lead + d] = x.size(d) == 1 ? 0 : x.stride(d);
  }
  return x.as_strided(shape, st, x.offset());
}

Tensor reshape(const Tensor& x, Shape shape) {
  int64_t known = 1, infer = -1;
  for (int64_t i = 0; i < static_cast<int64_t>(shape.size()); ++i) {
    if (shape[i] == -1) {
      GDN_CHECK(infer < 0, "reshape: more than one -1 in {}", shape_str(shape));
      infer = i;
    } else {
      known *= shape[i];
    }
  }
  if (infer >= 0) {
    GDN_CHECK(known > 0 && x.numel() % known == 0, "reshape: cannot infer -1 for {} from {}", shape_str(shape),
              shape_str(x.shape()));
    shape[infer] = x.numel() / known;
  }
  GDN_CHECK(shape_numel(shape) == x.numel(), "reshape: {} has {} elements, {} has {}", shape_str(x.shape()),
            x.numel(), shape_str(shape), shape_numel(shape));
  if (shape == x.shape()) return x;
  Tensor src = contiguous(x);
  Tensor y = src.as_strided(shape, contiguous_strides(shape), src.offset());
  record("reshape", {y}, {src}, [from = src.shape()](const TensorList& g) -> TensorList {
    return {reshape(g[0], from)};
  });
  return y;
}

Tensor permute(const Tensor& x, const std::vector<int64_t>& dims) {
  GDN_CHECK(static_cast<int64_t>(dims.size()) == x.dim(), "permute: {} dims for a rank-{} tensor", dims.size(),
            x.dim());
  Shape shape(x.dim());
  Strides st(x.dim());
  std::vector<int64_t> inverse(x.dim(), -1);
  for (int64_t i = 0; i < x.dim(); ++i) {
    int64_t d = normalize_dim(dims[i], x.dim());
    GDN_CHECK(inverse[d] < 0, "permute: dimension {} repeated", d);
    inverse[d] = i;
    shape[i] = x.size(d);
    st[i] = x.stride(d);
  }
  Tensor y = x.as_strided(shape, st, x.offset());
  record("permute", {y}, {x}, [inverse](const TensorList& g) -> TensorList { return {permute(g[0], inverse)}; });
  return y;
}

Tensor transpose(const Tensor& x, int64_t d0, int64_t d1) {
  std::vector<int64_t> dims(x.dim());
  std::iota(dims.begin(), dims.end(), 0);
  std::swap(dims[normalize_dim(d0, x.dim())], dims[normalize_dim(d1, x.dim())]);
  return permute(x, dims);
}

Tensor slice(const Tensor& x, int64_t dim, int64_t start, int64_t end, int64_t step) {
  dim = normalize_dim(dim, x.dim());
  const int64_t n = x.size(dim);
  if (start < 0) start += n;
  if (end < 0) end += n;
  end = std::min(end, n);
  GDN_CHECK(step >= 1 && start >= 0 && start <= end, "slice: [{}:{}:{}] of a dimension of size {}", start, end, step,
            n);
  Shape shape = x.shape();
  Strides st = x.strides();
  shape[dim] = (end - start + step - 1) / step;
  st[dim] = x.stride(dim) * step;
  Tensor y = x.as_strided(shape, st, x.offset() + start * x.stride(dim));
  record("slice", {y}, {x},
         [from = x.shape(), dtype = x.dtype(), device = x.device(), dim, start, end, step](const TensorList& g)
             -> TensorList {
           Tensor dx = zeros(from, dtype, device);
           Tensor window = slice(dx, dim, start, end, step);
           kernels::copy(device, window, g[0]);
           return {dx};
         });
  return y;
}

Tensor expand(const Tensor& x, const Shape& shape) {
  Tensor y = broadcast_view(x, shape);
  record("expand", {y}, {x}, [from = x.shape()](const TensorList& g) -> TensorList {
    return {sum_to_shape(g[0], from)};
  });
  return y;
}

Tensor unsqueeze(const Tensor& x, int64_t dim) {
  dim = normalize_dim(dim, x.dim() + 1);
  Shape shape = x.shape();
  shape.insert(shape.begin() + dim, 1);
  return reshape(x, shape);
}

Tensor squeeze(const Tensor& x, int64_t dim) {
  dim = normalize_dim(dim, x.dim());
  GDN_CHECK(x.size(dim) == 1, "squeeze: dimension {} has size {}", dim, x.size(dim));
  Shape shape = x.shape();
  shape.erase(shape.begin() + dim);
  return reshape(x, shape);
}

Tensor concat(const std::vector<Tensor>& xs, int64_t dim) {
  GDN_CHECK(!xs.empty(), "concat of nothing");
  dim = normalize_dim(dim, xs[0].dim());
  Shape shape = xs[0].shape();
  shape[dim] = 0;
  std::vector<int64_t> sizes;
  for (const auto& x : xs) {
    GDN_CHECK(x.dim() == xs[0].dim() && x.dtype() == xs[0].dtype() && x.device() == xs[0].device(),
              "concat: {} vs {}", x.str(), xs[0].str());
    for (int64_t d = 0; d < x.dim(); ++d)
      GDN_CHECK(d == dim || x.size(d) == xs[0].size(d), "concat along {}: {} vs {}", dim, shape_str(x.shape()),
                shape_str(xs[0].shape()));
    sizes.push_back(x.size(dim));
    shape[dim] += x.size(dim);
  }
  Tensor out = Tensor::empty(shape, xs[0].dtype(), xs[0].device());
  {
    int64_t at = 0;
    for (const auto& x : xs) {
      Tensor window = out.as_strided(x.shape(), out.strides(), out.offset() + at * out.stride(dim));
      kernels::copy(out.device(), window, x);
      at += x.size(dim);
    }
  }
  record("concat", {out}, xs, [sizes, dim](const TensorList& g) -> TensorList { return split(g[0], sizes, dim); });
  return out;
}

std::vector<Tensor> split(const Tensor& x, const std::vector<int64_t>& sizes, int64_t dim) {
  dim = normalize_dim(dim, x.dim());
  int64_t total = std::accumulate(sizes.begin(), sizes.end(), int64_t{0});
  GDN_CHECK(total == x.size(dim), "split: sizes add up to {}, dimension {} has {}", total, dim, x.size(dim));
  // One node for all parts (views of x): its backward writes every part's gradient into one buffer, instead of
  // one zero-filled buffer per part that the engine would then have to add up.
  std::vector<Tensor> parts;
  int64_t at = 0;
  for (int64_t s : sizes) {
    Shape shape = x.shape();
    shape[dim] = s;
    parts.push_back(x.as_strided(shape, x.strides(), x.offset() + at * x.stride(dim)));
    at += s;
  }
  record("split", parts, {x}, [sizes, dim, from = x.shape()](const TensorList& g) -> TensorList {
    // Every part's gradient already a window of one buffer laid out as dx would be (gdn_gate writes b | a so):
    // that buffer is dx, with no copy.
    const Strides whole = contiguous_strides(from);
    bool windows = true;
    for (size_t i = 0, at = 0; i < g.size() && windows; at += sizes[i], ++i)
      windows = g[i].defined() && g[i].storage() == g[0].storage() && g[i].strides() == whole &&
                g[i].offset() == g[0].offset() + static_cast<int64_t>(at) * whole[dim];
    if (windows) return {g[0].as_strided(from, whole, g[0].offset())};
    const Tensor* any = nullptr;
    for (const auto& gi : g)
      if (gi.defined()) any = &gi;
    Tensor dx = Tensor::empty(from, any->dtype(), any->device());
    int64_t offset = 0;
    for (size_t i = 0; i < g.size(); ++i) {
      Shape shape = from;
      shape[dim] = sizes[i];
      Tensor window = dx.as_strided(shape, dx.strides(), offset * dx.stride(dim));
      if (g[i].defined())
        kernels::copy(dx.device(), window, g[i]);
      else
        kernels::fill(dx.device(), window, 0.0);
      offset += sizes[i];
    }
    return {dx};
  });
  return parts;
}

}  // namespace gdn
