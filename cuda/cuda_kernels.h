// cuda/cuda_kernels.h — the CUDA column of the kernel table (one .cu file per op family, like ggml).
#pragma once

#include "core/dispatch.h"

namespace gdn::cuda {

void register_elementwise_kernels(KernelTable& t);  // cuda/elementwise.cu
void register_gemm_kernels(KernelTable& t);         // cuda/gemm_cublas.cpp
void register_gated_deltanet_ops_kernels(KernelTable& t);  // cuda/gated_deltanet_ops.cu

inline void register_cuda_kernels(KernelTable& t) {
  register_elementwise_kernels(t);
  register_gemm_kernels(t);
  register_gated_deltanet_ops_kernels(t);
}

}  // namespace gdn::cuda
