// cuda/cuda_backend.h — turning the CUDA backend on.
//
// register_cuda_backend() installs the caching allocator and the host<->device copier for DeviceType::CUDA and
// fills the CUDA column of the kernel table (cuda/cuda_kernels.h: every kernel of core/dispatch.h has a CUDA twin).
// train/device.cpp calls it, after cuda::set_device(), when --device cuda[:N] is asked for.
#pragma once

namespace gdn::cuda {

void register_cuda_backend();
bool cuda_available();    // a driver and at least one device are present

}  // namespace gdn::cuda
