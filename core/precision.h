// core/precision.h — the process-wide arithmetic precision of products on the GPU.
//
// Float32 (the default, and always on the CPU): every product is computed in the tensors' dtype, as the CPU twin
// does. BFloat16: on the GPU, products of float32 tensors may round their inputs to bfloat16 and accumulate in
// float32 on tensor cores (cuBLAS GEMMs, see bf16_gemm_min_flops below; the chunked delta rule's tile products);
// tensors stay float32 in memory except the GEMMs' bfloat16 operands (weight copies; the outputs of norms and swiglu
// that only such a GEMM reads, ops/matmul.h linear_input_dtype; the FFN's gate | up products, models/ffn.cpp; the
// Gated DeltaNet layer's in_proj outputs q | k | v, z and b | a, models/gated_deltanet_layer.cpp; a training step's
// logits, models/language_model.cpp), and norms, softmax, cross-entropy, gates, the delta-rule state
// and the optimizer keep float32 arithmetic (core/dtype.h arithmetic_dtype). float64 tensors are never rounded. The
// trainer sets it from the config key "precision" (train/config.h); it is read on the host when a kernel is
// launched, so it may change between steps, not within a captured CUDA graph.
#pragma once

namespace gdn {

enum class Precision { Float32, BFloat16 };

Precision matmul_precision();
void set_matmul_precision(Precision p);

// Under BFloat16, a float32 GEMM of at least this many floating-point operations (2 P M N K) runs on bfloat16
// operands: cuBLAS multiplies compact bfloat16 copies with float32 accumulation and a float32 result (the gemm kernel
// makes the copies itself, one copy kernel per operand, unless the caller hands bfloat16 operands in: ops/matmul.h's
// linear, linear_multi and linear_cross_entropy copy each operand once and take the weights from
// Bf16WeightCopies). A smaller one runs on the float32 operands with CUBLAS_COMPUTE_32F_FAST_16BF, for which cuBLAS
// takes TF32 kernels (10-bit mantissas): there the copies cost more than the faster bf16 kernel saves. Default 64
// MFLOP (docs/PERF.md: 0, 64 and 256 measured within 1% of each other at medium and large); the environment variable
// GDN_GEMM_BF16_MIN_MFLOP, read at the first call, overrides it (0: every GEMM on bf16 operands) for A/B runs;
// set_bf16_gemm_min_flops overrides both (tests).
double bf16_gemm_min_flops();
void set_bf16_gemm_min_flops(double flops);

// Restores the previous precision when it goes out of scope (tests and benchmarks).
class PrecisionGuard {
 public:
  explicit PrecisionGuard(Precision p) : saved_(matmul_precision()) { set_matmul_precision(p); }
  ~PrecisionGuard() { set_matmul_precision(saved_); }
  PrecisionGuard(const PrecisionGuard&) = delete;
  PrecisionGuard& operator=(const PrecisionGuard&) = delete;

 private:
  Precision saved_;
};

}  // namespace gdn
