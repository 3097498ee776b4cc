// train/device.cpp — see device.h.
#include "train/device.h"

#ifndef GDN_WITH_CUDA
#define GDN_WITH_CUDA 0  // set to 1 by the gdn_cuda target when the CUDA backend is built
#endif
#if GDN_WITH_CUDA
#include "cuda/cuda_backend.h"
#include "cuda/stream.h"
#endif

namespace gdn {

bool cuda_compiled_in() { return GDN_WITH_CUDA != 0; }

Device init_device(const std::string& name) {
  Device d = parse_device(name);
  if (d.is_cuda()) {
#if GDN_WITH_CUDA
    GDN_USER_CHECK(cuda::cuda_available(), "--device {}: no CUDA device is visible on this machine", name);
    cuda::set_device(d.index);
    cuda::register_cuda_backend();
#else
    throw UserError(fmt::format("--device {}: this build has no CUDA backend (configure with -DGDN_CUDA=ON)", name));
#endif
  }
  return d;
}

}  // namespace gdn

namespace gdn {

void synchronize(Device device) {
#if GDN_WITH_CUDA
  if (device.is_cuda()) cuda::synchronize();
#else
  (void)device;
#endif
}

#if GDN_WITH_CUDA
struct DeviceTimer::Events {
  cuda::EventTimer timer;
};
#else
struct DeviceTimer::Events {};
#endif

DeviceTimer::DeviceTimer(Device device) : device_(device) {
#if GDN_WITH_CUDA
  if (device.is_cuda()) events_ = std::make_unique<Events>();
#endif
}

DeviceTimer::~DeviceTimer() = default;

void DeviceTimer::start() {
#if GDN_WITH_CUDA
  if (events_) return events_->timer.start();
#endif
  t0_ = std::chrono::steady_clock::now();
}

double DeviceTimer::stop_ms() {
#if GDN_WITH_CUDA
  if (events_) return events_->timer.stop_ms();
#endif
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0_).count();
}

}  // namespace gdn
