// cuda/cuda_kernels.h — the CUDA column of the kernel table (one .cu file per op family, like ggml). Each file
// mirrors its CPU twin in ops/cpu/ and registers its kernels here; tests/test_cuda_kernels.cpp checks that every
// kernel of core/dispatch.h has a CUDA twin and that each agrees with the CPU.
#pragma once

#include "core/dispatch.h"

namespace gdn::cuda {

void register_elementwise_kernels(KernelTable& t);           // cuda/elementwise.cu
void register_reduce_kernels(KernelTable& t);                // cuda/reduce.cu
void register_gemm_kernels(KernelTable& t);                  // cuda/gemm_cublas.cpp
void register_nn_kernels(KernelTable& t);                    // cuda/nn.cu
void register_cross_entropy_kernels(KernelTable& t);         // cuda/cross_entropy.cu
void register_optimizer_kernels(KernelTable& t);             // cuda/optimizer.cu
void register_moe_kernels(KernelTable& t);                   // cuda/moe.cu
void register_gated_deltanet_ops_kernels(KernelTable& t);    // cuda/gated_deltanet_ops.cu
void register_gdn_gate_kernels(KernelTable& t);              // cuda/gdn_gate.cu
void register_causal_conv1d_kernels(KernelTable& t);         // cuda/causal_conv1d.cu
void register_delta_rule_recurrent_kernels(KernelTable& t);  // cuda/delta_rule_recurrent.cu
void register_delta_rule_chunked_kernels(KernelTable& t);    // cuda/delta_rule_chunked.cu

inline void register_cuda_kernels(KernelTable& t) {
  register_elementwise_kernels(t);
  register_reduce_kernels(t);
  register_gemm_kernels(t);
  register_nn_kernels(t);
  register_cross_entropy_kernels(t);
  register_optimizer_kernels(t);
  register_moe_kernels(t);
  register_gated_deltanet_ops_kernels(t);
  register_gdn_gate_kernels(t);
  register_causal_conv1d_kernels(t);
  register_delta_rule_recurrent_kernels(t);
  register_delta_rule_chunked_kernels(t);
}

}  // namespace gdn::cuda
