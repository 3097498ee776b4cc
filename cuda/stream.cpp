// cuda/stream.cpp — see stream.h.
#include "cuda/stream.h"

#include <mutex>
#include <vector>

#include "cuda/cuda_check.h"

namespace gdn::cuda {

namespace {
int g_device = 0;
std::mutex g_mu;
std::vector<cudaStream_t> g_streams;  // by device index, created on demand
}  // namespace

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    (void)cudaGetLastError();  // no driver / no device: clear the sticky-free error and report none
    return 0;
  }
  return n;
}

void set_device(int index) {
  const int n = device_count();
  GDN_USER_CHECK(index >= 0 && index < n, "device cuda:{} does not exist: {} CUDA device{} visible", index, n,
                 n == 1 ? " is" : "s are");
  CUDA_CHECK(cudaSetDevice(index));
  g_device = index;
}

int current_device() { return g_device; }

cudaStream_t current_stream() {
  std::lock_guard<std::mutex> lock(g_mu);
  if (g_streams.size() <= static_cast<size_t>(g_device)) g_streams.resize(g_device + 1, nullptr);
  cudaStream_t& s = g_streams[g_device];
  if (s == nullptr) CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  return s;
}

void synchronize() { CUDA_CHECK(cudaStreamSynchronize(current_stream())); }

EventTimer::EventTimer() {
  CUDA_CHECK(cudaEventCreate(&start_));
  CUDA_CHECK(cudaEventCreate(&stop_));
}

EventTimer::~EventTimer() {
  (void)cudaEventDestroy(start_);
  (void)cudaEventDestroy(stop_);
}

void EventTimer::start() { CUDA_CHECK(cudaEventRecord(start_, current_stream())); }

double EventTimer::stop_ms() {
  CUDA_CHECK(cudaEventRecord(stop_, current_stream()));
  CUDA_CHECK(cudaEventSynchronize(stop_));
  float ms = 0;
  CUDA_CHECK(cudaEventElapsedTime(&ms, start_, stop_));
  return ms;
}

EventKernelTimer::~EventKernelTimer() {
  for (cudaEvent_t e : pool_) (void)cudaEventDestroy(e);
}

cudaEvent_t EventKernelTimer::event(size_t i) {
  while (pool_.size() <= i) {
    cudaEvent_t e;
    CUDA_CHECK(cudaEventCreate(&e));
    pool_.push_back(e);
  }
  return pool_[i];
}

int64_t EventKernelTimer::begin(const char* name, Device) {
  const size_t call = names_.size();
  names_.push_back(name);
  CUDA_CHECK(cudaEventRecord(event(2 * call), current_stream()));
  return static_cast<int64_t>(call);
}

void EventKernelTimer::end(int64_t token) {
  CUDA_CHECK(cudaEventRecord(event(2 * static_cast<size_t>(token) + 1), current_stream()));
}

std::map<std::string, std::pair<int64_t, double>> EventKernelTimer::totals() {
  synchronize();
  std::map<std::string, std::pair<int64_t, double>> out;
  for (size_t i = 0; i < names_.size(); ++i) {
    float ms = 0;
    CUDA_CHECK(cudaEventElapsedTime(&ms, pool_[2 * i], pool_[2 * i + 1]));
    auto& [calls, total] = out[names_[i]];
    calls++;
    total += ms;
  }
  names_.clear();
  return out;
}

}  // namespace gdn::cuda
