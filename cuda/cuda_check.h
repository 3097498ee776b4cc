// cuda/cuda_check.h — CUDA_CHECK / CUDA_CHECK_LAST: every CUDA runtime call and every launch is checked, and a
// failure is a located gdn::Error naming the call and the CUDA error string.
#pragma once

#include <cuda_runtime_api.h>

#include "core/check.h"

#define CUDA_CHECK(call)                                                                              \
  do {                                                                                                \
    cudaError_t err_ = (call);                                                                        \
    if (err_ != cudaSuccess) GDN_THROW("{} failed: {} ({})", #call, cudaGetErrorString(err_), static_cast<int>(err_)); \
  } while (0)

// After a kernel launch (cuda/launch.h launch() calls it): reports a launch error, or an earlier asynchronous one.
#define CUDA_CHECK_LAST() CUDA_CHECK(cudaGetLastError())
