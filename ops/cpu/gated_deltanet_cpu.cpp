// ops/cpu/gated_deltanet_cpu.cpp — CPU kernels of the Gated DeltaNet operators (filled in by the operator work).
#include "ops/cpu/cpu_kernels.h"

namespace gdn::cpu {

void register_gated_deltanet_kernels(KernelTable&) {}

}  // namespace gdn::cpu
