// cuda/stream.h — the device and the stream that every CUDA call of this process uses.
//
// gdn.cpp drives one GPU per process (several GPUs = several processes, like torchrun). set_device(N) picks it once,
// checked against the visible device count. All work on it is issued to one non-default stream, current_stream():
// every kernel launch, every cuBLAS call (the handle is bound to it) and every host<->device copy. One stream means
// the order of the host's calls is the order on the device, so the caching allocator may hand a block freed by the
// host to the next kernel without waiting (stream-ordered reuse), and the host never waits except where it reads
// device memory (a D2H copy: item(), to_device(.., kCPU)). A non-default stream is also what CUDA graph capture needs.
// The one other stream: data-parallel training's NCCL all-reduces of gradient buckets (cuda/nccl_transport.h
// all_reduce_async) run on the communicator's stream, forked from this one and joined back before anything reads
// the gradients; the buffers they touch are parameter gradients and the loss, which stay allocated past the join.
#pragma once

#include <cuda_runtime_api.h>

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "core/dispatch.h"

namespace gdn::cuda {

int device_count();                // visible devices (0 when there is no driver)
void set_device(int index);        // picks the process's device; a UserError when index >= device_count()
int current_device();              // the index set_device() chose (0 by default)
cudaStream_t current_stream();     // created on first use for the current device; never the legacy default stream
void synchronize();                // waits for everything queued on current_stream()

// Milliseconds of device time between start() and stop_ms() on current_stream(), measured with CUDA events;
// stop_ms() waits for the work queued in between.
class EventTimer {
 public:
  EventTimer();
  ~EventTimer();
  EventTimer(const EventTimer&) = delete;
  EventTimer& operator=(const EventTimer&) = delete;
  void start();
  double stop_ms();

 private:
  cudaEvent_t start_ = nullptr, stop_ = nullptr;
};

// A KernelTimer (core/dispatch.h) that records a CUDA event pair around every kernel call on current_stream(); totals()
// waits for the stream once and returns, per kernel name, the number of calls and their summed device milliseconds.
// Events are pooled, so a profile of many steps allocates only while it grows.
class EventKernelTimer final : public KernelTimer {
 public:
  ~EventKernelTimer() override;
  int64_t begin(const char* name, Device device) override;
  void end(int64_t token) override;
  std::map<std::string, std::pair<int64_t, double>> totals();  // name -> (calls, ms); clears the recorded calls

 private:
  cudaEvent_t event(size_t i);
  std::vector<cudaEvent_t> pool_;
  std::vector<const char*> names_;  // per call; call i uses events 2i and 2i+1
};

}  // namespace gdn::cuda
