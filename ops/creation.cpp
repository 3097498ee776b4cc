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
  // The gradient cast back, except that a bfloat16 activation's gradient stays float32 (autograd/engine.h).
  record("to_dtype", {y}, {x}, [from = x.dtype()](const TensorList& g) -> TensorList {
    return {from == kBFloat16 && g[0].dtype() == kFloat32 ? g[0] : to_dtype(g[0], from)};
  });
  return y;
}

DType output_dtype(const char* op, const Tensor& x, std::optional<DType> out) {
  if (!out || *out == x.dtype()) return x.dtype();
  const bool pair = (*out == kBFloat16 && x.dtype() == kFloat32) || (*out == kFloat32 && x.dtype() == kBFloat16);
  GDN_CHECK(pair, "{}: a {} output for a {} input (bfloat16 for float32 only, or the reverse)", op, *out, x.dtype());
  return *out;
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
