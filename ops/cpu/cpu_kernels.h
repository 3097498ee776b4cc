// ops/cpu/cpu_kernels.h — how the CPU column of the kernel table is filled.
//
// Each ops/cpu/*_cpu.cpp file defines its kernels in an anonymous namespace and one register_*_kernels function
// that stores them in the table. register_cpu_kernels() (ops/cpu/register_cpu.cpp) calls them all once.
#pragma once

#include "core/dispatch.h"

namespace gdn::cpu {

void register_elementwise_kernels(KernelTable& t);
void register_reduce_kernels(KernelTable& t);
void register_matmul_kernels(KernelTable& t);
void register_nn_kernels(KernelTable& t);
void register_optimizer_kernels(KernelTable& t);  // sum_squares, adamw_step
void register_moe_kernels(KernelTable& t);  // moe_route, moe_plan, grouped_gemm, grouped_gemm_dweight
void register_gated_deltanet_kernels(KernelTable& t);  // conv1d, l2norm, gated norm, gate, delta rule
void register_delta_rule_recurrent_kernels(KernelTable& t);  // called by register_gated_deltanet_kernels
void register_delta_rule_chunked_kernels(KernelTable& t);    // called by register_gated_deltanet_kernels

// Fills the CPU column of every kernel table (idempotent). Called before main() by the static registrar in
// register_cpu.cpp; calling it again does nothing.
void register_cpu_kernels();

}  // namespace gdn::cpu
