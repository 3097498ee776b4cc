// cuda/cuda_backend.h — turning the CUDA backend on.
//
// register_cuda_backend() installs the caching allocator and the host<->device copier for DeviceType::CUDA and
// fills the CUDA column of the kernel table with the kernels that exist so far (cuda/*.cu). Kernels not yet written
// stay empty and fail loudly by name when called. Apps call it when --device cuda is asked for.
#pragma once

namespace gdn::cuda {

void register_cuda_backend();
bool cuda_available();    // a driver and at least one device are present
int cuda_device_count();  // devices visible to this process (0 without a driver)

}  // namespace gdn::cuda
