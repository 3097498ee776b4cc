// ops/matmul.h — matrix products.
//
// matmul(a, b):
//   a [..., M, K] @ b [K, N]        -> [..., M, N]   (rows of a flattened into one GEMM: the Linear layer case)
//   a [..., M, K] @ b [..., K, N]   -> [..., M, N]   (batched; equal leading dimensions)
// Transposed views go to the kernel without a copy (each matrix may be row- or column-major).
// Backward: da = dy @ b^T, db = a^T @ dy (summed over the batch when b is 2-D, which the flattened GEMM does).
// linear(x, w) = x @ w^T with w stored [out, in] as in PyTorch, so checkpoints map one to one.
#pragma once

#include <cstdint>

#include "core/tensor.h"

namespace gdn {

Tensor matmul(const Tensor& a, const Tensor& b);
Tensor linear(const Tensor& x, const Tensor& weight);  // x [..., in], weight [out, in] -> [..., out]

// Floating-point operations (2 P M N K per product) of every GEMM matmul has issued, forward and backward, since the
// program started: bench-train divides it by the step time to show how close a step runs to the GEMM roofline.
uint64_t gemm_flops();

}  // namespace gdn
