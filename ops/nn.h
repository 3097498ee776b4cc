// ops/nn.h — neural-network ops with fused kernels: embedding, cross-entropy, RMSNorm.
//
// embedding(weight [V,D], ids [...] int64|int32) -> [..., D]; backward scatter-adds rows into dweight.
// cross_entropy(logits [..., V], targets [...] int64, ignore_index) -> scalar mean over kept rows; fused
//   log-softmax + NLL (saves the per-row logsumexp, not the probabilities). bfloat16 logits (the bf16 lm_head's):
//   float32 arithmetic and loss, their gradient in bfloat16.
// rms_norm(x [..., D], w [D], eps) -> x / sqrt(mean(x^2) + eps) * w (saves x and 1/rms per row).
// add_rms_norm(x, r, w, eps) -> {h = x + r, rms_norm(h, w, eps)}: a pre-norm block's residual add and the norm after
//   it in one kernel each way (one pass over x and r forward; backward, the norm's dh plus the gradient h got from
//   its other consumers, also in one pass; x and r share that one gradient tensor).
// softmax(x, dim): exp(x - max) / sum, composed of differentiable ops (used by the MoE router).
// gather_rows(x [N,D], idx [M]) -> [M,D] and scatter_add_rows(src [M,D], idx [M], N) -> [N,D] are each other's
//   backward (MoE token dispatch and combine); they run on the embedding kernels, which do exactly this.
#pragma once

#include <optional>
#include <utility>

#include "core/tensor.h"

namespace gdn {

Tensor embedding(const Tensor& weight, const Tensor& ids);
Tensor cross_entropy(const Tensor& logits, const Tensor& targets, int64_t ignore_index = -100);
// out: the normalised output's dtype (unset: x's; bfloat16 for float32 x where a bf16 GEMM is its only reader,
// ops/creation.h output_dtype; h stays in x's dtype).
Tensor rms_norm(const Tensor& x, const Tensor& weight, double eps = 1e-6, std::optional<DType> out = std::nullopt);
std::pair<Tensor, Tensor> add_rms_norm(const Tensor& x, const Tensor& r, const Tensor& weight, double eps = 1e-6,
                                       std::optional<DType> out = std::nullopt);
Tensor softmax(const Tensor& x, int64_t dim = -1);
Tensor gather_rows(const Tensor& x, const Tensor& idx);
Tensor scatter_add_rows(const Tensor& src, const Tensor& idx, int64_t num_rows);

}  // namespace gdn
