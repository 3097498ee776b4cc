// cuda/caching_allocator.cpp — see caching_allocator.h.
#include "cuda/caching_allocator.h"

#include "cuda/cuda_check.h"
#include "cuda/stream.h"

namespace gdn::cuda {

Device CachingAllocator::device() const { return Device{DeviceType::CUDA, current_device()}; }

size_t CachingAllocator::round_size(size_t nbytes) {
  constexpr size_t kSmall = 512, kLarge = 2u << 20, kSmallLimit = 1u << 20;
  size_t unit = nbytes < kSmallLimit ? kSmall : kLarge;
  return (nbytes + unit - 1) / unit * unit;
}

void* CachingAllocator::allocate(size_t nbytes) {
  if (nbytes == 0) return nullptr;
  const size_t size = round_size(nbytes);
  const int dev = current_device();
  std::lock_guard<std::mutex> lock(mu_);
  void* p = nullptr;
  auto& lists = capturing_ ? graph_free_ : free_blocks_;
  auto it = lists.find({dev, size});
  if (it != lists.end() && !it->second.empty()) {
    p = it->second.back();
    it->second.pop_back();
    stats_.cached_bytes -= size;
  } else {
    cudaError_t err = cudaMalloc(&p, size);
    if (err == cudaErrorMemoryAllocation) {  // give the cache back to the driver and try once more
      (void)cudaGetLastError();
      release_cached();
      err = cudaMalloc(&p, size);
    }
    GDN_CHECK(err == cudaSuccess, "cudaMalloc of {} bytes failed: {}", size, cudaGetErrorString(err));
    block_device_[p] = dev;
    if (capturing_) graph_blocks_.insert(p);
  }
  stats_.current_bytes += size;
  stats_.peak_bytes = std::max(stats_.peak_bytes, stats_.current_bytes);
  stats_.num_allocs++;
  return p;
}

void CachingAllocator::deallocate(void* ptr, size_t nbytes) {
  if (ptr == nullptr) return;
  const size_t size = round_size(nbytes);
  std::lock_guard<std::mutex> lock(mu_);
  auto owner = block_device_.find(ptr);
  GDN_CHECK(owner != block_device_.end(), "CUDA allocator: {} bytes at {} were not allocated here", nbytes, ptr);
  if (capturing_ || graph_blocks_.count(ptr)) {
    graph_blocks_.insert(ptr);  // a block freed inside a capture may still be read by the graph: it joins the pool
    graph_free_[{owner->second, size}].push_back(ptr);
  } else {
    free_blocks_[{owner->second, size}].push_back(ptr);
  }
  stats_.current_bytes -= size;
  stats_.cached_bytes += size;
}

AllocatorStats CachingAllocator::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

void CachingAllocator::reset_peak() {
  std::lock_guard<std::mutex> lock(mu_);
  stats_.peak_bytes = stats_.current_bytes;
}

void CachingAllocator::begin_graph_pool() {
  std::lock_guard<std::mutex> lock(mu_);
  GDN_CHECK(!capturing_, "CUDA allocator: a graph capture is already under way");
  capturing_ = true;
}

void CachingAllocator::end_graph_pool() {
  std::lock_guard<std::mutex> lock(mu_);
  capturing_ = false;
}

CachingAllocator& caching_allocator() {
  static CachingAllocator allocator;
  return allocator;
}

void CachingAllocator::empty_cache() {
  std::lock_guard<std::mutex> lock(mu_);
  release_cached();
}

void CachingAllocator::release_cached() {
  for (auto& [key, blocks] : free_blocks_)
    for (void* b : blocks) {
      CUDA_CHECK(cudaFree(b));  // a pointer of any device (unified addressing)
      block_device_.erase(b);
      stats_.cached_bytes -= key.second;
    }
  free_blocks_.clear();  // the graph pool stays: a captured graph may still use its blocks
}

}  // namespace gdn::cuda
