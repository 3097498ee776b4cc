// cuda/elementwise.cu — first CUDA kernels: fill, scalar and unary ops on contiguous float32/float64 tensors.
//
// One thread per element, grid-stride loop. The math mirrors ops/cpu/elementwise_cpu.cpp (the CPU twin that tests
// treat as the truth). Strided and broadcasting variants come with the CUDA backend issue; until then a strided
// tensor is a loud error, never a silent wrong answer.
#include <cuda_runtime.h>

#include "cuda/cuda_check.h"
#include "cuda/cuda_kernels.h"

namespace gdn::cuda {

namespace {

constexpr int kThreads = 256;

int blocks_for(int64_t n) { return static_cast<int>(std::min<int64_t>((n + kThreads - 1) / kThreads, 65535)); }

template <typename T> __device__ T sigmoid_of(T x) {
  return x >= T(0) ? T(1) / (T(1) + exp(-x)) : exp(x) / (T(1) + exp(x));
}

template <typename T> __device__ T unary_value(UnaryOp op, T x) {
  switch (op) {
    case UnaryOp::Neg: return -x;
    case UnaryOp::Exp: return exp(x);
    case UnaryOp::Log: return log(x);
    case UnaryOp::Sqrt: return sqrt(x);
    case UnaryOp::Rsqrt: return T(1) / sqrt(x);
    case UnaryOp::Sigmoid: return sigmoid_of(x);
    case UnaryOp::Silu: return x * sigmoid_of(x);
    case UnaryOp::Softplus: return max(x, T(0)) + log1p(exp(-fabs(x)));
    case UnaryOp::LogSigmoid: return min(x, T(0)) - log1p(exp(-fabs(x)));
    case UnaryOp::Tanh: return tanh(x);
    case UnaryOp::Abs: return fabs(x);
  }
  return x;
}

template <typename T> __global__ void fill_kernel(T* out, int64_t n, T v) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(blockDim.x) * gridDim.x)
    out[i] = v;
}

template <typename T> __global__ void unary_kernel(UnaryOp op, T* out, const T* in, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(blockDim.x) * gridDim.x)
    out[i] = unary_value(op, in[i]);
}

template <typename T> __global__ void scalar_kernel(ScalarOp op, T* out, const T* in, int64_t n, T s) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(blockDim.x) * gridDim.x) {
    T x = in[i];
    out[i] = op == ScalarOp::Add ? x + s : op == ScalarOp::Mul ? x * s : pow(x, s);
  }
}

void require_contiguous(const Tensor& t, const char* name) {
  GDN_CHECK(t.is_contiguous(), "CUDA {}: strided tensors are not supported yet ({})", name, t.str());
}

void fill(const Tensor& out, double value) {
  require_contiguous(out, "fill");
  const int64_t n = out.numel();
  if (n == 0) return;
  dispatch_float(out.dtype(), "cuda fill", [&](auto tag) {
    using T = decltype(tag);
    fill_kernel<T><<<blocks_for(n), kThreads>>>(out.data<T>(), n, static_cast<T>(value));
  });
  CUDA_CHECK_LAST();
}

void unary(UnaryOp op, const Tensor& out, const Tensor& in) {
  require_contiguous(out, "unary");
  require_contiguous(in, "unary");
  const int64_t n = out.numel();
  if (n == 0) return;
  dispatch_float(out.dtype(), "cuda unary", [&](auto tag) {
    using T = decltype(tag);
    unary_kernel<T><<<blocks_for(n), kThreads>>>(op, out.data<T>(), in.data<T>(), n);
  });
  CUDA_CHECK_LAST();
}

void scalar(ScalarOp op, const Tensor& out, const Tensor& in, double s) {
  require_contiguous(out, "scalar");
  require_contiguous(in, "scalar");
  const int64_t n = out.numel();
  if (n == 0) return;
  dispatch_float(out.dtype(), "cuda scalar", [&](auto tag) {
    using T = decltype(tag);
    scalar_kernel<T><<<blocks_for(n), kThreads>>>(op, out.data<T>(), in.data<T>(), n, static_cast<T>(s));
  });
  CUDA_CHECK_LAST();
}

}  // namespace

void register_elementwise_kernels(KernelTable& t) {
  t.fill = fill;
  t.unary = unary;
  t.scalar = scalar;
}

}  // namespace gdn::cuda
