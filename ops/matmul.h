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
#include <optional>
#include <vector>

#include "core/tensor.h"

namespace gdn {

Tensor matmul(const Tensor& a, const Tensor& b);
// x [..., in], weight [out, in] -> [..., out]; out: the output's dtype, the weight's or, on bf16 products only,
// bfloat16 (the lm_head's logits for the cross-entropy, which returns their gradient in bfloat16).
Tensor linear(const Tensor& x, const Tensor& weight, std::optional<DType> out = std::nullopt);
// linear_multi(x, {w_1, ..., w_P}) = {linear(x, w_1), ..., linear(x, w_P)} as one node: the backward adds the P
// products g_p w_p into one dx inside the GEMMs (beta = 1) instead of the engine summing P gradients of x, and under
// bf16 products x is copied to bf16 once for all P; weights of one shape then share one bf16 copy [P, out, in] and
// the P forward products are one batched GEMM (x broadcast over the batch).
// With parts, weight p's outputs come as consecutive blocks of parts[p] features (row blocks of w_p, adding up to
// its rows; an empty list: one output), each its own contiguous tensor (a GEMM each); w_p's gradient is still one
// tensor, written block by block. The outputs are listed weight by weight, block by block.
// out: the outputs' dtype, the weights' or, on bf16 products only, bfloat16 (the float32-accumulated products rounded
// once: the FFN's gate | up for swiglu, whose gradients then come back in bfloat16 with no copy either way).
std::vector<Tensor> linear_multi(const Tensor& x, const std::vector<Tensor>& weights,
                                 const std::vector<std::vector<int64_t>>& parts = {},
                                 std::optional<DType> out = std::nullopt);

// linear_cross_entropy(x, w, targets) = cross_entropy(linear(x, w), targets) (the mean over all N rows; every target
// in [0, V)) without the [N, V] logits: the rows go through in chunks of `chunk_rows` (0 = as many as keep one
// chunk's logits near 128 MiB; the environment variable GDN_LOSS_CHUNK_MIB sets another size, for A/B runs, e.g.
// chunks whose logits stay in the GPU's L2 cache). Per chunk: logits = x_c w^T (GEMM), the cross-entropy kernel,
// loss += loss_c n_c / N; and when gradients are wanted, at once (liger-kernel's idea: the mean's 1/N is known in the
// forward), dlogits = (softmax - onehot) / N, made by the same kernel in the same pass over the chunk's logits
// (cross_entropy_fused) into the dlogits of the chunk's group: `group_rows` rows, whole chunks (0 = as many as keep
// a group's dlogits near 1 GiB). Per group: dx_g = dlogits w and dw += dlogits^T x_g (GEMMs, the second with beta =
// 1 after the first group). The backward only multiplies dx and dw by the incoming dloss.
// Memory: one chunk of logits and one group of dlogits (all N rows where they fit 1 GiB) instead of two [N, V]
// tensors, plus dx and dw held from forward to backward.
// x [..., D], w [V, D], targets [...] int64 with as many elements as x has rows.
// bf16 products (core/precision.h): on a CUDA device, linear and linear_cross_entropy with at least
// bf16_gemm_min_flops() multiply bfloat16 copies of x, w and the incoming gradient, each made once per call, with
// float32 results (linear_cross_entropy's logits and dlogits are then bfloat16: the GEMM writes its logits rounded
// once, the fused cross-entropy kernel reads them with float32 arithmetic and writes the dlogits in bfloat16); an x
// or a gradient that is already bfloat16 (linear_input_dtype below, linear_multi's out) is used as it is.
Tensor linear_cross_entropy(const Tensor& x, const Tensor& weight, const Tensor& targets, int64_t chunk_rows = 0,
                            int64_t group_rows = 0);

// linear_input_dtype(x, out): the dtype in which linear, linear_multi and linear_cross_entropy want x [..., in] for
// `out` output features in all: bfloat16 where they multiply bf16 copies (float32 or bfloat16 x, bf16 products, a
// CUDA device, at least bf16_gemm_min_flops()), else float32 (float64 x: float64). A producer whose output only
// such a product reads (a norm, swiglu) writes it in that dtype, and the product takes it as its operand with no
// copy. The three ops accept a bfloat16 x
// for float32 weights either way (converted back to float32 where they multiply in float32); the gradient they
// return for it is float32 (a bfloat16 activation's gradient is float32: autograd/engine.h).
DType linear_input_dtype(const Tensor& x, int64_t out_features);

// Bf16WeightCopies: the bfloat16 copies of a model's weights for bf16 products, made for every weight in one launch
// (kernels::copy_to_bf16) instead of one copy per product. refresh(weights, rows) — under Precision::BFloat16 with
// float32 weights on a CUDA device, when a product of `rows` input rows with one of the weights reaches
// bf16_gemm_min_flops(), else a no-op — writes every copy from the current float32 values, and until the returned
// scope ends, linear, linear_multi and linear_cross_entropy take a weight's copy from here instead of making one.
// The model refreshes at the start of each forward, so a copy is never older than its weight (the optimizer updates
// the weights between forwards). The copies lie back to back in one buffer, in the order given, which is kept while
// the list stays the same (a captured CUDA graph keeps its addresses): two weights of one shape given one after the
// other are adjacent, and linear_multi multiplies them as one batched GEMM.
class Bf16WeightCopies {
 public:
  class Scope {
   public:
    explicit Scope(const Bf16WeightCopies* active);
    ~Scope();
    Scope(const Scope&) = delete;
    Scope& operator=(const Scope&) = delete;

   private:
    const Bf16WeightCopies* previous_;
    bool engaged_;
  };
  [[nodiscard]] Scope refresh(const std::vector<Tensor>& weights, int64_t rows);
  // The bf16 copy of `weight` (same shape) from the active scope's object, or nullptr.
  static const Tensor* find(const Tensor& weight);

 private:
  std::vector<const void*> sources_;  // the float32 weights' data, in refresh order
  std::vector<Tensor> copies_;        // views of one bfloat16 buffer
};

// Floating-point operations (2 P M N K per product) of every GEMM matmul has issued, forward and backward, since the
// program started: bench-train divides it by the step time to show how close a step runs to the GEMM roofline.
uint64_t gemm_flops();

}  // namespace gdn
