// cuda/nccl_transport.h — the NCCL communicator of one rank (built only when nccl.h and libnccl were found).
//
// A thin layer over NCCL that knows nothing of tensors: train/distributed.cpp wraps it as the NCCL transport of
// gdn::Communicator. Every collective is queued on cuda::current_stream(), so the host does not wait for it and it
// can be captured into the training step's CUDA graph. Every NCCL error becomes a gdn::UserError carrying NCCL's own
// text (ncclGetErrorString and ncclGetLastError).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace gdn::cuda {

// The bytes of a fresh ncclUniqueId (rank 0 makes it and sends it to the others).
std::vector<uint8_t> nccl_unique_id();
std::string nccl_version();

class NcclComm {
 public:
  // Joins the communicator for (rank, world) on the current device (cuda::set_device first).
  NcclComm(const std::vector<uint8_t>& unique_id, int rank, int world);
  ~NcclComm();
  NcclComm(const NcclComm&) = delete;
  NcclComm& operator=(const NcclComm&) = delete;

  // In-place all-reduce of n device buffers as one NCCL group on current_stream(): the average over ranks
  // (average = true, ncclAvg) or the sum. fp64 picks double elements, else float.
  void all_reduce(void* const* buffers, const size_t* counts, size_t n, bool fp64, bool average);
  // The same all-reduce on the communicator's own stream, ordered after the work queued so far on current_stream():
  // the work queued there afterwards runs while it is in flight (a gradient bucket's all-reduce beside the rest of
  // the backward). join() makes current_stream() wait for every all-reduce started so far. Under CUDA graph capture
  // the pair forks the capture onto the communicator's stream and joins it back.
  void all_reduce_async(void* const* buffers, const size_t* counts, size_t n, bool fp64, bool average);
  void join();
  // Sums host doubles over the ranks through a small device buffer; waits for the result.
  void sum_host(double* values, size_t n);
  // Empty while the communicator is healthy; NCCL's error text once it reported an asynchronous error (for example
  // a peer that went away). Safe to call from another thread.
  std::string async_error();

 private:
  void group_all_reduce(void* const* buffers, const size_t* counts, size_t n, bool fp64, bool average, void* stream);

  void* comm_ = nullptr;      // ncclComm_t
  void* stream_ = nullptr;    // cudaStream_t of all_reduce_async
  void* forked_ = nullptr;    // cudaEvent_t: the point of current_stream() an async all-reduce waits for
  void* done_ = nullptr;      // cudaEvent_t: the end of the async all-reduces
  bool in_flight_ = false;    // an async all-reduce was started since the last join()
  double* scratch_ = nullptr;  // device buffer for sum_host
  size_t scratch_count_ = 0;
};

}  // namespace gdn::cuda
