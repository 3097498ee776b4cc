// ops/gated_deltanet.h — the Gated DeltaNet operators, each one fused op with its own backward.
//
// Math: docs/MATH.md ("Gated DeltaNet layer" and the two "Gated delta rule" sections); shapes use the glossary B batch,
// T time, C channels, W conv width, H heads (Hk key heads, Hv value heads, Hv a multiple of Hk), K key dim, V value
// dim. All operators take float32 or float64; state and gate sums are kept in at least float32. The inputs that come
// straight from the layer's input projection may also be bfloat16 storage with float32 arithmetic (its outputs under
// bf16 products, ops/matmul.h linear_multi's out): causal_conv1d's x, rms_norm_gated's z (for float32 x) and
// gdn_gate's a and b. Their other tensors and outputs are then float32, and the gradients of those bf16 inputs come
// back in bfloat16 (the operands of the projection's backward GEMMs, with no copy).
#pragma once

#include <optional>
#include <utility>
#include <vector>

#include "core/tensor.h"

namespace gdn {

// Causal depthwise conv1d over time, optional bias and fused SiLU:
//   y[b,t,c] = act(bias[c] + sum_w weight[c,w] * x[b, t-W+1+w, c]), x at t < 0 from initial_state (zeros if undefined)
// x [B,T,C], weight [C,W], bias [C] or undefined, initial_state [B,C,W-1] or undefined.
// When final_state is non-null it receives the last W-1 inputs [B,C,W-1] (the generation cache), no gradient.
Tensor causal_conv1d(const Tensor& x, const Tensor& weight, const Tensor& bias = {}, bool silu = true,
                     const Tensor& initial_state = {}, Tensor* final_state = nullptr);
// The same conv with y returned as its channel parts, consecutive ranges of `sizes` channels (adding up to C, at most
// 4 parts), each its own contiguous [B,T,C_i] tensor: the layer's q | k | v without slicing copies either way.
std::vector<Tensor> causal_conv1d_parts(const Tensor& x, const Tensor& weight, const std::vector<int64_t>& sizes,
                                        const Tensor& bias = {}, bool silu = true, const Tensor& initial_state = {},
                                        Tensor* final_state = nullptr);

// x * rsqrt(sum(x^2) + eps) over the last dimension.
Tensor l2norm(const Tensor& x, double eps = 1e-6);

// rmsnorm(x) * weight * silu(z) over the last dimension. x, z [..., V], weight [V].
// out: the output's dtype (unset: x's; bfloat16 for float32 x where a bf16 GEMM is its only reader, ops/creation.h).
Tensor rms_norm_gated(const Tensor& x, const Tensor& z, const Tensor& weight, double eps = 1e-6,
                      std::optional<DType> out = std::nullopt);

// The gate's two guards, kGateALogMax and kGateMin, are part of the gate kernels' contract: core/dispatch.h.

// g = max(-exp(min(A_log, kGateALogMax)) * softplus(a + dt_bias), kGateMin) (log decay, in [kGateMin, 0]),
// beta = sigmoid(b). a, b [B,T,Hv], A_log, dt_bias [Hv]. Returns {g, beta}. NaN inputs give NaN outputs. a and b may
// be column windows of one tensor (the layer's b | a split): read in place, and their gradients written as the same
// windows of one buffer, which the split takes whole.
std::pair<Tensor, Tensor> gdn_gate(const Tensor& a, const Tensor& b, const Tensor& A_log, const Tensor& dt_bias);

enum class DeltaRuleMode { Chunked, Recurrent };

struct DeltaRuleOutput {
  Tensor o;            // [B,T,Hv,V]
  Tensor final_state;  // [B,Hv,K,V] when requested, else undefined
};

// The gated delta rule. q, k [B,T,Hk,K] (l2-normalised by the caller), v [B,T,Hv,V], g, beta [B,T,Hv],
// initial_state [B,Hv,K,V] or undefined (zeros). Differentiable in q, k, v, g, beta and initial_state.
// Chunked (training) and Recurrent (reference, inference) compute the same function.
DeltaRuleOutput gated_delta_rule(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& g,
                                 const Tensor& beta, double scale, const Tensor& initial_state = {},
                                 bool output_final_state = false, DeltaRuleMode mode = DeltaRuleMode::Chunked,
                                 int64_t chunk_size = 64);

}  // namespace gdn
