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
// linear_multi(x, {w_1, ..., w_P}) = {linear(x, w_1), ..., linear(x, w_P)} as one node: the backward adds the P
// products g_p w_p into one dx inside the GEMMs (beta = 1) instead of the engine summing P gradients of x, and under
// bf16 products x is copied to bf16 once for all P; weights of one shape then share one bf16 copy [P, out, in] and
// the P forward products are one batched GEMM (x broadcast over the batch).
std::vector<Tensor> linear_multi(const Tensor& x, const std::vector<Tensor>& weights);

// linear_cross_entropy(x, w, targets) = cross_entropy(linear(x, w), targets) (the mean over all N rows; every target
// in [0, V)) without the [N, V] logits: the rows go through in chunks of `chunk_rows` (0 = as many as keep one
// chunk's logits near 128 MiB). Per chunk: logits = x_c w^T (GEMM), the cross-entropy kernel, loss += loss_c n_c / N;
// and when gradients are wanted, at once (liger-kernel's idea: the mean's 1/N is known in the forward), dlogits =
// (softmax - onehot) / N (the cross-entropy backward kernel), dx_c = dlogits w and dw += dlogits^T x_c (GEMMs, the
// second accumulating with beta = 1). The backward only multiplies dx and dw by the incoming dloss. Memory: one
// chunk of logits and one of dlogits instead of two [N, V] tensors, plus dx and dw held from forward to backward.
// x [..., D], w [V, D], targets [...] int64 with as many elements as x has rows.
// bf16 products (core/precision.h): on a CUDA device, linear and linear_cross_entropy with at least
// bf16_gemm_min_flops() multiply bfloat16 copies of x, w and the incoming gradient, each made once per call (the
// cross-entropy backward writes linear_cross_entropy's dlogits in bfloat16 directly), with float32 results.
Tensor linear_cross_entropy(const Tensor& x, const Tensor& weight, const Tensor& targets, int64_t chunk_rows = 0);

// Floating-point operations (2 P M N K per product) of every GEMM matmul has issued, forward and backward, since the
// program started: bench-train divides it by the step time to show how close a step runs to the GEMM roofline.
uint64_t gemm_flops();

}  // namespace gdn
