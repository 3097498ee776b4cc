// cuda/graph.cpp — see graph.h.
#include "cuda/graph.h"

#include "cuda/caching_allocator.h"
#include "cuda/cuda_check.h"
#include "cuda/stream.h"

namespace gdn::cuda {

bool is_capturing() {
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  CUDA_CHECK(cudaStreamIsCapturing(current_stream(), &status));
  return status != cudaStreamCaptureStatusNone;
}

Graph::~Graph() {
  if (capturing_) {  // an exception left a capture open: end it so the stream is usable again
    cudaGraph_t g = nullptr;
    (void)cudaStreamEndCapture(current_stream(), &g);
    if (g != nullptr) (void)cudaGraphDestroy(g);
    (void)cudaGetLastError();
    caching_allocator().end_graph_pool();
  }
  if (exec_ != nullptr) (void)cudaGraphExecDestroy(exec_);
  if (graph_ != nullptr) (void)cudaGraphDestroy(graph_);
}

void Graph::begin_capture() {
  GDN_CHECK(!capturing_ && exec_ == nullptr, "CUDA graph: captured already");
  caching_allocator().begin_graph_pool();
  capturing_ = true;
  CUDA_CHECK(cudaStreamBeginCapture(current_stream(), cudaStreamCaptureModeRelaxed));
}

void Graph::end_capture() {
  GDN_CHECK(capturing_, "CUDA graph: end_capture() without begin_capture()");
  capturing_ = false;
  caching_allocator().end_graph_pool();
  CUDA_CHECK(cudaStreamEndCapture(current_stream(), &graph_));
  CUDA_CHECK(cudaGraphGetNodes(graph_, nullptr, &nodes_));
  CUDA_CHECK(cudaGraphInstantiate(&exec_, graph_, 0));
  CUDA_CHECK(cudaGraphUpload(exec_, current_stream()));
}

void Graph::replay() {
  GDN_CHECK(exec_ != nullptr, "CUDA graph: replay() before a capture");
  CUDA_CHECK(cudaGraphLaunch(exec_, current_stream()));
}

}  // namespace gdn::cuda
