// ops/shape_ops.h — views and layout ops: reshape, permute, transpose, slice, expand, squeeze, concat, split.
//
// Views (reshape of a contiguous tensor, permute, transpose, slice, expand, unsqueeze, squeeze) allocate nothing:
// they are new tensors over the same Storage with other strides. Backward:
//   reshape -> reshape back; permute -> inverse permutation; slice -> zeros with dy written into the slice;
//   expand -> sum over the expanded dimensions; concat -> slices of dy; split -> one buffer holding every
//   part's gradient (one node for all parts; no copy when the parts' gradients already are windows of one such
//   buffer, as gdn_gate writes them).
#pragma once

#include <vector>

#include "core/tensor.h"

namespace gdn {

Tensor reshape(const Tensor& x, Shape shape);  // one -1 allowed; copies only when x is not contiguous
Tensor permute(const Tensor& x, const std::vector<int64_t>& dims);
Tensor transpose(const Tensor& x, int64_t d0, int64_t d1);
Tensor slice(const Tensor& x, int64_t dim, int64_t start, int64_t end, int64_t step = 1);
Tensor expand(const Tensor& x, const Shape& shape);
Tensor unsqueeze(const Tensor& x, int64_t dim);
Tensor squeeze(const Tensor& x, int64_t dim);
Tensor concat(const std::vector<Tensor>& xs, int64_t dim);
std::vector<Tensor> split(const Tensor& x, const std::vector<int64_t>& sizes, int64_t dim);

// Non-differentiable helpers for op implementations:
// a stride-0 view of x broadcast to `shape` (NumPy rules).
Tensor broadcast_view(const Tensor& x, const Shape& shape);

}  // namespace gdn
