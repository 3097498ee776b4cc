// ops/creation.cpp — see creation.h.
#include "ops/creation.h"

#include "autograd/node.h"
#include "core/dispatch.h"

namespace gdn {

Tensor full(const Shape& shape, double value, DType dtype, Device device) {
  Tensor t = Tensor::empty(shape, dtype, device);
  kernels::fill(device, t, value);
  return t;
}
Tensor zeros(const Shape& shape, DType dtype, Device device) { return full(shape, 0.0, dtype, device); }
Tensor ones(const Shape& shape, DType dtype, Device device) { return full(shape, 1.0, dtype, device); }
Tensor zeros_like(const Tensor& t) { return zeros(t.shape(), t.dtype(), t.device()); }
Tensor empty_like(const Tensor& t) { return Tensor::empty(t.shape(), t.dtype(), t.device()); }

Tensor clone(const Tensor& x) {
  Tensor y = empty_like(x);
  kernels::copy(x.device(), y, x);
  record("clone", {y}, {x}, [](const TensorList& g) -> TensorList { return {g[0]}; });
  return y;
}

Tensor contiguous(const Tensor& x) {
  if (x.is_contiguous()) return x;
  return clone(x);
}

Tensor to_dtype(const Tensor& x, DType dtype) {
  if (x.dtype() == dtype) return x;
  Tensor y = Tensor::empty(x.shape(), dtype, x.device());
  kernels::copy(x.device(), y, x);
  record("to_dtype", {y}, {x}, [from = x.dtype()](const TensorList& g) -> TensorList { return {to_dtype(g[0], from)}; });
  return y;
}

Tensor to_device(const Tensor& x, Device device) {
  if (x.device() == device) return x;
  Tensor src = contiguous(x);
  Tensor y = Tensor::empty(x.shape(), x.dtype(), device);
  copy_bytes(y.raw_data(), device, src.raw_data(), src.device(), src.numel() * element_size(src.dtype()));
  record("to_device", {y}, {x}, [from = x.device()](const TensorList& g) -> TensorList {
    return {to_device(g[0], from)};
  });
  return y;
}

}  // namespace gdn
