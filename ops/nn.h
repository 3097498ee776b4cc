// ops/nn.h — neural-network ops with fused kernels: embedding, cross-entropy, RMSNorm.
//
// embedding(weight [V,D], ids [...] int64|int32) -> [..., D]; backward scatter-adds rows into dweight.
// cross_entropy(logits [..., V], targets [...] int64, ignore_index) -> scalar mean over kept rows; fused
//   log-softmax + NLL (saves the per-row logsumexp, not the probabilities).
// rms_norm(x [..., D], w [D], eps) -> x / sqrt(mean(x^2) + eps) * w (saves x and 1/rms per row).
#pragma once

#include "core/tensor.h"

namespace gdn {

Tensor embedding(const Tensor& weight, const Tensor& ids);
Tensor cross_entropy(const Tensor& logits, const Tensor& targets, int64_t ignore_index = -100);
Tensor rms_norm(const Tensor& x, const Tensor& weight, double eps = 1e-6);

}  // namespace gdn
