// core/allocator.h — memory as a subsystem.
//
// Every byte a tensor owns comes from an Allocator chosen by the tensor's device. The CPU allocator hands out
// 64-byte aligned blocks (cache lines, AVX-512 loads) and keeps statistics; the CUDA backend registers its caching
// allocator for DeviceType::CUDA through set_allocator(). Nothing else in the code base calls malloc for tensors.
//
// gdn-train and gdn-generate print the stats of the CPU allocator (and of the run's device, if another) to stderr
// when they finish, if the environment variable GDN_DEBUG_ALLOC is set to anything but "" or "0"
// (print_allocator_stats_if_requested).
#pragma once

#include <atomic>
#include <cstddef>
#include <string>

#include "core/device.h"

namespace gdn {

struct AllocatorStats {
  size_t current_bytes = 0;  // live bytes handed out
  size_t peak_bytes = 0;     // high-water mark of current_bytes
  size_t num_allocs = 0;     // calls to allocate() so far
  size_t cached_bytes = 0;   // bytes held back for reuse (caching allocators)
};

class Allocator {
 public:
  virtual ~Allocator() = default;
  virtual void* allocate(size_t nbytes) = 0;
  virtual void deallocate(void* ptr, size_t nbytes) = 0;
  virtual Device device() const = 0;
  virtual AllocatorStats stats() const = 0;
  virtual void reset_peak() = 0;
};

// 64-byte aligned host memory with live/peak counters.
class CpuAllocator final : public Allocator {
 public:
  static constexpr size_t kAlignment = 64;
  void* allocate(size_t nbytes) override;
  void deallocate(void* ptr, size_t nbytes) override;
  Device device() const override { return kCPU; }
  AllocatorStats stats() const override;
  void reset_peak() override { peak_ = current_.load(); }

 private:
  std::atomic<size_t> current_{0}, peak_{0}, count_{0};
};

// The allocator for a device type (CPU always present; CUDA once its backend registered one).
Allocator* get_allocator(Device device);
void set_allocator(DeviceType type, Allocator* allocator);

// One line: "<device> allocator: N allocs, live X MiB, peak Y MiB, cached Z MiB".
std::string format_allocator_stats(Device device);

// If GDN_DEBUG_ALLOC is set (not "" or "0"): prints format_allocator_stats of the CPU and, when it is not the CPU,
// of device, one line each to stderr. Returns whether it printed.
bool print_allocator_stats_if_requested(Device device);

}  // namespace gdn
