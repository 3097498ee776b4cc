// cuda/cuda_backend.cpp — see cuda_backend.h.
#include "cuda/cuda_backend.h"

#include <mutex>

#include "cuda/caching_allocator.h"
#include "cuda/cuda_check.h"
#include "cuda/cuda_kernels.h"

namespace gdn::cuda {

namespace {
void copy_bytes_cuda(void* dst, Device dst_device, const void* src, Device src_device, size_t nbytes) {
  cudaMemcpyKind kind = dst_device.is_cpu()   ? cudaMemcpyDeviceToHost
                        : src_device.is_cpu() ? cudaMemcpyHostToDevice
                                              : cudaMemcpyDeviceToDevice;
  CUDA_CHECK(cudaMemcpy(dst, src, nbytes, kind));
}
}  // namespace

bool cuda_available() { return cuda_device_count() > 0; }

int cuda_device_count() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess ? n : 0;
}

void register_cuda_backend() {
  static std::once_flag once;
  std::call_once(once, [] {
    GDN_CHECK(cuda_available(), "no CUDA device is available");
    static CachingAllocator allocator;
    set_allocator(DeviceType::CUDA, &allocator);
    set_device_copier(DeviceType::CUDA, copy_bytes_cuda);
    register_cuda_kernels(kernel_table(DeviceType::CUDA));
  });
}

}  // namespace gdn::cuda
