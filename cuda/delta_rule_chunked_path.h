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

// Whether a backward of this shape is worth the tensor cores (when allowed and their shared memory fits): K >= 128,
// or at most 64 (batch, value head, chunk) tiles of work. Measured on an H200 (docs/PERF.md): the bf16 backward beats
// the float32 split kernels there (B4 T256 H4 K64: 0.256 vs 0.272 ms; K = V = 128: 19.1 vs 21.3 ms) and loses with
// more tiles at K = 64 (B8 T512 H4: 0.575 vs 0.471 ms; B16 T512: 1.18 vs 0.93). The forward takes them wherever
// they fit. GDN_DR_BACKWARD=tensor-cores or float32 overrides the rule.
bool delta_rule_chunked_backward_prefers_tensor_cores(int64_t B, int64_t Hv, int64_t NC, int64_t K);

}  // namespace gdn::cuda
