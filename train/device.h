// train/device.h — turning a --device string into a ready Device.
//
// "cpu" needs nothing. "cuda[:N]" registers the CUDA backend (allocator, copier, kernels) when this build has one,
// and is a clear user error otherwise (no backend, no visible device, an index other than 0: the backend only runs on
// the current device). A malformed name ("cuda:x", an index that does not fit an int) is a user error too. This is the only place above the dispatch layer that knows whether CUDA was
// compiled in.
#pragma once

#include <string>

#include "core/device.h"

namespace gdn {

Device init_device(const std::string& name);
bool cuda_compiled_in();

}  // namespace gdn
