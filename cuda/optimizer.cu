// cuda/optimizer.cu — CUDA twins of ops/cpu/optimizer_cpu.cpp: the squared global gradient norm and the AdamW step,
// each ONE launch over a whole list of tensors (llm.c and PyTorch's "multi-tensor apply" idea).
//
// The list travels to the device as a small table (one row per tensor: its first element's index in the
// concatenation of all tensors, its size and its data pointers), copied asynchronously through the pinned staging
// of the copier, so nothing waits. Every tensor starts at a multiple of kVec = 4 in the concatenation, and a thread
// takes kVec elements of one tensor at a time (float4 where aligned); each thread finds its first tensor by binary
// search over the rows' starts (sum_squares' grid-stride threads then advance through the table, their indices only
// grow; adamw_step has one step per thread), so any mix of tiny and huge tensors costs one launch.
//   sum_squares: pass 1, a fixed number of blocks (a function of the total size only) each add their grid-stride share
//   of x^2 in double and reduce it with block_sum; pass 2, one block adds the partials in block order. The order of
//   every addition is fixed, so the result is the same bits every run (it differs from the CPU's order by rounding).
//   adamw_step: the formula of the CPU twin, element by element in the parameter's type, with the clip factor
//   c = max_norm / (norm + 1e-6) read from the device-side squared norm (1 when it is undefined or below max_norm);
//   a non-finite norm makes every thread return at once, so nothing changes. The learning rate and step count come
//   from the device-side schedule (lr, step) when one is given: a captured CUDA graph then replays with new values.
// Inside a graph capture the table upload becomes a constant of the graph (cuda/graph.h), which is right: the
// captured launch reads the same tensors (addresses) at every replay.
#include <cuda_runtime.h>

#include <cmath>
#include <cstring>
#include <type_traits>
#include <vector>

#include "cuda/cuda_kernels.h"
#include "cuda/launch.h"

namespace gdn::cuda {

namespace {

constexpr int kPartials = 1024;  // at most this many blocks in sum_squares' first pass

// One row of the tensor table (int64 fields so the table is an int64 tensor on the device).
struct TensorRow {
  int64_t begin;  // index of the tensor's first element in the concatenation
  int64_t numel;
  int64_t p, m, v, g;  // device pointers (m, v, g unused by sum_squares)
};
constexpr size_t kRowFields = 6;
// Elements per thread step of both kernels: every tensor begins at a multiple of kVec in the concatenation (the
// gaps are padding that no thread touches), so the kVec elements of a step belong to one tensor.
constexpr int kVec = 4;
inline int64_t padded(int64_t n) { return (n + kVec - 1) / kVec * kVec; }
static_assert(sizeof(TensorRow) == kRowFields * sizeof(int64_t), "TensorRow is six int64");

// Uploads the rows (plus a sentinel row whose begin is the total) as an int64 tensor on `device`.
Tensor upload_table(std::vector<TensorRow>& rows, int64_t total, Device device) {
  rows.push_back({total, 0, 0, 0, 0, 0});
  std::vector<int64_t> flat(rows.size() * kRowFields);
  std::memcpy(flat.data(), rows.data(), flat.size() * sizeof(int64_t));
  return Tensor::from_int64(flat, {static_cast<int64_t>(flat.size())}, device);
}

// The row of element i, starting the search at row k (rows are visited in increasing order of i).
__device__ inline int advance_row(const TensorRow* rows, int k, int64_t i) {
  while (i >= rows[k + 1].begin) ++k;
  return k;
}

// Each thread step squares the kVec elements starting at i (float4 loads for aligned float32), in element order.
template <typename T>
__global__ void sum_squares_partials_kernel(double* partials, const TensorRow* rows, int nrows, int64_t total) {
  pdl_enter();
  __shared__ double scratch[32];
  double s = 0;
  const int64_t first = (blockIdx.x * int64_t(blockDim.x) + threadIdx.x) * kVec;
  const int64_t stride = int64_t(blockDim.x) * gridDim.x * kVec;
  int k = first < total ? find_row(rows, nrows, first) : 0;
  for (int64_t i = first; i < total; i += stride) {
    k = advance_row(rows, k, i);
    const TensorRow& r = rows[k];
    const int64_t j = i - r.begin;
    const T* x = reinterpret_cast<const T*>(r.p);
    bool done = false;
    if constexpr (std::is_same_v<T, float>) {
      if (j + kVec <= r.numel && (r.p & 15) == 0) {
        const float4 v = *reinterpret_cast<const float4*>(x + j);
        add_dot4(s, v, v);
        done = true;
      }
    }
    if (!done)
      for (int64_t e = j; e < j + kVec && e < r.numel; ++e) s += static_cast<double>(x[e]) * static_cast<double>(x[e]);
  }
  s = block_sum(s, scratch);
  if (threadIdx.x == 0) partials[blockIdx.x] = s;
}

__global__ void sum_partials_kernel(double* out, const double* partials, int n) {
  pdl_enter();
  __shared__ double scratch[32];
  double s = 0;
  for (int i = threadIdx.x; i < n; i += blockDim.x) s += partials[i];
  s = block_sum(s, scratch);
  if (threadIdx.x == 0) out[0] = s;
}

void sum_squares(const Tensor& out, const std::vector<Tensor>& xs) {
  GDN_CHECK(out.dtype() == kFloat64 && out.numel() == 1 && out.device().is_cuda(),
            "CUDA sum_squares: out must be one float64 on the device");
  if (xs.empty()) {
    CUDA_CHECK(cudaMemsetAsync(out.data<double>(), 0, sizeof(double), current_stream()));
    return;
  }
  const DType dt = xs[0].dtype();
  std::vector<TensorRow> rows;
  int64_t total = 0;
  for (const Tensor& x : xs) {
    GDN_CHECK(x.is_contiguous() && x.dtype() == dt && x.device() == out.device(),
              "CUDA sum_squares: contiguous tensors of one dtype on {}", out.device());
    if (x.numel() == 0) continue;
    rows.push_back({total, x.numel(), reinterpret_cast<int64_t>(x.raw_data()), 0, 0, 0});
    total += padded(x.numel());
  }
  const int nrows = static_cast<int>(rows.size());
  Tensor table = upload_table(rows, total, out.device());
  const unsigned blocks = grid_for(total / kVec, kThreads, kPartials);
  Tensor partials = Tensor::empty({blocks}, kFloat64, out.device());
  const auto* tr = reinterpret_cast<const TensorRow*>(table.data<int64_t>());
  dispatch_float(dt, "CUDA sum_squares", [&](auto tag) {
    using T = decltype(tag);
    launch(sum_squares_partials_kernel<T>, blocks, kThreads, 0, partials.data<double>(), tr, nrows, total);
  });
  launch(sum_partials_kernel, 1, kPartials, 0, out.data<double>(), partials.data<double>(), static_cast<int>(blocks));
}

struct AdamWConstants {
  double lr, step, beta1, beta2, eps, weight_decay, max_norm;
};

// lr and step come from c, or from schedule (device memory: (lr, step)) when it is given. Each thread updates
// kVec consecutive elements of the concatenation, in which every tensor begins at a multiple of kVec
// (adamw_step pads the gaps), so the elements of one thread belong to one tensor; float32 runs whose four pointers
// are 16-byte aligned are loaded and stored as float4. Thread 0 of each block works out the step's constants once
// into shared memory (clip < 0: a non-finite norm, the step is skipped) and finds the block's first row by binary
// search; the threads advance from that row. The arithmetic of each element is the CPU twin's, in T.
template <typename T> struct AdamWStep {
  T b1, b2, scale, decay, step_size, inv_sqrt_bc2, eps;
  __device__ void operator()(T& w, T& m, T& v, T g) const {
    const T gi = g * scale;
    m = b1 * m + (T(1) - b1) * gi;
    v = b2 * v + (T(1) - b2) * gi * gi;
    w = w * decay - step_size * m / (sqrt(v) * inv_sqrt_bc2 + eps);
  }
};

template <typename T>
__global__ void adamw_kernel(const TensorRow* rows, int nrows, int64_t total, const double* grad_sq_norm,
                             const double* schedule, AdamWConstants c) {
  pdl_enter();
  __shared__ double konst[4];  // clip, decay, step size, 1 / sqrt(bias correction 2)
  __shared__ int first_row;
  const int64_t block_first = blockIdx.x * int64_t(blockDim.x) * kVec;
  if (threadIdx.x == 0) {
    double clip = 1.0;
    if (grad_sq_norm != nullptr) {
      const double norm = sqrt(grad_sq_norm[0]);
      if (!isfinite(norm)) clip = -1.0;
      else if (c.max_norm > 0 && norm > c.max_norm) clip = c.max_norm / (norm + 1e-6);
    }
    const double lr = schedule != nullptr ? schedule[0] : c.lr, step = schedule != nullptr ? schedule[1] : c.step;
    konst[0] = clip;
    konst[1] = 1.0 - lr * c.weight_decay;
    konst[2] = lr / (1.0 - pow(c.beta1, step));
    konst[3] = 1.0 / sqrt(1.0 - pow(c.beta2, step));
    first_row = block_first < total ? find_row(rows, nrows, block_first) : 0;
  }
  __syncthreads();
  if (konst[0] < 0) return;  // the whole step is skipped
  const int64_t i = block_first + int64_t(threadIdx.x) * kVec;
  if (i >= total) return;
  const AdamWStep<T> op{static_cast<T>(c.beta1),    static_cast<T>(c.beta2),    static_cast<T>(konst[0]),
                        static_cast<T>(konst[1]),   static_cast<T>(konst[2]),   static_cast<T>(konst[3]),
                        static_cast<T>(c.eps)};
  const TensorRow& r = rows[advance_row(rows, first_row, i)];
  const int64_t j = i - r.begin;
  T* w = reinterpret_cast<T*>(r.p);
  T* mp = reinterpret_cast<T*>(r.m);
  T* vp = reinterpret_cast<T*>(r.v);
  const T* gp = reinterpret_cast<const T*>(r.g);
  const int64_t numel = r.numel;
  if constexpr (std::is_same_v<T, float>) {
    if (j + kVec <= numel && ((r.p | r.m | r.v | r.g) & 15) == 0) {
      float4 w4 = *reinterpret_cast<float4*>(w + j), m4 = *reinterpret_cast<float4*>(mp + j);
      float4 v4 = *reinterpret_cast<float4*>(vp + j);
      const float4 g4 = *reinterpret_cast<const float4*>(gp + j);
      op(w4.x, m4.x, v4.x, g4.x);
      op(w4.y, m4.y, v4.y, g4.y);
      op(w4.z, m4.z, v4.z, g4.z);
      op(w4.w, m4.w, v4.w, g4.w);
      *reinterpret_cast<float4*>(w + j) = w4;
      *reinterpret_cast<float4*>(mp + j) = m4;
      *reinterpret_cast<float4*>(vp + j) = v4;
      return;
    }
  }
  for (int64_t e = j; e < j + kVec && e < numel; ++e) op(w[e], mp[e], vp[e], gp[e]);
}

void adamw_step(const std::vector<Tensor>& params, const std::vector<Tensor>& ms, const std::vector<Tensor>& vs,
                const std::vector<Tensor>& grads, const Tensor& grad_sq_norm, const Tensor& schedule,
                const AdamWParams& p) {
  GDN_CHECK(ms.size() == params.size() && vs.size() == params.size() && grads.size() == params.size(),
            "CUDA adamw_step: {} params, {} m, {} v, {} grads", params.size(), ms.size(), vs.size(), grads.size());
  if (params.empty()) return;
  const DType dt = params[0].dtype();
  const Device device = params[0].device();
  std::vector<TensorRow> rows;
  int64_t total = 0;
  for (size_t k = 0; k < params.size(); ++k) {
    for (const Tensor* t : {&params[k], &ms[k], &vs[k], &grads[k]}) {
      GDN_CHECK(t->is_contiguous() && t->dtype() == dt && t->device() == device && t->numel() == params[k].numel(),
                "CUDA adamw_step: tensor {} must be contiguous, {} on {} with {} elements", k, dt, device,
                params[k].numel());
    }
    if (params[k].numel() == 0) continue;
    rows.push_back({total, params[k].numel(), reinterpret_cast<int64_t>(params[k].raw_data()),
                    reinterpret_cast<int64_t>(ms[k].raw_data()), reinterpret_cast<int64_t>(vs[k].raw_data()),
                    reinterpret_cast<int64_t>(grads[k].raw_data())});
    total += padded(params[k].numel());
  }
  if (total == 0) return;
  GDN_CHECK(total <= ((int64_t{1} << 31) - 1) * kThreads * kVec,
            "CUDA adamw_step: {} elements, more than one grid covers", total);
  const double* norm = nullptr;
  if (grad_sq_norm.defined()) {
    GDN_CHECK(grad_sq_norm.dtype() == kFloat64 && grad_sq_norm.numel() == 1 && grad_sq_norm.device() == device,
              "CUDA adamw_step: grad_sq_norm must be one float64 on {}", device);
    norm = grad_sq_norm.data<double>();
  }
  const double* sched = nullptr;
  if (schedule.defined()) {
    GDN_CHECK(schedule.dtype() == kFloat64 && schedule.numel() == 2 && schedule.device() == device,
              "CUDA adamw_step: schedule must be two float64 (lr, step) on {}", device);
    sched = schedule.data<double>();
  }
  const AdamWConstants c{p.lr, static_cast<double>(p.step), p.beta1, p.beta2, p.eps, p.weight_decay, p.max_norm};
  const int nrows = static_cast<int>(rows.size());
  Tensor table = upload_table(rows, total, device);
  const auto* tr = reinterpret_cast<const TensorRow*>(table.data<int64_t>());
  dispatch_float(dt, "CUDA adamw_step", [&](auto tag) {
    using T = decltype(tag);
    const unsigned blocks = grid_for((total + kVec - 1) / kVec, kThreads, (int64_t{1} << 31) - 1);
    launch(adamw_kernel<T>, blocks, kThreads, 0, tr, nrows, total, norm, sched, c);
  });
}

}  // namespace

void register_optimizer_kernels(KernelTable& t) {
  t.sum_squares = sum_squares;
  t.adamw_step = adamw_step;
}

}  // namespace gdn::cuda
