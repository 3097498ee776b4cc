// train/device.h — turning a --device string into a ready Device; waiting for it and timing work on it.
//
// "cpu" needs nothing. "cuda[:N]" registers the CUDA backend (allocator, copier, kernels) when this build has one,
// and is a clear user error otherwise (no backend, no visible device, an index other than 0: the backend only runs on
// the current device). A malformed name ("cuda:x", an index that does not fit an int) is a user error too. This is the only place above the dispatch layer that knows whether CUDA was
// compiled in.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/device.h"

namespace gdn {

Device init_device(const std::string& name);

// CUDA devices visible to this process (0 without the CUDA backend or a driver). Creates no context.
int visible_cuda_devices();
bool cuda_compiled_in();

// Waits until the work queued on `device` has finished (nothing to wait for on the CPU).
void synchronize(Device device);

// Times work queued on a device: CUDA events on the device's stream, the steady clock on the CPU. stop_ms() returns
// the milliseconds since start() once the work queued in between has finished.
class DeviceTimer {
 public:
  explicit DeviceTimer(Device device);
  ~DeviceTimer();
  DeviceTimer(const DeviceTimer&) = delete;
  DeviceTimer& operator=(const DeviceTimer&) = delete;
  void start();
  double stop_ms();

 private:
  struct Events;  // CUDA events, only in a CUDA build
  Device device_;
  std::unique_ptr<Events> events_;
  std::chrono::steady_clock::time_point t0_;
};

// Device time per kernel while it exists (bench-train --profile): it installs itself as the dispatch table's kernel
// timer; on the GPU every call is bracketed by CUDA events on the device's stream, on the CPU (whose kernels run
// synchronously) by the steady clock. rows() returns the totals so far, largest first, and starts over.
class KernelProfile {
 public:
  struct Row {
    std::string name;
    int64_t calls;
    double ms;
  };
  explicit KernelProfile(Device device);
  ~KernelProfile();
  KernelProfile(const KernelProfile&) = delete;
  KernelProfile& operator=(const KernelProfile&) = delete;
  std::vector<Row> rows();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// A CUDA graph of the work queued on a GPU between begin_capture() and end_capture() (cuda/graph.h: the captured
// calls only record, replay() runs them all as one launch). Only on a GPU: constructing one for the CPU is an error.
class CapturedWork {
 public:
  explicit CapturedWork(Device device);
  ~CapturedWork();
  CapturedWork(const CapturedWork&) = delete;
  CapturedWork& operator=(const CapturedWork&) = delete;
  void begin_capture();
  void end_capture();
  void replay();
  bool ready() const;
  size_t nodes() const;  // kernels, copies and memsets in the graph

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace gdn
