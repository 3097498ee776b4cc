// ops/moe.h — the device-side pieces of a mixture-of-experts layer (models/ffn.h composes them).
//
// moe_routing(probs [N,E], k): the top-k experts of every row and the dispatch plan that groups the M = N*k
//   (token, slot) pairs p = n*k + s by expert — all on probs' device, no gradient, nothing read on the host:
//     ids [N,k]      expert of each pair (largest probability first, the lower id on ties)
//     flat [N,k]     n*E + ids: the chosen entries of probs viewed as [N*E] (gather_rows picks the gate weights)
//     order [M]      the pairs sorted by (expert, p); row r of the expert batch holds pair order[r]
//     tokens [M]     order / k: the token of row r (gather_rows dispatches, scatter_add_rows combines)
//     offsets [E+1]  expert e owns rows [offsets[e], offsets[e+1]) of the batch
//     counts [E]     pairs routed to each expert (int64; read by the host only when it logs)
// grouped_linear(x [M,Q], weights E x [P,Q], offsets [E+1]) -> [M,P]: rows of group e times W_e^T (one grouped GEMM
//   launch for all experts; shapes are static, the group sizes live on the device). Backward: dx = grouped GEMM with
//   W_e, dW_e = dy_e^T x_e (grouped_gemm_dweight).
#pragma once

#include <vector>

#include "core/tensor.h"

namespace gdn {

struct MoERouting {
  Tensor ids, flat, order, tokens, offsets, counts;  // all int64, on probs' device
};

MoERouting moe_routing(const Tensor& probs, int64_t k);
Tensor grouped_linear(const Tensor& x, const std::vector<Tensor>& weights, const Tensor& offsets);

}  // namespace gdn
