// core/shape.cpp — shape arithmetic (see shape.h).
#include "core/shape.h"

namespace gdn {

int64_t shape_numel(const Shape& shape) {
  // Overflow is checked on the product of the non-zero dimensions: it bounds every contiguous stride too, so a shape
  // such as [0, 2^40, 2^40] (no elements, but strides beyond int64) is refused as well.
  int64_t n = 1;
  bool empty = false;
  for (int64_t s : shape) {
    GDN_CHECK(s >= 0, "negative dimension in shape {}", shape_str(shape));
    if (s == 0) {
      empty = true;
      continue;
    }
    GDN_CHECK(!__builtin_mul_overflow(n, s, &n), "shape {} is too large: its element count overflows int64",
              shape_str(shape));
  }
  return empty ? 0 : n;
}

Strides contiguous_strides(const Shape& shape) {
  Strides st(shape.size());
  int64_t s = 1;
  for (int64_t i = static_cast<int64_t>(shape.size()) - 1; i >= 0; --i) {
    st[i] = s;
    s *= shape[i];
  }
  return st;
}

Shape broadcast_shapes(const Shape& a, const Shape& b) {
  size_t n = std::max(a.size(), b.size());
  Shape out(n);
  for (size_t i = 0; i < n; ++i) {
    int64_t da = i < n - a.size() ? 1 : a[i - (n - a.size())];
    int64_t db = i < n - b.size() ? 1 : b[i - (n - b.size())];
    GDN_CHECK(da == db || da == 1 || db == 1, "shapes {} and {} cannot be broadcast", shape_str(a), shape_str(b));
    out[i] = da == 1 ? db : da;
  }
  return out;
}

std::string shape_str(const Shape& shape) { return fmt::format("[{}]", fmt::join(shape, ", ")); }

int64_t normalize_dim(int64_t dim, int64_t ndim) {
  int64_t d = dim < 0 ? dim + ndim : dim;
  GDN_CHECK(d >= 0 && d < ndim, "dimension {} out of range for a tensor of {} dimensions", dim, ndim);
  return d;
}

}  // namespace gdn
