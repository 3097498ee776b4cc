// train/device.cpp — see device.h.
#include "train/device.h"

#ifndef GDN_WITH_CUDA
#define GDN_WITH_CUDA 0  // set to 1 by the gdn_cuda target when the CUDA backend is built
#endif
#if GDN_WITH_CUDA
#include "cuda/cuda_backend.h"
#endif

namespace gdn {

bool cuda_compiled_in() { return GDN_WITH_CUDA != 0; }

Device init_device(const std::string& name) {
  Device d = parse_device(name);
  if (d.is_cuda()) {
#if GDN_WITH_CUDA
    GDN_USER_CHECK(cuda::cuda_available(), "--device {}: no CUDA device is visible on this machine", name);
    // The backend runs on the current device (cuda:0) and never switches: another index would silently run there.
    GDN_USER_CHECK(d.index == 0, "--device {}: this build runs on cuda:0 only ({} device(s) visible; choose one with "
                   "CUDA_VISIBLE_DEVICES)", name, cuda::cuda_device_count());
    cuda::register_cuda_backend();
#else
    throw UserError(fmt::format("--device {}: this build has no CUDA backend (configure with -DGDN_CUDA=ON)", name));
#endif
  }
  return d;
}

}  // namespace gdn
