// core/dispatch.h — the one list of device kernels, and the table that picks one per device.
//
// An op (ops/*.cpp) never calls a CPU or CUDA function directly: it calls kernels::NAME(device, args...), which
// looks NAME up in the table of the device's type. The CPU column is filled by ops/cpu/ (register_cpu_kernels), the
// CUDA column by cuda/ when gdn.cpp is built with CUDA; an empty cell is a loud error naming kernel and device.
// This is PyTorch's "dispatch stub" idea reduced to one X-macro: GDN_FOR_EACH_KERNEL is the single place where a
// kernel's name and signature are written down.
//
// Conventions for every kernel: outputs first, then inputs, then attributes; outputs are preallocated by the op
// with the right shape, dtype and device; kernels write (=) their outputs, never accumulate, unless the name says
// so. Tensors may be strided unless the kernel's comment says "contiguous".
//
// GDN_TRACE=1 in the environment prints every kernel call with its device and tensor shapes (tinygrad's DEBUG).
// kernel_calls() counts the calls made through the table (bench-train reports it per training step). A
// KernelTimer installed with set_kernel_timer() is told about every call (bench-train --profile: device time per
// kernel, measured with CUDA events on the GPU).
#pragma once

#include <cstdint>
#include <type_traits>
#include <utility>
#include <vector>

#include "core/tensor.h"

namespace gdn {

enum class UnaryOp : uint8_t { Neg, Exp, Log, Sqrt, Rsqrt, Sigmoid, Silu, Softplus, LogSigmoid, Tanh, Abs };
enum class BinaryOp : uint8_t { Add, Sub, Mul, Div };
enum class ScalarOp : uint8_t { Add, Mul, Pow };  // x + s, x * s, x ^ s

// The two guards of the gate kernels (docs/MATH.md, "Gates"). exp(A_log) is evaluated at min(A_log, kGateALogMax),
// which stays finite in float32 (exp overflows above 88.7), and g is clamped below at kGateMin: exp(kGateMin) is 0 in
// float32 and below 1e-47 in float64, so a gate that would be smaller already forgets the whole state, and the clamp
// only keeps g (and the chunk cumsums of g) finite. Where a guard is active its derivative is 0.
inline constexpr double kGateALogMax = 80.0;
inline constexpr double kGateMin = -110.0;

struct AdamWParams {
  double lr, beta1, beta2, eps, weight_decay;
  int64_t step;           // 1-based, for bias correction
  double max_norm = 0;    // gradient clipping threshold on the global L2 norm (0 = no clipping)
};

// X(name, signature). Shapes use the project glossary; N = rows, V = vocabulary (classes).
#define GDN_FOR_EACH_KERNEL(X)                                                                                  \
  /* out = value */                                                                                             \
  X(fill, void(const Tensor& out, double value))                                                                \
  /* out = in, same shape, any strides, converting dtype */                                                     \
  X(copy, void(const Tensor& out, const Tensor& in))                                                            \
  /* outs[i] (bfloat16) = ins[i] (float32) rounded to nearest even; contiguous, equal numel; one GPU launch */      \
  X(copy_to_bf16, void(const std::vector<Tensor>& outs, const std::vector<Tensor>& ins))                        \
  /* out = op(in) */                                                                                            \
  X(unary, void(UnaryOp op, const Tensor& out, const Tensor& in))                                               \
  /* dx = dy * op'(x); y = op(x) is passed too (cheaper derivative for exp, sigmoid, tanh, sqrt) */             \
  X(unary_backward, void(UnaryOp op, const Tensor& dx, const Tensor& dy, const Tensor& x, const Tensor& y))     \
  /* out = a op b; a and b are already expanded to out's shape (stride 0 where broadcast) */                    \
  X(binary, void(BinaryOp op, const Tensor& out, const Tensor& a, const Tensor& b))                             \
  /* out = in op s */                                                                                           \
  X(scalar, void(ScalarOp op, const Tensor& out, const Tensor& in, double s))                                   \
  /* y = silu(a) * b (SwiGLU's activation); y, a, b of one shape, contiguous; y may be bfloat16 for float32 */  \
  /* a, b (the operand of a bf16 GEMM, each value rounded once to nearest even; so for every "y may be") */     \
  X(swiglu_forward, void(const Tensor& y, const Tensor& a, const Tensor& b))                                    \
  /* da = dy * b * silu'(a), db = dy * silu(a); silu'(a) = s (1 + a (1 - s)), s = sigmoid(a); contiguous */      \
  X(swiglu_backward, void(const Tensor& da, const Tensor& db, const Tensor& dy, const Tensor& a, const Tensor& b)) \
  /* out = sum of in over the dimensions where out has size 1 (same rank) */                                    \
  X(sum_to, void(const Tensor& out, const Tensor& in))                                                          \
  /* values, indices (int64) = max of in along dim (first index on ties); size 1 at dim; contiguous */         \
  X(max_dim, void(const Tensor& values, const Tensor& indices, const Tensor& in, int64_t dim))                  \
  /* dx = 0 except dx[.., indices, ..] = dy along dim (max backward); contiguous */                           \
  X(scatter_dim, void(const Tensor& dx, const Tensor& dy, const Tensor& indices, int64_t dim))                  \
  /* out [P,M,N] = alpha * a [P,M,K] @ b [P,K,N] + beta * out; each matrix row- or column-major; operands */   \
  /* of out's dtype, or bfloat16 ones with a float32 or bfloat16 out (float32 accumulation, rounded once) */     \
  X(gemm, void(const Tensor& out, const Tensor& a, const Tensor& b, double alpha, double beta))                 \
  /* out [N,D] = weight [V,D][ids [N]] */                                                                       \
  X(embedding_forward, void(const Tensor& out, const Tensor& weight, const Tensor& ids))                        \
  /* dweight [V,D] = scatter-add of dout [N,D] rows at ids [N] (dweight is overwritten, zeros elsewhere) */      \
  X(embedding_backward, void(const Tensor& dweight, const Tensor& dout, const Tensor& ids))                     \
  /* loss [1] = mean over rows with target != ignore of logsumexp - logit[target]; lse [N]; count [1]; the */  \
  /* logits may be bfloat16 (the bf16 lm_head's, float32 arithmetic: loss, lse, count float32) */               \
  X(cross_entropy_forward, void(const Tensor& loss, const Tensor& lse, const Tensor& count,                    \
                                const Tensor& logits, const Tensor& targets, int64_t ignore_index))            \
  /* dlogits [N,V] = dloss * (softmax - onehot) / count on kept rows, 0 on ignored rows (logits' dtype, or   */ \
  /* bfloat16 for float32 logits: the bf16 lm_head products of ops/matmul.h's linear_cross_entropy)         */ \
  /* (bfloat16 logits: dlogits bfloat16, dloss float32)                                                     */ \
  X(cross_entropy_backward, void(const Tensor& dlogits, const Tensor& dloss, const Tensor& logits,             \
                                 const Tensor& lse, const Tensor& count, const Tensor& targets,                \
                                 int64_t ignore_index))                                                        \
  /* cross_entropy_forward (loss, lse, count) and, in the same pass over each row, dlogits = dscale [1] *      */ \
  /* (softmax - onehot) on kept rows, 0 on ignored ones: the backward for a dloss / count known beforehand     */ \
  /* (dlogits' dtypes as cross_entropy_backward's) */                                                             \
  X(cross_entropy_fused, void(const Tensor& loss, const Tensor& lse, const Tensor& count, const Tensor& dlogits, \
                              const Tensor& dscale, const Tensor& logits, const Tensor& targets,               \
                              int64_t ignore_index))                                                           \
  /* y [N,D] = s * rstd * w; rstd [N] = 1/sqrt(mean(s^2) + eps) with s = x, or with r [N,D] given s = x + r, */ \
  /* written to h [N,D] (the residual add fused with the norm after it); contiguous; y may be bfloat16 */     \
  X(rms_norm_forward, void(const Tensor& y, const Tensor& rstd, const Tensor& h, const Tensor& x,               \
                           const Tensor& r, const Tensor& w, double eps))                                       \
  /* dx [N,D], dw [D] (overwritten) from dy [N,D] (x: the norm's input); with dres [N,D] given, dx + dres */    \
  /* (the gradient that reached the residual sum from its other consumers); contiguous */                       \
  X(rms_norm_backward, void(const Tensor& dx, const Tensor& dw, const Tensor& dy, const Tensor& dres,           \
                            const Tensor& x, const Tensor& w, const Tensor& rstd))                              \
  /* out [1] float64 = sum over every tensor of xs of its squared elements, accumulated in double; contiguous */ \
  X(sum_squares, void(const Tensor& out, const std::vector<Tensor>& xs))                                        \
  /* one AdamW step, in place, of every (params[i], ms[i], vs[i]) from grads[i] times the clip factor */         \
  /* c = max_norm / (sqrt(grad_sq_norm) + 1e-6) if max_norm > 0 and the norm exceeds it, else 1; grad_sq_norm */ \
  /* [1] float64 opt (undefined: c = 1); a non-finite norm skips the step (nothing changes); contiguous; */      \
  /* schedule [2] float64 opt on the params' device = (lr, step): when defined, it replaces p.lr and p.step, */     \
  /* so that a captured CUDA graph reads the learning rate and step count from device memory */                    \
  X(adamw_step, void(const std::vector<Tensor>& params, const std::vector<Tensor>& ms,                          \
                     const std::vector<Tensor>& vs, const std::vector<Tensor>& grads,                           \
                     const Tensor& grad_sq_norm, const Tensor& schedule, const AdamWParams& p))                 \
  /* ---- mixture of experts (ops/moe.h); all contiguous; ids, flat, order, tokens, offsets, counts int64 ---- */   \
  /* ids [N,k] = the k largest entries of probs [N,E] per row, largest first, the lower id on ties (NaN ranks */     \
  /* as -inf); flat [N,k] = n * E + ids (the index of the chosen entry in probs viewed as [N*E]) */                 \
  X(moe_route, void(const Tensor& ids, const Tensor& flat, const Tensor& probs))                                 \
  /* the M = N*k (token, slot) pairs p = n*k + s of ids [N,k] grouped by expert (E = counts.size(0)), stable: */     \
  /* order [M] = the pairs by (expert, p), tokens [M] = order / k, offsets [E+1] = start of each expert's run */     \
  /* (offsets[0] = 0, offsets[E] = M), counts [E] = pairs routed to each expert */                                 \
  X(moe_plan, void(const Tensor& order, const Tensor& tokens, const Tensor& offsets, const Tensor& counts,      \
                   const Tensor& ids))                                                                         \
  /* grouped GEMM over row groups given on the device: rows [offsets[e], offsets[e+1]) of out [M,P] = the same */   \
  /* rows of a [M,Q] @ W_e^T (transpose_w, weights[e] [P,Q]) or @ W_e (weights[e] [Q,P]); E = weights.size(), */     \
  /* offsets [E+1] with offsets[0] = 0, nondecreasing, offsets[E] = M */                                            \
  X(grouped_gemm, void(const Tensor& out, const Tensor& a, const std::vector<Tensor>& weights,                   \
                       const Tensor& offsets, bool transpose_w))                                                \
  /* dweights[e] [P,Q] = sum over the rows r of group e of dy[r]^T a[r] (dy [M,P], a [M,Q]); 0 for an empty */      \
  /* group; offsets as in grouped_gemm */                                                                          \
  X(grouped_gemm_dweight, void(const std::vector<Tensor>& dweights, const Tensor& dy, const Tensor& a,           \
                               const Tensor& offsets))                                                          \
  /* ---- Gated DeltaNet (ops/gated_deltanet.h); all contiguous; "opt" = may be undefined (absent) ---- */       \
  /* y [B,T,C] = act(bias + sum_w weight[c,w] x[t-W+1+w]); x [B,T,C], weight [C,W], bias [C] opt, */              \
  /* initial_state [B,C,W-1] opt (x before t=0), final_state [B,C,W-1] opt receives the last W-1 inputs; */      \
  /* y is given as its channel parts ys, [B,T,C_i] each, in order (one part: y itself) */                        \
  X(causal_conv1d_forward, void(const std::vector<Tensor>& ys, const Tensor& final_state, const Tensor& x,      \
                                const Tensor& weight, const Tensor& bias, const Tensor& initial_state, bool silu)) \
  /* dx [B,T,C], dweight [C,W], dbias [C] opt, dinitial_state [B,C,W-1] opt, from dy [B,T,C] given as its */     \
  /* channel parts dys, as the forward's ys */                                                                   \
  X(causal_conv1d_backward, void(const Tensor& dx, const Tensor& dweight, const Tensor& dbias,                  \
                                 const Tensor& dinitial_state, const std::vector<Tensor>& dys, const Tensor& x, \
                                 const Tensor& weight, const Tensor& bias, const Tensor& initial_state,         \
                                 bool silu))                                                                   \
  /* y [N,D] = x * rstd; rstd [N] = 1/sqrt(sum(x^2) + eps) */                                                   \
  X(l2norm_forward, void(const Tensor& y, const Tensor& rstd, const Tensor& x, double eps))                      \
  /* dx [N,D] = rstd * (dy - (dy . y) y) */                                                                     \
  X(l2norm_backward, void(const Tensor& dx, const Tensor& dy, const Tensor& y, const Tensor& rstd))             \
  /* y [N,V] = x * rstd * w * silu(z); rstd [N] = 1/sqrt(mean(x^2) + eps); z [N,V], w [V]; y may be bf16 */     \
  X(rms_norm_gated_forward, void(const Tensor& y, const Tensor& rstd, const Tensor& x, const Tensor& z,         \
                                 const Tensor& w, double eps))                                                 \
  /* dx, dz [N,V], dw [V] (overwritten) from dy [N,V] */                                                        \
  X(rms_norm_gated_backward, void(const Tensor& dx, const Tensor& dz, const Tensor& dw, const Tensor& dy,       \
                                  const Tensor& x, const Tensor& z, const Tensor& w, const Tensor& rstd))      \
  /* g [B,T,H] = max(-exp(min(A_log, kGateALogMax)) softplus(a + dt_bias), kGateMin), beta = sigmoid(b) */    \
  /* [B,T,H]; A_log, dt_bias [H]; a, b (and da, db below) rows of H with any row stride (Tensor::row_stride: */ \
  /* column windows of the layer's [B,T,2H] b | a projection, read and written in place); g, beta contiguous */  \
  X(gdn_gate_forward, void(const Tensor& g, const Tensor& beta, const Tensor& a, const Tensor& b,               \
                           const Tensor& A_log, const Tensor& dt_bias))                                        \
  /* da, db [B,T,H], dA_log, ddt_bias [H] (sums over B,T) from dg, dbeta [B,T,H]; 0 where a guard is active */ \
  X(gdn_gate_backward, void(const Tensor& da, const Tensor& db, const Tensor& dA_log, const Tensor& ddt_bias,   \
                            const Tensor& dg, const Tensor& dbeta, const Tensor& a, const Tensor& b,            \
                            const Tensor& A_log, const Tensor& dt_bias))                                       \
  /* Gated delta rule, token by token (reference, inference): o [B,T,Hv,V], final_state [B,Hv,K,V] opt; */       \
  /* q, k [B,T,Hk,K], v [B,T,Hv,V], g, beta [B,T,Hv], initial_state [B,Hv,K,V] opt */                            \
  X(gated_delta_rule_recurrent_forward, void(const Tensor& o, const Tensor& final_state, const Tensor& q,       \
                                             const Tensor& k, const Tensor& v, const Tensor& g,                 \
                                             const Tensor& beta, const Tensor& initial_state, double scale))    \
  /* dq, dk [B,T,Hk,K], dv [B,T,Hv,V], dg, dbeta [B,T,Hv], dinitial_state [B,Hv,K,V] opt, from do [B,T,Hv,V] */ \
  /* and dfinal_state [B,Hv,K,V] opt; recomputes the states from checkpoints */                                  \
  X(gated_delta_rule_recurrent_backward, void(const Tensor& dq, const Tensor& dk, const Tensor& dv,             \
                                              const Tensor& dg, const Tensor& dbeta,                            \
                                              const Tensor& dinitial_state, const Tensor& do_,                  \
                                              const Tensor& dfinal_state, const Tensor& q, const Tensor& k,     \
                                              const Tensor& v, const Tensor& g, const Tensor& beta,             \
                                              const Tensor& initial_state, double scale))                       \
  /* Gated delta rule, chunked WY form (training), same shapes as the recurrent rows; chunk_states */           \
  /* [B,Hv,NC,K,V] opt (NC = ceil(T/chunk_size)) receives the state at the start of every chunk; saved opt */   \
  /* receives whatever per-chunk scratch the backend wants the backward to reuse (may stay empty) */             \
  X(gated_delta_rule_chunked_forward, void(const Tensor& o, const Tensor& final_state,                          \
                                           const Tensor& chunk_states, const Tensor& q, const Tensor& k,        \
                                           const Tensor& v, const Tensor& g, const Tensor& beta,                \
                                           const Tensor& initial_state, double scale, int64_t chunk_size,       \
                                           std::vector<Tensor>* saved))                                          \
  /* gradients as in the recurrent row, from the forward's chunk_states [B,Hv,NC,K,V] and its saved list */      \
  /* (empty: recomputed; same bits either way) */                                                               \
  X(gated_delta_rule_chunked_backward, void(const Tensor& dq, const Tensor& dk, const Tensor& dv,               \
                                            const Tensor& dg, const Tensor& dbeta,                              \
                                            const Tensor& dinitial_state, const Tensor& do_,                    \
                                            const Tensor& dfinal_state, const Tensor& q, const Tensor& k,       \
                                            const Tensor& v, const Tensor& g, const Tensor& beta,               \
                                            const Tensor& chunk_states, double scale, int64_t chunk_size,       \
                                            const std::vector<Tensor>& saved))

struct KernelTable {
#define GDN_KERNEL_FIELD_(NAME, SIG) std::add_pointer_t<SIG> NAME = nullptr;
  GDN_FOR_EACH_KERNEL(GDN_KERNEL_FIELD_)
#undef GDN_KERNEL_FIELD_
};

// The (mutable) table of one device type. Backends fill it once at start-up.
KernelTable& kernel_table(DeviceType type);

// Kernel calls made through the table since the program started (ops are called from one host thread).
uint64_t kernel_calls();

// Brackets every kernel call while installed (nullptr: none, the default). begin() returns a token that end() gets.
class KernelTimer {
 public:
  virtual ~KernelTimer() = default;
  virtual int64_t begin(const char* name, Device device) = 0;
  virtual void end(int64_t token) = 0;
};
void set_kernel_timer(KernelTimer* timer);

namespace detail {
extern uint64_t kernel_call_count;
extern KernelTimer* kernel_timer;
bool trace_enabled();
void trace_begin(const char* name, Device device);
void trace_arg(const Tensor& t);
template <typename T> void trace_arg(const T&) {}
void trace_end();

template <typename Fn, typename... Args>
void call_kernel(Fn fn, const char* name, Device device, Args&&... args) {
  GDN_CHECK(fn != nullptr, "kernel '{}' is not implemented for device {}", name, device);
  ++kernel_call_count;
  if (trace_enabled()) {
    trace_begin(name, device);
    (trace_arg(args), ...);
    trace_end();
  }
  if (kernel_timer == nullptr) return fn(std::forward<Args>(args)...);
  const int64_t token = kernel_timer->begin(name, device);
  fn(std::forward<Args>(args)...);
  kernel_timer->end(token);
}
}  // namespace detail

// kernels::NAME(device, args...) — the only way ops reach device code.
namespace kernels {
#define GDN_KERNEL_CALL_(NAME, SIG)                                                              \
  template <typename... Args> void NAME(Device device, Args&&... args) {                         \
    detail::call_kernel(kernel_table(device.type).NAME, #NAME, device, std::forward<Args>(args)...); \
  }
GDN_FOR_EACH_KERNEL(GDN_KERNEL_CALL_)
#undef GDN_KERNEL_CALL_
}  // namespace kernels

}  // namespace gdn
