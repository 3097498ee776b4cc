// core/device.h — where a tensor's memory lives.
//
// Every tensor carries a Device; kernels are chosen per DeviceType by the dispatch layer (core/dispatch.h).
// The CUDA entry exists from day one so that interfaces never assume host memory.
#pragma once

#include <cstdint>
#include <string>

#include "core/check.h"

namespace gdn {

enum class DeviceType : uint8_t { CPU = 0, CUDA = 1 };
inline constexpr int kNumDeviceTypes = 2;

struct Device {
  DeviceType type = DeviceType::CPU;
  int index = 0;

  bool is_cpu() const { return type == DeviceType::CPU; }
  bool is_cuda() const { return type == DeviceType::CUDA; }
  bool operator==(const Device& o) const { return type == o.type && index == o.index; }
  bool operator!=(const Device& o) const { return !(*this == o); }
  std::string str() const { return type == DeviceType::CPU ? "cpu" : "cuda:" + std::to_string(index); }
};

inline const Device kCPU{DeviceType::CPU, 0};

// Parses "cpu", "cuda", "cuda:1".
Device parse_device(const std::string& s);

}  // namespace gdn

template <> struct fmt::formatter<gdn::Device> : fmt::formatter<std::string> {
  auto format(const gdn::Device& d, format_context& ctx) const { return fmt::formatter<std::string>::format(d.str(), ctx); }
};
