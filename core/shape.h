// core/shape.h — shapes and strides, both counted in elements (not bytes).
//
// Broadcasting follows NumPy: align trailing dimensions; a dimension of size 1 stretches (stride 0 in the view).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/check.h"

namespace gdn {

using Shape = std::vector<int64_t>;
using Strides = std::vector<int64_t>;

// The number of elements. Throws on a negative dimension, and when the product of the non-zero dimensions (and so
// some element count or contiguous stride) does not fit in int64.
int64_t shape_numel(const Shape& shape);
Strides contiguous_strides(const Shape& shape);  // row-major: last dimension has stride 1
Shape broadcast_shapes(const Shape& a, const Shape& b);
std::string shape_str(const Shape& shape);        // "[2, 3, 4]"
int64_t normalize_dim(int64_t dim, int64_t ndim);  // -1 -> ndim-1, with a range check

}  // namespace gdn
