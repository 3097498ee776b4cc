// ops/cpu/register_cpu.cpp — fills the CPU column of the kernel tables before main() runs.
//
// Static libraries only link object files that something references, so a registrar object alone could be dropped.
// The build (ops/CMakeLists.txt) tells the linker to keep the symbol gdn_cpu_kernels_anchor, which pulls this file
// and with it the registrar below into every program that links gdn_ops.
#include "ops/cpu/cpu_kernels.h"

#include <mutex>
#include <vector>

extern "C" {
int gdn_cpu_kernels_anchor = 0;
}

namespace gdn::cpu {

void register_cpu_kernels() {
  static std::once_flag once;
  std::call_once(once, [] {
    KernelTable& t = kernel_table(DeviceType::CPU);
    register_elementwise_kernels(t);
    register_reduce_kernels(t);
    register_matmul_kernels(t);
    register_nn_kernels(t);
    register_optimizer_kernels(t);
    register_moe_kernels(t);
    register_gated_deltanet_kernels(t);
  });
}

namespace {
const bool registered = (register_cpu_kernels(), true);
}

}  // namespace gdn::cpu
