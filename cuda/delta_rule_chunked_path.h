// cuda/delta_rule_chunked_path.h — which kernels the chunked gated delta rule ran on its last calls (read by
// apps/bench_gdn_ops.cpp and the CUDA kernel harness; defined in cuda/delta_rule_chunked.cu).
#pragma once

#include <cstdint>

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

// Whether the backward takes the tensor cores where they are allowed and their shared memory fits: yes at every
// shape since the 512-thread chunk-parallel kernels (docs/PERF.md, H200, bf16 fwd+bwd with the tensor-core vs the
// float32 split backward: B4 T256 H4 K64 0.219 vs 0.330 ms, B8 T512 0.479 vs 0.573, B16 T512 0.929 vs 1.105,
// B8 T2048 H8 3.49 vs 4.36, K = V = 128 15.1 vs 24.0); before them the float32 backward won at K = 64 beyond 64
// (batch, value head, chunk) tiles. GDN_DR_BACKWARD=float32 says no (an A/B switch).
bool delta_rule_chunked_backward_takes_tensor_cores();

}  // namespace gdn::cuda
