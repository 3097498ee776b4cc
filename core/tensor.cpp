// core/tensor.cpp — tensor construction, views and host reads (see tensor.h).
#include "core/tensor.h"

#include <cstdint>
#include <cstring>

namespace gdn {

Tensor Tensor::empty(const Shape& shape, DType dtype, Device device) {
  auto impl = std::make_shared<TensorImpl>();
  const size_t n = static_cast<size_t>(shape_numel(shape)), esize = element_size(dtype);
  GDN_CHECK(n <= SIZE_MAX / esize, "shape {} of {} is too large: its byte count overflows size_t", shape_str(shape),
            dtype);
  impl->storage = std::make_shared<Storage>(n * esize, device);
  impl->shape = shape;
  impl->strides = contiguous_strides(shape);
  impl->dtype = dtype;
  return Tensor(std::move(impl));
}

namespace {
template <typename T, typename S> void convert_into(T* dst, const std::vector<S>& src) {
  for (size_t i = 0; i < src.size(); ++i) dst[i] = static_cast<T>(src[i]);
}

template <typename S> void write_host(const Tensor& t, const std::vector<S>& values) {
  switch (t.dtype()) {
    case DType::Float32: convert_into(t.data<float>(), values); break;
    case DType::Float64: convert_into(t.data<double>(), values); break;
    case DType::Int32: convert_into(t.data<int32_t>(), values); break;
    case DType::Int64: convert_into(t.data<int64_t>(), values); break;
    case DType::BFloat16: {
      auto* p = t.data<bfloat16>();
      for (size_t i = 0; i < values.size(); ++i) p[i] = bfloat16(static_cast<float>(values[i]));
      break;
    }
  }
}

template <typename S> Tensor from_host(const std::vector<S>& values, const Shape& shape, DType dtype, Device device) {
  GDN_CHECK(static_cast<int64_t>(values.size()) == shape_numel(shape), "{} values for shape {}", values.size(),
            shape_str(shape));
  Tensor host = Tensor::empty(shape, dtype, kCPU);
  write_host(host, values);
  if (device.is_cpu()) return host;
  Tensor dev = Tensor::empty(shape, dtype, device);
  copy_bytes(dev.raw_data(), device, host.raw_data(), kCPU, host.numel() * element_size(dtype));
  return dev;
}

double read_element(const void* base, DType dtype, int64_t index) {
  switch (dtype) {
    case DType::Float32: return static_cast<const float*>(base)[index];
    case DType::Float64: return static_cast<const double*>(base)[index];
    case DType::Int32: return static_cast<const int32_t*>(base)[index];
    case DType::Int64: return static_cast<double>(static_cast<const int64_t*>(base)[index]);
    case DType::BFloat16: return static_cast<float>(static_cast<const bfloat16*>(base)[index]);
  }
  return 0;
}

// Visits every element's storage offset (relative to the view start) in row-major order.
template <typename F> void for_each_offset(const Shape& shape, const Strides& strides, F f) {
  int64_t n = shape_numel(shape);
  if (n == 0) return;
  std::vector<int64_t> idx(shape.size(), 0);
  int64_t off = 0;
  for (int64_t i = 0; i < n; ++i) {
    f(off);
    for (int64_t d = static_cast<int64_t>(shape.size()) - 1; d >= 0; --d) {
      if (++idx[d] < shape[d]) {
        off += strides[d];
        break;
      }
      off -= strides[d] * (shape[d] - 1);
      idx[d] = 0;
    }
  }
}
}  // namespace

Tensor Tensor::from_vector(const std::vector<double>& values, const Shape& shape, DType dtype, Device device) {
  return from_host(values, shape, dtype, device);
}

Tensor Tensor::from_int64(const std::vector<int64_t>& values, const Shape& shape, Device device) {
  return from_host(values, shape, kInt64, device);
}

bool Tensor::is_contiguous() const {
  const auto& s = impl().shape;
  const auto& st = impl().strides;
  int64_t expected = 1;
  for (int64_t i = static_cast<int64_t>(s.size()) - 1; i >= 0; --i) {
    if (s[i] == 1) continue;  // the stride of a size-1 dimension never matters
    if (st[i] != expected) return false;
    expected *= s[i];
  }
  return true;
}

int64_t Tensor::row_stride() const {
  const auto& s = impl().shape;
  const auto& st = impl().strides;
  const int64_t n = static_cast<int64_t>(s.size());
  const int64_t width = n > 0 ? s[n - 1] : 1;
  if (n > 0 && width > 1 && st[n - 1] != 1) return -1;
  int64_t rs = -1, expected = -1;  // the row stride, and the stride the next size > 1 dimension up must have
  for (int64_t i = n - 2; i >= 0; --i) {
    if (s[i] == 1) continue;
    if (rs < 0) {
      rs = st[i];
    } else if (st[i] != expected) {
      return -1;
    }
    expected = st[i] * s[i];
  }
  if (rs < 0) return width;  // a single row
  return rs >= width ? rs : -1;
}

int64_t Tensor::checked_row_stride(const char* what) const {
  const int64_t s = row_stride();
  GDN_CHECK(s > 0, "{}: {} must be rows of unit stride (a contiguous tensor or a column window of one)", what, str());
  return s;
}

std::string Tensor::str() const {
  if (!defined()) return "undefined";
  return fmt::format("{}{} {}", dtype(), shape_str(shape()), device());
}

void* Tensor::raw_data() const {
  auto* base = static_cast<char*>(impl().storage->data());
  return base + impl().offset * static_cast<int64_t>(element_size(impl().dtype));
}

Tensor Tensor::as_strided(const Shape& shape, const Strides& strides, int64_t offset) const {
  GDN_CHECK(shape.size() == strides.size(), "as_strided: shape {} vs {} strides", shape_str(shape), strides.size());
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = this->impl().storage;
  impl->shape = shape;
  impl->strides = strides;
  impl->offset = offset;
  impl->dtype = this->impl().dtype;
  return Tensor(std::move(impl));
}

Tensor Tensor::detach() const { return as_strided(shape(), strides(), offset()); }

Tensor& Tensor::set_requires_grad(bool on) {
  GDN_CHECK(!on || is_floating(dtype()), "only floating tensors can require gradients, got {}", dtype());
  GDN_CHECK(is_leaf(), "set_requires_grad on a non-leaf tensor");
  impl().requires_grad = on;
  return *this;
}

double Tensor::item() const {
  GDN_CHECK(numel() == 1, "item() on a tensor with {} elements", numel());
  char buf[8];
  copy_bytes(buf, kCPU, raw_data(), device(), element_size(dtype()));
  return read_element(buf, dtype(), 0);
}

std::vector<double> Tensor::to_double_vector() const {
  std::vector<double> out;
  out.reserve(numel());
  if (device().is_cpu()) {
    const void* base = raw_data();
    for_each_offset(shape(), strides(), [&](int64_t off) { out.push_back(read_element(base, dtype(), off)); });
    return out;
  }
  GDN_CHECK(is_contiguous(), "to_double_vector on a non-contiguous {} tensor: call contiguous() first", device());
  std::vector<char> host(numel() * element_size(dtype()));
  copy_bytes(host.data(), kCPU, raw_data(), device(), host.size());
  for (int64_t i = 0; i < numel(); ++i) out.push_back(read_element(host.data(), dtype(), i));
  return out;
}

std::vector<int64_t> Tensor::to_int64_vector() const {
  GDN_CHECK(dtype() == kInt64 || dtype() == kInt32, "to_int64_vector on a {} tensor", dtype());
  std::vector<double> d = to_double_vector();
  return std::vector<int64_t>(d.begin(), d.end());
}

namespace {
CopyBytesFn& copier_slot(DeviceType t) {
  static CopyBytesFn slots[kNumDeviceTypes] = {nullptr, nullptr};
  return slots[static_cast<int>(t)];
}
}  // namespace

void copy_bytes(void* dst, Device dst_device, const void* src, Device src_device, size_t nbytes) {
  if (nbytes == 0) return;
  if (dst_device.is_cpu() && src_device.is_cpu()) {
    std::memcpy(dst, src, nbytes);
    return;
  }
  DeviceType t = dst_device.is_cpu() ? src_device.type : dst_device.type;
  CopyBytesFn fn = copier_slot(t);
  GDN_CHECK(fn != nullptr, "no copier registered for {} <- {}", dst_device, src_device);
  fn(dst, dst_device, src, src_device, nbytes);
}

void set_device_copier(DeviceType type, CopyBytesFn fn) { copier_slot(type) = fn; }

}  // namespace gdn
