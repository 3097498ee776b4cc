// cuda/caching_allocator.h — the CUDA device allocator: a caching allocator in the spirit of PyTorch's.
//
// cudaMalloc and cudaFree synchronise the device and cost tens of microseconds, so freed blocks are kept in
// per-size free lists and handed out again for the next request of the same rounded size (sizes round up to 512 B
// below 1 MiB and to 2 MiB above). After the first training step the steady state allocates nothing from the driver,
// which is also what a captured CUDA graph needs. empty_cache() returns the cached blocks to the driver.
// Reuse without waiting is safe because all work runs on the one stream of cuda/stream.h: a block freed by the host
// after queuing the kernels that read it is only written by kernels queued later on that same stream (the NCCL
// stream of data-parallel gradient buckets only touches gradients and the loss, which are freed after it has joined
// the training stream back: cuda/stream.h). Blocks are cached per (device index, rounded size): a block is only
// handed out again on the device it was allocated on (the current device, cuda::current_device(), when it was
// allocated).
// CUDA graphs (cuda/graph.h): between begin_graph_pool() and end_graph_pool() every allocation comes from the graph
// pool and every freed block goes to it; a block of the pool is never handed to an allocation outside a capture.
// The addresses a captured graph writes therefore stay reserved for it, while blocks freed within the capture are
// reused within it (the replay runs the same calls in the same order). The pool lives as long as the process.
// Registered for DeviceType::CUDA by register_cuda_backend() (cuda/cuda_backend.cpp); caching_allocator() is it.
#pragma once

#include <map>
#include <mutex>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "core/allocator.h"

namespace gdn::cuda {

class CachingAllocator final : public Allocator {
 public:
  void* allocate(size_t nbytes) override;
  void deallocate(void* ptr, size_t nbytes) override;
  Device device() const override;
  AllocatorStats stats() const override;
  void reset_peak() override;
  void empty_cache();
  void begin_graph_pool();  // from here until end_graph_pool(), allocations come from the graph pool
  void end_graph_pool();

  static size_t round_size(size_t nbytes);

 private:
  void release_cached();  // cudaFree of every cached block (mu_ held)

  mutable std::mutex mu_;
  std::map<std::pair<int, size_t>, std::vector<void*>> free_blocks_;  // (device, rounded size) -> cached blocks
  std::unordered_map<void*, int> block_device_;                       // every live or cached block -> its device
  std::map<std::pair<int, size_t>, std::vector<void*>> graph_free_;   // the graph pool's free blocks
  std::unordered_set<void*> graph_blocks_;                            // every block of the graph pool
  bool capturing_ = false;
  AllocatorStats stats_;
};

CachingAllocator& caching_allocator();  // the process's CUDA allocator

}  // namespace gdn::cuda
