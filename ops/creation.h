// ops/creation.h — making tensors and moving them between layouts, dtypes and devices.
//
// zeros/ones/full fill fresh memory through the fill kernel (so they work on any device). contiguous, clone and
// to_dtype are differentiable copies: their backward passes the gradient through (cast back for to_dtype, but a
// bfloat16 activation's gradient stays float32: autograd/engine.h).
#pragma once

#include <optional>

#include "core/tensor.h"

namespace gdn {

Tensor zeros(const Shape& shape, DType dtype = kFloat32, Device device = kCPU);
Tensor ones(const Shape& shape, DType dtype = kFloat32, Device device = kCPU);
Tensor full(const Shape& shape, double value, DType dtype = kFloat32, Device device = kCPU);
Tensor zeros_like(const Tensor& t);
Tensor empty_like(const Tensor& t);  // contiguous, same shape/dtype/device

Tensor contiguous(const Tensor& x);         // x itself when already contiguous
Tensor clone(const Tensor& x);              // always a fresh contiguous copy
Tensor to_dtype(const Tensor& x, DType dtype);  // x itself when the dtype already matches
Tensor to_device(const Tensor& x, Device device);  // a contiguous copy on another device

// The output dtype of an op whose output may be stored in bfloat16 for a bf16 GEMM (ops/matmul.h linear_input_dtype:
// rms_norm, add_rms_norm, rms_norm_gated, swiglu): x's own when `out` is unset, else `out`, which must be x's,
// bfloat16 for float32 x or float32 for bfloat16 x (float32 arithmetic on bf16 storage).
DType output_dtype(const char* op, const Tensor& x, std::optional<DType> out);

}  // namespace gdn
