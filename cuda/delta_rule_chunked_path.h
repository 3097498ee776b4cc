// cuda/delta_rule_chunked_path.h — which kernels the chunked gated delta rule ran on its last calls (read by
// apps/bench_gdn_ops.cpp and the CUDA kernel harness; defined in cuda/delta_rule_chunked.cu).
#pragma once

namespace gdn::cuda {

// "bf16 tensor cores" (cuda/delta_rule_chunked_mma*.cuh), "float32 split", "float32 tiled" or "float32 untiled"
// (cuda/delta_rule_chunked.cu's header comment names their kernels); "none" before the first call.
struct DeltaRuleChunkedPaths {
  const char* forward = "none";
  const char* backward = "none";
};

// The paths of the last gated_delta_rule_chunked_forward and _backward calls of this process, recorded on the host
// when their kernels are queued (no device work, no synchronization).
DeltaRuleChunkedPaths delta_rule_chunked_last_paths();

// Whether the tensor-core path may run at all in this process: false under GDN_DR_SPLIT=0 or GDN_DR_UNTILED=1
// (cuda/delta_rule_chunked.cu), which select the float32 kernels for every call.
bool delta_rule_chunked_tensor_cores_allowed();

}  // namespace gdn::cuda
