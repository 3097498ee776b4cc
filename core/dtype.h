// core/dtype.h — element types a tensor can hold.
//
// Float32 is the training type on the CPU, Float64 the type of every gradcheck. BFloat16 exists as a storage type
// (conversion in the copy kernel) so that mixed precision can be added without touching op interfaces. Int64 holds
// token ids and indices, Int32 compact token streams.
//
#pragma once

#include <cstdint>
#include <cstring>
#include <string_view>

#include "core/check.h"

namespace gdn {

enum class DType : uint8_t { Float32, Float64, BFloat16, Int32, Int64 };

inline constexpr DType kFloat32 = DType::Float32;
inline constexpr DType kFloat64 = DType::Float64;
inline constexpr DType kBFloat16 = DType::BFloat16;
inline constexpr DType kInt32 = DType::Int32;
inline constexpr DType kInt64 = DType::Int64;

inline size_t element_size(DType t) {
  switch (t) {
    case DType::Float32: return 4;
    case DType::Float64: return 8;
    case DType::BFloat16: return 2;
    case DType::Int32: return 4;
    case DType::Int64: return 8;
  }
  return 0;
}

inline std::string_view dtype_name(DType t) {
  switch (t) {
    case DType::Float32: return "float32";
    case DType::Float64: return "float64";
    case DType::BFloat16: return "bfloat16";
    case DType::Int32: return "int32";
    case DType::Int64: return "int64";
  }
  return "?";
}

inline bool is_floating(DType t) { return t == DType::Float32 || t == DType::Float64 || t == DType::BFloat16; }

// The type kernels compute in for tensors stored in t: float32 for bfloat16 storage (a bf16 activation, the FFN's
// gate | up, bf16 logits), t itself otherwise.
inline DType arithmetic_dtype(DType t) { return t == DType::BFloat16 ? DType::Float32 : t; }

// bfloat16: the top 16 bits of an IEEE float32; conversion rounds to nearest even.
struct bfloat16 {
  uint16_t bits = 0;
  bfloat16() = default;
  explicit bfloat16(float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) {  // NaN stays a quiet NaN
      bits = static_cast<uint16_t>((u >> 16) | 0x40);
    } else {
      u += 0x7fffu + ((u >> 16) & 1u);
      bits = static_cast<uint16_t>(u >> 16);
    }
  }
  explicit operator float() const {
    uint32_t u = static_cast<uint32_t>(bits) << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
  }
};

// Maps a C++ type to its DType (used by Tensor::data<T>() checks).
template <typename T> struct dtype_of;
template <> struct dtype_of<float> { static constexpr DType value = DType::Float32; };
template <> struct dtype_of<double> { static constexpr DType value = DType::Float64; };
template <> struct dtype_of<bfloat16> { static constexpr DType value = DType::BFloat16; };
template <> struct dtype_of<int32_t> { static constexpr DType value = DType::Int32; };
template <> struct dtype_of<int64_t> { static constexpr DType value = DType::Int64; };

// dispatch_float(dtype, "op", [&](auto tag) { using scalar_t = decltype(tag); ... }) runs the body with
// scalar_t = float or double; any other dtype is a located error naming the op. (Functions, not macros, so the
// body may hold #pragma omp lines.) dispatch_index does the same for int32 / int64, dispatch_all for every dtype.
template <typename F> void dispatch_float(DType t, const char* name, F&& f) {
  switch (t) {
    case DType::Float32: f(float{}); return;
    case DType::Float64: f(double{}); return;
    default: GDN_THROW("{}: unsupported dtype {}", name, dtype_name(t));
  }
}

template <typename F> void dispatch_index(DType t, const char* name, F&& f) {
  switch (t) {
    case DType::Int32: f(int32_t{}); return;
    case DType::Int64: f(int64_t{}); return;
    default: GDN_THROW("{}: expected an integer index tensor, got {}", name, dtype_name(t));
  }
}

template <typename F> void dispatch_all(DType t, F&& f) {
  switch (t) {
    case DType::Float32: f(float{}); return;
    case DType::Float64: f(double{}); return;
    case DType::BFloat16: f(bfloat16{}); return;
    case DType::Int32: f(int32_t{}); return;
    case DType::Int64: f(int64_t{}); return;
  }
}

}  // namespace gdn

template <> struct fmt::formatter<gdn::DType> : fmt::formatter<std::string_view> {
  auto format(gdn::DType t, format_context& ctx) const {
    return fmt::formatter<std::string_view>::format(gdn::dtype_name(t), ctx);
  }
};
