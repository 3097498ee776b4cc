// cuda/cuda_backend.cpp — see cuda_backend.h.
#include "cuda/cuda_backend.h"

#include <algorithm>
#include <cstring>
#include <mutex>
#include <vector>

#include "cuda/caching_allocator.h"
#include "cuda/cuda_check.h"
#include "cuda/cuda_kernels.h"
#include "cuda/graph.h"
#include "cuda/stream.h"

namespace gdn::cuda {

namespace {

// Host-to-device copies go through a ring of pinned (page-locked) staging buffers. A cudaMemcpyAsync from ordinary
// pageable memory first waits for the stream to drain, which would stall the host once per training step (the
// batch's token ids); from pinned memory it is a true asynchronous DMA. The bytes are memcpy'd into the next slot
// and the copy is queued behind the kernels already on the stream; an event recorded after it tells when the slot
// may be overwritten, so the host waits only if it has gone a whole ring ahead of the device.
class PinnedStaging {
 public:
  static constexpr int kSlots = 4;
  static constexpr size_t kMaxStaged = 64u << 20;  // larger copies (weights at load time) go unstaged

  void copy_to_device(void* dst, const void* src, size_t nbytes) {
    std::lock_guard<std::mutex> lock(mu_);
    Slot& s = slots_[next_];
    next_ = (next_ + 1) % kSlots;
    if (s.event == nullptr) CUDA_CHECK(cudaEventCreateWithFlags(&s.event, cudaEventDisableTiming));
    else CUDA_CHECK(cudaEventSynchronize(s.event));  // the slot's previous copy has left it
    if (s.capacity < nbytes) {
      if (s.data != nullptr) CUDA_CHECK(cudaFreeHost(s.data));
      s.capacity = std::max<size_t>(nbytes, 1u << 16);
      CUDA_CHECK(cudaMallocHost(&s.data, s.capacity));
    }
    std::memcpy(s.data, src, nbytes);
    CUDA_CHECK(cudaMemcpyAsync(dst, s.data, nbytes, cudaMemcpyHostToDevice, current_stream()));
    CUDA_CHECK(cudaEventRecord(s.event, current_stream()));
  }

 private:
  struct Slot {
    void* data = nullptr;
    size_t capacity = 0;
    cudaEvent_t event = nullptr;
  };
  std::mutex mu_;
  Slot slots_[kSlots];
  int next_ = 0;
};

// Copies are queued on the one stream, after the kernels that produce their source. Only a copy to the host waits
// (the caller reads the bytes next); host-to-device and device-to-device copies return at once.
// Inside a graph capture (cuda/graph.h) a host-to-device copy is a constant of the graph: its bytes are kept in a
// pinned buffer of their own for the life of the process, and every replay copies them again.
void copy_constant_into_graph(void* dst, const void* src, size_t nbytes) {
  static std::mutex mu;
  static std::vector<void*> kept;
  void* pinned = nullptr;
  CUDA_CHECK(cudaMallocHost(&pinned, nbytes));
  std::memcpy(pinned, src, nbytes);
  {
    std::lock_guard<std::mutex> lock(mu);
    kept.push_back(pinned);
  }
  CUDA_CHECK(cudaMemcpyAsync(dst, pinned, nbytes, cudaMemcpyHostToDevice, current_stream()));
}

void copy_bytes_cuda(void* dst, Device dst_device, const void* src, Device src_device, size_t nbytes) {
  static PinnedStaging staging;
  if (nbytes == 0) return;
  if (is_capturing()) {
    GDN_CHECK(!dst_device.is_cpu(), "a device-to-host copy of {} bytes inside a CUDA graph capture (the host would "
              "read values that have not been computed)", nbytes);
    if (src_device.is_cpu()) return copy_constant_into_graph(dst, src, nbytes);
  }
  if (dst_device.is_cpu()) {
    CUDA_CHECK(cudaMemcpyAsync(dst, src, nbytes, cudaMemcpyDeviceToHost, current_stream()));
    synchronize();
  } else if (src_device.is_cpu() && nbytes <= PinnedStaging::kMaxStaged) {
    staging.copy_to_device(dst, src, nbytes);
  } else {
    const cudaMemcpyKind kind = src_device.is_cpu() ? cudaMemcpyHostToDevice : cudaMemcpyDeviceToDevice;
    CUDA_CHECK(cudaMemcpyAsync(dst, src, nbytes, kind, current_stream()));
  }
}

}  // namespace

bool cuda_available() { return device_count() > 0; }

void register_cuda_backend() {
  static std::once_flag once;
  std::call_once(once, [] {
    GDN_CHECK(cuda_available(), "no CUDA device is available");
    set_allocator(DeviceType::CUDA, &caching_allocator());
    set_device_copier(DeviceType::CUDA, copy_bytes_cuda);
    register_cuda_kernels(kernel_table(DeviceType::CUDA));
  });
}

}  // namespace gdn::cuda
