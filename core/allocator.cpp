// core/allocator.cpp — the CPU allocator and the per-device allocator registry.
#include "core/allocator.h"

#include <charconv>
#include <cstdio>
#include <cstdlib>

namespace gdn {

void* CpuAllocator::allocate(size_t nbytes) {
  if (nbytes == 0) return nullptr;
  size_t rounded = (nbytes + kAlignment - 1) / kAlignment * kAlignment;  // aligned_alloc needs a multiple
  void* p = std::aligned_alloc(kAlignment, rounded);
  GDN_CHECK(p != nullptr, "CPU allocation of {} bytes failed", nbytes);
  size_t now = current_.fetch_add(nbytes) + nbytes;
  size_t peak = peak_.load();
  while (now > peak && !peak_.compare_exchange_weak(peak, now)) {
  }
  count_.fetch_add(1);
  return p;
}

void CpuAllocator::deallocate(void* ptr, size_t nbytes) {
  if (ptr == nullptr) return;
  std::free(ptr);
  current_.fetch_sub(nbytes);
}

AllocatorStats CpuAllocator::stats() const {
  AllocatorStats s;
  s.current_bytes = current_.load();
  s.peak_bytes = peak_.load();
  s.num_allocs = count_.load();
  return s;
}

namespace {
Allocator*& allocator_slot(DeviceType type) {
  static CpuAllocator cpu;
  static Allocator* slots[kNumDeviceTypes] = {&cpu, nullptr};
  return slots[static_cast<int>(type)];
}
}  // namespace

Allocator* get_allocator(Device device) {
  Allocator* a = allocator_slot(device.type);
  GDN_CHECK(a != nullptr, "no allocator registered for device {} (was gdn.cpp built with CUDA?)", device);
  return a;
}

void set_allocator(DeviceType type, Allocator* allocator) { allocator_slot(type) = allocator; }

std::string format_allocator_stats(Device device) {
  AllocatorStats s = get_allocator(device)->stats();
  return fmt::format("{} allocator: {} allocs, live {:.2f} MiB, peak {:.2f} MiB, cached {:.2f} MiB", device,
                     s.num_allocs, s.current_bytes / 1048576.0, s.peak_bytes / 1048576.0, s.cached_bytes / 1048576.0);
}

bool print_allocator_stats_if_requested(Device device) {
  const char* v = std::getenv("GDN_DEBUG_ALLOC");
  if (v == nullptr || v[0] == '\0' || (v[0] == '0' && v[1] == '\0')) return false;
  std::fprintf(stderr, "%s\n", format_allocator_stats(kCPU).c_str());
  if (device.type != DeviceType::CPU) std::fprintf(stderr, "%s\n", format_allocator_stats(device).c_str());
  return true;
}

Device parse_device(const std::string& s) {
  if (s == "cpu") return kCPU;
  if (s == "cuda") return Device{DeviceType::CUDA, 0};
  if (s.rfind("cuda:", 0) == 0) {
    // The index must be plain digits that fit an int: "cuda:99999999999" is a user's mistake, not a crash.
    int index = -1;
    const char* first = s.data() + 5;
    const char* last = s.data() + s.size();
    auto [end, ec] = std::from_chars(first, last, index);
    GDN_USER_CHECK(first != last && ec == std::errc() && end == last && index >= 0,
                   "unknown device '{}': expected cpu, cuda or cuda:N with N a device index", s);
    return Device{DeviceType::CUDA, index};
  }
  throw UserError(fmt::format("unknown device '{}': expected cpu, cuda or cuda:N", s));
}

}  // namespace gdn
