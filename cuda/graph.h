// cuda/graph.h — one CUDA graph of the work the host issues on current_stream(), replayed as a single launch.
//
// begin_capture() starts stream capture on current_stream() (cudaStreamCaptureModeRelaxed: the caching allocator may
// still call cudaMalloc while the pool grows) and switches the caching allocator to its graph pool
// (cuda/caching_allocator.h), so every address the captured kernels touch stays reserved for them. end_capture()
// ends the capture and instantiates the graph; replay() launches it on current_stream(). Nothing runs while
// capturing: the captured calls only record. Within a capture a host-to-device copy becomes a constant of the graph
// (its bytes are kept in a pinned buffer that every replay reads, cuda/cuda_backend.cpp), and a device-to-host copy
// is an error, since the host cannot read what has not run. What varies from replay to replay (token ids, the
// learning rate) must be written into device buffers the graph reads, before replay(), on the same stream.
#pragma once

#include <cuda_runtime_api.h>

namespace gdn::cuda {

bool is_capturing();  // whether current_stream() is being captured

class Graph {
 public:
  Graph() = default;
  ~Graph();
  Graph(const Graph&) = delete;
  Graph& operator=(const Graph&) = delete;

  void begin_capture();
  void end_capture();
  void replay();
  bool ready() const { return exec_ != nullptr; }
  size_t nodes() const { return nodes_; }  // kernels, copies and memsets in the graph

 private:
  cudaGraph_t graph_ = nullptr;
  cudaGraphExec_t exec_ = nullptr;
  size_t nodes_ = 0;
  bool capturing_ = false;
};

}  // namespace gdn::cuda
