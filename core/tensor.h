// core/tensor.h — the tensor: dtype, device, shape, strides (in elements), offset, over a shared Storage.
//
// A Tensor is a cheap handle (shared_ptr) to a TensorImpl. Views share the Storage and differ only in
// shape/strides/offset (PyTorch's model). The core tensor knows nothing about math: every computation is an op in
// ops/ that reaches a device kernel through the dispatch table (core/dispatch.h). The only data movement here is
// explicit host<->device copying of bytes (copy_bytes) used by item() and the host readers, all of which are named
// as host syncs.
//
// Autograd metadata lives on the impl: requires_grad, the accumulated .grad of a leaf, and for non-leaves the node
// that produced it (grad_fn, output_nr). See autograd/node.h for how gradients flow.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/shape.h"
#include "core/storage.h"

namespace gdn {

struct Node;  // autograd/node.h

struct TensorImpl {
  std::shared_ptr<Storage> storage;
  Shape shape;
  Strides strides;     // in elements
  int64_t offset = 0;  // in elements, from storage->data()
  DType dtype = DType::Float32;

  // autograd
  bool requires_grad = false;
  std::shared_ptr<TensorImpl> grad;  // leaves only: accumulated with +=
  std::shared_ptr<Node> grad_fn;     // non-leaves: the op that made this tensor
  int output_nr = 0;                 // which output of grad_fn this is
};

class Tensor {
 public:
  Tensor() = default;
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

  // ---- factories (memory from the device's allocator; values set by a kernel where needed) ----
  static Tensor empty(const Shape& shape, DType dtype = kFloat32, Device device = kCPU);
  // Host data copied in (CPU), converted to dtype. Used by tests, data loading and checkpoint loading.
  static Tensor from_vector(const std::vector<double>& values, const Shape& shape, DType dtype = kFloat32,
                            Device device = kCPU);
  static Tensor from_int64(const std::vector<int64_t>& values, const Shape& shape, Device device = kCPU);

  // ---- metadata ----
  bool defined() const { return impl_ != nullptr; }
  const Shape& shape() const { return impl().shape; }
  const Strides& strides() const { return impl().strides; }
  int64_t offset() const { return impl().offset; }
  int64_t dim() const { return static_cast<int64_t>(impl().shape.size()); }
  int64_t size(int64_t d) const { return impl().shape[normalize_dim(d, dim())]; }
  int64_t stride(int64_t d) const { return impl().strides[normalize_dim(d, dim())]; }
  int64_t numel() const { return shape_numel(impl().shape); }
  DType dtype() const { return impl().dtype; }
  Device device() const { return impl().storage ? impl().storage->device() : kCPU; }
  bool is_contiguous() const;
  // For a view whose last dimension has unit stride and whose leading dimensions collapse into one index of rows: the
  // stride between rows (a contiguous tensor: its last size; a column window of a wider contiguous [rows, S] tensor:
  // S). -1 for any other layout, or rows that overlap. checked_row_stride: the same, or an error naming `what`.
  int64_t row_stride() const;
  int64_t checked_row_stride(const char* what) const;
  const std::shared_ptr<Storage>& storage() const { return impl().storage; }
  std::string str() const;  // "float32[2, 3] cpu"

  // Pointer to element 0 of this view (device memory for device tensors). Checks the element type.
  template <typename T> T* data() const {
    GDN_CHECK(dtype_of<T>::value == dtype(), "data<{}>() on a {} tensor", dtype_of<T>::value, dtype());
    return static_cast<T*>(raw_data());
  }
  void* raw_data() const;

  // A view with explicit geometry over the same storage (no autograd; ops build differentiable views on it).
  Tensor as_strided(const Shape& shape, const Strides& strides, int64_t offset) const;
  // Same storage and geometry, cut off from the autograd graph.
  Tensor detach() const;

  // ---- host reads (each is a host sync on a device tensor) ----
  double item() const;                          // numel() == 1
  std::vector<double> to_double_vector() const;  // any dtype, any strides on CPU; contiguous on a device
  std::vector<int64_t> to_int64_vector() const;

  // ---- autograd ----
  bool requires_grad() const { return impl().requires_grad; }
  Tensor& set_requires_grad(bool on);
  bool is_leaf() const { return impl().grad_fn == nullptr; }
  Tensor grad() const { return Tensor(impl().grad); }
  void set_grad(const Tensor& g) { impl().grad = g.impl_; }
  const std::shared_ptr<Node>& grad_fn() const { return impl().grad_fn; }
  int output_nr() const { return impl().output_nr; }

  TensorImpl& impl() const {
    GDN_CHECK(impl_ != nullptr, "use of an undefined tensor");
    return *impl_;
  }
  const std::shared_ptr<TensorImpl>& impl_ptr() const { return impl_; }
  bool same(const Tensor& o) const { return impl_ == o.impl_; }

 private:
  std::shared_ptr<TensorImpl> impl_;
};

// Bytes between (or within) devices. Host<->host is memcpy; a device backend registers its own copier.
using CopyBytesFn = void (*)(void* dst, Device dst_device, const void* src, Device src_device, size_t nbytes);
void copy_bytes(void* dst, Device dst_device, const void* src, Device src_device, size_t nbytes);
void set_device_copier(DeviceType type, CopyBytesFn fn);

}  // namespace gdn
