// train/device.cpp — see device.h.
#include "train/device.h"

#include <algorithm>
#include <map>
#include <utility>
#include <vector>

#include "core/dispatch.h"

#ifndef GDN_WITH_CUDA
#define GDN_WITH_CUDA 0  // set to 1 by the gdn_cuda target when the CUDA backend is built
#endif
#if GDN_WITH_CUDA
#include "cuda/cuda_backend.h"
#include "cuda/graph.h"
#include "cuda/stream.h"
#endif

namespace gdn {

bool cuda_compiled_in() { return GDN_WITH_CUDA != 0; }

int visible_cuda_devices() {
#if GDN_WITH_CUDA
  return cuda::device_count();
#else
  return 0;
#endif
}

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

namespace {
// The CPU's kernel timer: kernels run synchronously on the calling thread, so the steady clock around a call is its
// time.
class CpuKernelTimer final : public KernelTimer {
 public:
  int64_t begin(const char* name, Device) override {
    open_.push_back({name, std::chrono::steady_clock::now()});
    return static_cast<int64_t>(open_.size() - 1);
  }
  void end(int64_t token) override {
    const auto& [name, t0] = open_[static_cast<size_t>(token)];
    auto& [calls, ms] = totals_[name];
    calls++;
    ms += std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    if (static_cast<size_t>(token) + 1 == open_.size()) open_.pop_back();
  }
  std::map<std::string, std::pair<int64_t, double>> take() { return std::exchange(totals_, {}); }

 private:
  std::vector<std::pair<const char*, std::chrono::steady_clock::time_point>> open_;
  std::map<std::string, std::pair<int64_t, double>> totals_;
};
}  // namespace

struct KernelProfile::Impl {
  CpuKernelTimer cpu;
#if GDN_WITH_CUDA
  cuda::EventKernelTimer gpu;
#endif
  bool on_gpu = false;
};

KernelProfile::KernelProfile(Device device) : impl_(std::make_unique<Impl>()) {
#if GDN_WITH_CUDA
  impl_->on_gpu = device.is_cuda();
  if (impl_->on_gpu) {
    set_kernel_timer(&impl_->gpu);
    return;
  }
#else
  (void)device;
#endif
  set_kernel_timer(&impl_->cpu);
}

KernelProfile::~KernelProfile() { set_kernel_timer(nullptr); }

std::vector<KernelProfile::Row> KernelProfile::rows() {
  std::map<std::string, std::pair<int64_t, double>> totals;
#if GDN_WITH_CUDA
  if (impl_->on_gpu) totals = impl_->gpu.totals();
#endif
  if (!impl_->on_gpu) totals = impl_->cpu.take();
  std::vector<Row> out;
  for (const auto& [name, v] : totals) out.push_back({name, v.first, v.second});
  std::sort(out.begin(), out.end(), [](const Row& a, const Row& b) { return a.ms > b.ms; });
  return out;
}

#if GDN_WITH_CUDA
struct CapturedWork::Impl {
  cuda::Graph graph;
};
#else
struct CapturedWork::Impl {};
#endif

CapturedWork::CapturedWork(Device device) {
  GDN_CHECK(device.is_cuda() && cuda_compiled_in(), "a CUDA graph needs a GPU, not {}", device);
  impl_ = std::make_unique<Impl>();
}

CapturedWork::~CapturedWork() = default;

#if GDN_WITH_CUDA
void CapturedWork::begin_capture() { impl_->graph.begin_capture(); }
void CapturedWork::end_capture() { impl_->graph.end_capture(); }
void CapturedWork::replay() { impl_->graph.replay(); }
bool CapturedWork::ready() const { return impl_->graph.ready(); }
size_t CapturedWork::nodes() const { return impl_->graph.nodes(); }
#else
void CapturedWork::begin_capture() {}
void CapturedWork::end_capture() {}
void CapturedWork::replay() {}
bool CapturedWork::ready() const { return false; }
size_t CapturedWork::nodes() const { return 0; }
#endif

}  // namespace gdn
