// core/dispatch.cpp — kernel tables and the GDN_TRACE printer (see dispatch.h).
#include "core/dispatch.h"

#include <cstdio>
#include <cstdlib>

namespace gdn {

KernelTable& kernel_table(DeviceType type) {
  static KernelTable tables[kNumDeviceTypes];
  return tables[static_cast<int>(type)];
}

uint64_t kernel_calls() { return detail::kernel_call_count; }
void set_kernel_timer(KernelTimer* timer) { detail::kernel_timer = timer; }

namespace detail {
uint64_t kernel_call_count = 0;
KernelTimer* kernel_timer = nullptr;
bool trace_enabled() {
  static const bool on = [] {
    const char* v = std::getenv("GDN_TRACE");
    return v != nullptr && v[0] != '\0' && v[0] != '0';
  }();
  return on;
}
void trace_begin(const char* name, Device device) { std::fprintf(stderr, "[gdn] %-24s %-6s", name, device.str().c_str()); }
void trace_arg(const Tensor& t) {
  if (t.defined()) std::fprintf(stderr, " %s", fmt::format("{}{}", t.dtype(), shape_str(t.shape())).c_str());
}
void trace_end() { std::fputc('\n', stderr); }
}  // namespace detail

}  // namespace gdn
