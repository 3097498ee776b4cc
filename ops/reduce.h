// ops/reduce.h — reductions: sum, mean, max (with indices), argmax, and sum_to_shape for broadcast backward.
//
// Backward: sum -> dy broadcast back over the reduced dimensions; mean -> the same divided by the count;
// max -> dy routed to the position of the maximum (first on ties), zero elsewhere.
#pragma once

#include <vector>

#include "core/tensor.h"

namespace gdn {

// Sum over `dims` (all dimensions when empty). keepdim keeps size-1 dimensions in place.
Tensor sum(const Tensor& x, const std::vector<int64_t>& dims = {}, bool keepdim = false);
Tensor mean(const Tensor& x, const std::vector<int64_t>& dims = {}, bool keepdim = false);
Tensor max(const Tensor& x, int64_t dim, bool keepdim = false);
// Values and int64 indices of the maximum along dim.
std::pair<Tensor, Tensor> max_with_indices(const Tensor& x, int64_t dim, bool keepdim = false);
Tensor argmax(const Tensor& x, int64_t dim = -1, bool keepdim = false);  // int64, no gradient

// Differentiable: sums x down to `shape` (x's shape broadcast from `shape`). Returns x when shapes match.
Tensor sum_to_shape(const Tensor& x, const Shape& shape);

}  // namespace gdn
