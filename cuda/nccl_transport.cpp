// cuda/nccl_transport.cpp — see nccl_transport.h.
#include "cuda/nccl_transport.h"

#include <nccl.h>

#include <cstring>

#include "cuda/cuda_check.h"
#include "cuda/stream.h"

namespace gdn::cuda {

namespace {

ncclComm_t as_comm(void* c) { return static_cast<ncclComm_t>(c); }

void nccl_check(ncclResult_t r, const char* what, ncclComm_t comm = nullptr) {
  if (r == ncclSuccess || r == ncclInProgress) return;
  const char* last = ncclGetLastError(comm);
  throw UserError(fmt::format("NCCL {} failed: {}{}{}", what, ncclGetErrorString(r), last && *last ? ": " : "",
                              last ? last : ""));
}

}  // namespace

std::vector<uint8_t> nccl_unique_id() {
  ncclUniqueId id;
  nccl_check(ncclGetUniqueId(&id), "ncclGetUniqueId");
  std::vector<uint8_t> bytes(sizeof(id.internal));
  std::memcpy(bytes.data(), id.internal, bytes.size());
  return bytes;
}

std::string nccl_version() {
  int v = 0;
  (void)ncclGetVersion(&v);
  return fmt::format("{}.{}.{}", v / 10000, (v / 100) % 100, v % 100);
}

NcclComm::NcclComm(const std::vector<uint8_t>& unique_id, int rank, int world) {
  ncclUniqueId id;
  GDN_CHECK(unique_id.size() == sizeof(id.internal), "NCCL unique id of {} bytes, expected {}", unique_id.size(),
            sizeof(id.internal));
  std::memcpy(id.internal, unique_id.data(), sizeof(id.internal));
  ncclComm_t comm = nullptr;
  nccl_check(ncclCommInitRank(&comm, world, id, rank), "ncclCommInitRank");
  comm_ = comm;
  cudaStream_t stream = nullptr;
  CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  stream_ = stream;
  cudaEvent_t forked = nullptr, done = nullptr;
  CUDA_CHECK(cudaEventCreateWithFlags(&forked, cudaEventDisableTiming));
  CUDA_CHECK(cudaEventCreateWithFlags(&done, cudaEventDisableTiming));
  forked_ = forked;
  done_ = done;
}

NcclComm::~NcclComm() {
  if (scratch_) (void)cudaFree(scratch_);
  if (comm_) (void)ncclCommDestroy(as_comm(comm_));
  if (forked_) (void)cudaEventDestroy(static_cast<cudaEvent_t>(forked_));
  if (done_) (void)cudaEventDestroy(static_cast<cudaEvent_t>(done_));
  if (stream_) (void)cudaStreamDestroy(static_cast<cudaStream_t>(stream_));
}

void NcclComm::group_all_reduce(void* const* buffers, const size_t* counts, size_t n, bool fp64, bool average,
                                void* stream) {
  ncclComm_t comm = as_comm(comm_);
  nccl_check(ncclGroupStart(), "ncclGroupStart", comm);
  for (size_t i = 0; i < n; ++i)
    nccl_check(ncclAllReduce(buffers[i], buffers[i], counts[i], fp64 ? ncclFloat64 : ncclFloat32,
                             average ? ncclAvg : ncclSum, comm, static_cast<cudaStream_t>(stream)),
               "ncclAllReduce", comm);
  nccl_check(ncclGroupEnd(), "ncclGroupEnd", comm);
}

void NcclComm::all_reduce(void* const* buffers, const size_t* counts, size_t n, bool fp64, bool average) {
  group_all_reduce(buffers, counts, n, fp64, average, current_stream());
}

void NcclComm::all_reduce_async(void* const* buffers, const size_t* counts, size_t n, bool fp64, bool average) {
  const auto stream = static_cast<cudaStream_t>(stream_);
  CUDA_CHECK(cudaEventRecord(static_cast<cudaEvent_t>(forked_), current_stream()));
  CUDA_CHECK(cudaStreamWaitEvent(stream, static_cast<cudaEvent_t>(forked_), 0));
  group_all_reduce(buffers, counts, n, fp64, average, stream);
  in_flight_ = true;
}

void NcclComm::join() {
  if (!in_flight_) return;
  CUDA_CHECK(cudaEventRecord(static_cast<cudaEvent_t>(done_), static_cast<cudaStream_t>(stream_)));
  CUDA_CHECK(cudaStreamWaitEvent(current_stream(), static_cast<cudaEvent_t>(done_), 0));
  in_flight_ = false;
}

void NcclComm::sum_host(double* values, size_t n) {
  if (n > scratch_count_) {
    if (scratch_) CUDA_CHECK(cudaFree(scratch_));
    CUDA_CHECK(cudaMalloc(&scratch_, n * sizeof(double)));
    scratch_count_ = n;
  }
  CUDA_CHECK(cudaMemcpyAsync(scratch_, values, n * sizeof(double), cudaMemcpyHostToDevice, current_stream()));
  void* buf = scratch_;
  all_reduce(&buf, &n, 1, /*fp64=*/true, /*average=*/false);
  CUDA_CHECK(cudaMemcpyAsync(values, scratch_, n * sizeof(double), cudaMemcpyDeviceToHost, current_stream()));
  synchronize();
}

std::string NcclComm::async_error() {
  ncclResult_t state = ncclSuccess;
  if (ncclCommGetAsyncError(as_comm(comm_), &state) != ncclSuccess || state == ncclSuccess ||
      state == ncclInProgress)
    return {};
  const char* last = ncclGetLastError(as_comm(comm_));
  return fmt::format("{}{}{}", ncclGetErrorString(state), last && *last ? ": " : "", last ? last : "");
}

}  // namespace gdn::cuda
