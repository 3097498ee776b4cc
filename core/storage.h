// core/storage.h — a refcounted block of device memory.
//
// Storage owns bytes obtained from its device's Allocator and returns them on destruction (RAII). Tensors share a
// Storage through std::shared_ptr; views (reshape, slice, transpose) are new tensors over the same Storage.
#pragma once

#include <memory>

#include "core/allocator.h"

namespace gdn {

class Storage {
 public:
  Storage(size_t nbytes, Device device) : nbytes_(nbytes), device_(device), allocator_(get_allocator(device)) {
    data_ = allocator_->allocate(nbytes);
  }
  ~Storage() { allocator_->deallocate(data_, nbytes_); }
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  void* data() const { return data_; }
  size_t nbytes() const { return nbytes_; }
  Device device() const { return device_; }

 private:
  void* data_ = nullptr;
  size_t nbytes_ = 0;
  Device device_;
  Allocator* allocator_;
};

}  // namespace gdn
