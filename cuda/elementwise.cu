// cuda/elementwise.cu — CUDA kernels: fill, copy (any strides, dtype conversion), unary and its derivative,
// binary with broadcasting, scalar ops, SwiGLU's activation; float32 and float64.
//
// One generic strided launcher serves them all: the output's shape and every operand's strides (stride 0 where an
// operand is broadcast) travel to the device by value in a Geometry struct; each thread turns its linear index into
// per-operand offsets and calls a small functor. The math mirrors ops/cpu/elementwise_cpu.cpp, the CPU twin that
// tests/test_cuda.cpp treats as the truth. One thread per element, grid-stride loop. Dimensions are coalesced on the
// host first (size-1 dimensions dropped, neighbours merged where every operand's strides allow), so contiguous
// operands reach the kernel as one dimension and take a path without index division; two dimensions (a column
// slice, a broadcast row) take a 2-D grid, also without division; more divide the index once per dimension.
#include <cuda_runtime.h>

#include <algorithm>
#include <array>
#include <initializer_list>
#include <type_traits>

#include "cuda/cuda_kernels.h"
#include "cuda/launch.h"

namespace gdn::cuda {

namespace {

constexpr int kMaxDims = 8;

template <int N> struct Geometry {
  int ndim = 0;
  int64_t numel = 0;
  int64_t shape[kMaxDims] = {};
  int64_t strides[N][kMaxDims] = {};
};

template <int N> Geometry<N> make_geometry(const std::array<const Tensor*, N>& ts) {
  Geometry<N> g;
  const Tensor& out = *ts[0];
  GDN_CHECK(out.dim() <= kMaxDims, "CUDA elementwise: at most {} dimensions, got {}", kMaxDims, out.dim());
  g.ndim = static_cast<int>(out.dim());
  g.numel = out.numel();
  for (int d = 0; d < g.ndim; ++d) g.shape[d] = out.size(d);
  for (int k = 0; k < N; ++k) {
    GDN_CHECK(ts[k]->shape() == out.shape(), "CUDA elementwise: operand {} has shape {}, expected {}", k,
              shape_str(ts[k]->shape()), shape_str(out.shape()));
    GDN_CHECK(ts[k]->device() == out.device(), "CUDA elementwise: operand {} is on {}", k, ts[k]->device());
    for (int d = 0; d < g.ndim; ++d) g.strides[k][d] = ts[k]->stride(d);
  }
  // Coalesce: drop size-1 dimensions, and merge dimension d into d + 1 wherever every operand steps over d exactly
  // as over d + 1 (stride[d] == stride[d + 1] * shape[d + 1]), so that contiguous operands become one dimension
  // and the kernel does no index division at all.
  int nd = 0;
  for (int d = 0; d < g.ndim; ++d) {
    if (g.shape[d] == 1) continue;
    if (nd > 0) {
      bool merge = true;
      for (int k = 0; k < N && merge; ++k) merge = g.strides[k][nd - 1] == g.strides[k][d] * g.shape[d];
      if (merge) {
        g.shape[nd - 1] *= g.shape[d];
        for (int k = 0; k < N; ++k) g.strides[k][nd - 1] = g.strides[k][d];
        continue;
      }
    }
    g.shape[nd] = g.shape[d];
    for (int k = 0; k < N; ++k) g.strides[k][nd] = g.strides[k][d];
    ++nd;
  }
  if (nd == 0) {  // one element
    nd = 1;
    g.shape[0] = 1;
    for (int k = 0; k < N; ++k) g.strides[k][0] = 0;
  }
  g.ndim = nd;
  return g;
}

template <int N, typename F> __global__ void strided_kernel(Geometry<N> g, F f) {
  pdl_enter();
  if (g.ndim == 1) {  // after coalescing: every contiguous (or uniformly strided) case
    for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < g.numel;
         i += int64_t(blockDim.x) * gridDim.x) {
      int64_t off[N];
      for (int k = 0; k < N; ++k) off[k] = i * g.strides[k][0];
      f(off);
    }
    return;
  }
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < g.numel; i += int64_t(blockDim.x) * gridDim.x) {
    int64_t off[N] = {};
    int64_t rest = i;
    for (int d = g.ndim - 1; d >= 0; --d) {
      const int64_t idx = rest % g.shape[d];
      rest /= g.shape[d];
      for (int k = 0; k < N; ++k) off[k] += idx * g.strides[k][d];
    }
    f(off);
  }
}

// Two dimensions after coalescing (a column slice of a matrix, a broadcast row, a transpose): rows over blockIdx.y,
// columns over the threads of blockIdx.x, so no element divides its index.
template <int N, typename F> __global__ void strided2d_kernel(Geometry<N> g, F f) {
  pdl_enter();
  for (int64_t r = blockIdx.y; r < g.shape[0]; r += gridDim.y)
    for (int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; c < g.shape[1];
         c += int64_t(blockDim.x) * gridDim.x) {
      int64_t off[N];
      for (int k = 0; k < N; ++k) off[k] = r * g.strides[k][0] + c * g.strides[k][1];
      f(off);
    }
}

template <int N, typename F> void launch_strided(const std::array<const Tensor*, N>& ts, const F& f) {
  Geometry<N> g = make_geometry<N>(ts);
  if (g.numel == 0) return;
  if (g.ndim == 2) {
    const int64_t gx = std::min<int64_t>((g.shape[1] + kThreads - 1) / kThreads, 1024);
    const int64_t gy = std::min<int64_t>(g.shape[0], 65535);
    launch(strided2d_kernel<N, F>, dim3(static_cast<unsigned>(gx), static_cast<unsigned>(gy)), kThreads, 0, g, f);
  } else {
    launch(strided_kernel<N, F>, grid_for(g.numel), kThreads, 0, g, f);
  }
}

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

// d op(x) / dx given x and y = op(x), as in the CPU kernels.
template <typename T> __device__ T unary_derivative(UnaryOp op, T x, T y) {
  switch (op) {
    case UnaryOp::Neg: return T(-1);
    case UnaryOp::Exp: return y;
    case UnaryOp::Log: return T(1) / x;
    case UnaryOp::Sqrt: return T(0.5) / y;
    case UnaryOp::Rsqrt: return T(-0.5) * y * y * y;
    case UnaryOp::Sigmoid: return y * (T(1) - y);
    case UnaryOp::Silu: {
      const T s = sigmoid_of(x);
      return s * (T(1) + x * (T(1) - s));
    }
    case UnaryOp::Softplus: return sigmoid_of(x);
    case UnaryOp::LogSigmoid: return sigmoid_of(-x);
    case UnaryOp::Tanh: return T(1) - y * y;
    case UnaryOp::Abs: return x > T(0) ? T(1) : (x < T(0) ? T(-1) : T(0));
  }
  return T(0);
}

// bfloat16 in device code: the bits of core/dtype.h's bfloat16 and its conversions (round to nearest even, NaN kept
// quiet), so a copy converts exactly as on the CPU. Other types go through float, as the CPU's conversions do.
struct DeviceBFloat16 {
  uint16_t bits;
  __device__ static DeviceBFloat16 from_float(float f) {
    uint32_t u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return {static_cast<uint16_t>((u >> 16) | 0x40)};
    u += 0x7fffu + ((u >> 16) & 1u);
    return {static_cast<uint16_t>(u >> 16)};
  }
  __device__ float to_float() const { return __uint_as_float(static_cast<uint32_t>(bits) << 16); }
};
static_assert(sizeof(DeviceBFloat16) == 2, "DeviceBFloat16 is two bytes");

template <typename To, typename From> __device__ inline To convert(From x) { return static_cast<To>(x); }
template <> __device__ inline DeviceBFloat16 convert<DeviceBFloat16, DeviceBFloat16>(DeviceBFloat16 x) { return x; }
#define GDN_BF16_CONVERSIONS_(T)                                                                                    \
  template <> __device__ inline DeviceBFloat16 convert<DeviceBFloat16, T>(T x) {                                    \
    return DeviceBFloat16::from_float(static_cast<float>(x));                                                       \
  }                                                                                                                 \
  template <> __device__ inline T convert<T, DeviceBFloat16>(DeviceBFloat16 x) { return static_cast<T>(x.to_float()); }
GDN_BF16_CONVERSIONS_(float)
GDN_BF16_CONVERSIONS_(double)
GDN_BF16_CONVERSIONS_(int32_t)
GDN_BF16_CONVERSIONS_(int64_t)
#undef GDN_BF16_CONVERSIONS_

template <typename T> struct FillFn {
  T* o;
  T v;
  __device__ void operator()(const int64_t* off) const { o[off[0]] = v; }
};

template <typename To, typename From> struct CopyFn {
  To* o;
  const From* x;
  __device__ void operator()(const int64_t* off) const { o[off[0]] = convert<To, From>(x[off[1]]); }
};

template <typename T> struct UnaryFn {
  UnaryOp op;
  T* o;
  const T* x;
  __device__ void operator()(const int64_t* off) const { o[off[0]] = unary_value(op, x[off[1]]); }
};

template <typename T> struct UnaryBackwardFn {
  UnaryOp op;
  T* dx;
  const T *dy, *x, *y;
  __device__ void operator()(const int64_t* off) const {
    dx[off[0]] = dy[off[1]] * unary_derivative(op, x[off[2]], y[off[3]]);
  }
};

template <typename T> struct BinaryFn {
  BinaryOp op;
  T* o;
  const T *a, *b;
  __device__ void operator()(const int64_t* off) const {
    const T u = a[off[1]], v = b[off[2]];
    o[off[0]] = op == BinaryOp::Add ? u + v : op == BinaryOp::Sub ? u - v : op == BinaryOp::Mul ? u * v : u / v;
  }
};

template <typename T> struct ScalarFn {
  ScalarOp op;
  T* o;
  const T* x;
  T s;
  __device__ void operator()(const int64_t* off) const {
    const T v = x[off[1]];
    o[off[0]] = op == ScalarOp::Add ? v + s : op == ScalarOp::Mul ? v * s : pow(v, s);
  }
};

// The elements of t as T (T = DeviceBFloat16 for bfloat16 storage; dispatch_copy_type chose T from t's dtype).
template <typename T> T* elements(const Tensor& t) { return static_cast<T*>(t.raw_data()); }

// Runs f with a value of each storage type the CUDA copy supports.
template <typename F> void dispatch_copy_type(DType t, F&& f) {
  switch (t) {
    case DType::BFloat16: f(DeviceBFloat16{}); return;
    case DType::Float32: f(float{}); return;
    case DType::Float64: f(double{}); return;
    case DType::Int32: f(int32_t{}); return;
    case DType::Int64: f(int64_t{}); return;
    default: GDN_THROW("CUDA copy: unsupported dtype {}", t);
  }
}

void fill(const Tensor& out, double value) {
  dispatch_copy_type(out.dtype(), [&](auto tag) {
    using T = decltype(tag);
    if constexpr (std::is_same_v<T, DeviceBFloat16>) {  // rounded on the host by the CPU's own conversion
      launch_strided<1>({&out}, FillFn<T>{elements<T>(out), T{bfloat16(static_cast<float>(value)).bits}});
    } else {
      launch_strided<1>({&out}, FillFn<T>{out.data<T>(), static_cast<T>(value)});
    }
  });
}

// Four float32 values as four bfloat16 (CopyFn's rounding), packed for one 8-byte store, the first in the low bits.
__device__ inline uint2 bf16x4(float4 v) {
  auto bits = [](float f) { return static_cast<uint32_t>(DeviceBFloat16::from_float(f).bits); };
  return make_uint2(bits(v.x) | bits(v.y) << 16, bits(v.z) | bits(v.w) << 16);
}

// float32 -> bfloat16 between contiguous tensors (the bf16 GEMM operands of ops/matmul.cpp): four elements per
// thread step, one float4 load and one 8-byte store (16- and 8-byte aligned), the same rounding as CopyFn.
__global__ void float_to_bf16_kernel(uint2* __restrict__ out, const float4* __restrict__ in, int64_t n4) {
  pdl_enter();
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n4; i += int64_t(blockDim.x) * gridDim.x) {
    out[i] = bf16x4(in[i]);
  }
}

// copy_to_bf16: every pair in one launch. The tensors are concatenated in a table of rows (each starting at a
// multiple of 4, like the optimizer's), a thread step converts four elements of one row (float4 / 8-byte stores where
// aligned, element by element at a row's tail); a thread finds its row with find_row (cuda/launch.h).
struct CastRow {
  int64_t begin, numel, src, dst;  // src, dst: device pointers
};

__global__ void float_to_bf16_rows_kernel(const CastRow* __restrict__ rows, int nrows, int64_t quads) {
  pdl_enter();
  for (int64_t q = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; q < quads; q += int64_t(blockDim.x) * gridDim.x) {
    const int64_t i = 4 * q;
    const CastRow r = rows[find_row(rows, nrows, i)];
    const int64_t e = i - r.begin;
    const float* src = reinterpret_cast<const float*>(r.src) + e;
    uint16_t* dst = reinterpret_cast<uint16_t*>(r.dst) + e;
    if (e + 4 <= r.numel && is_aligned(src, 16) && is_aligned(dst, 8)) {
      *reinterpret_cast<uint2*>(dst) = bf16x4(*reinterpret_cast<const float4*>(src));
    } else {
      for (int64_t k = 0; k < 4 && e + k < r.numel; ++k) dst[k] = DeviceBFloat16::from_float(src[k]).bits;
    }
  }
}

void copy_to_bf16(const std::vector<Tensor>& outs, const std::vector<Tensor>& ins) {
  GDN_CHECK(outs.size() == ins.size(), "CUDA copy_to_bf16: {} outputs for {} inputs", outs.size(), ins.size());
  std::vector<int64_t> table;  // CastRow fields, then a sentinel row whose begin is the total
  int64_t total = 0;
  for (size_t i = 0; i < outs.size(); ++i) {
    GDN_CHECK(outs[i].dtype() == kBFloat16 && ins[i].dtype() == kFloat32 && outs[i].is_contiguous() &&
                  ins[i].is_contiguous() && outs[i].numel() == ins[i].numel() &&
                  outs[i].device() == ins[i].device() && ins[i].device() == ins[0].device(),
              "CUDA copy_to_bf16: tensor {}: {} <- {} (contiguous bfloat16 <- float32 of equal numel, one device)", i,
              outs[i].str(), ins[i].str());
    if (ins[i].numel() == 0) continue;
    table.insert(table.end(), {total, ins[i].numel(), reinterpret_cast<int64_t>(ins[i].raw_data()),
                               reinterpret_cast<int64_t>(outs[i].raw_data())});
    total += (ins[i].numel() + 3) / 4 * 4;
  }
  if (total == 0) return;
  const int nrows = static_cast<int>(table.size() / 4);
  table.insert(table.end(), {total, 0, 0, 0});
  const Tensor t = Tensor::from_int64(table, {static_cast<int64_t>(table.size())}, ins[0].device());
  launch(float_to_bf16_rows_kernel, grid_for(total / 4), kThreads, 0,
         reinterpret_cast<const CastRow*>(t.data<int64_t>()), nrows, total / 4);
}

void copy(const Tensor& out, const Tensor& in) {
  if (out.dtype() == kBFloat16 && in.dtype() == kFloat32 && out.is_contiguous() && in.is_contiguous() &&
      out.shape() == in.shape() && out.numel() % 4 == 0 && is_aligned(in.raw_data(), 16) &&
      is_aligned(out.raw_data(), 8)) {
    const int64_t n4 = out.numel() / 4;
    if (n4 == 0) return;
    launch(float_to_bf16_kernel, grid_for(n4), kThreads, 0, static_cast<uint2*>(out.raw_data()),
           static_cast<const float4*>(in.raw_data()), n4);
    return;
  }
  dispatch_copy_type(out.dtype(), [&](auto out_tag) {
    using To = decltype(out_tag);
    dispatch_copy_type(in.dtype(), [&](auto in_tag) {
      using From = decltype(in_tag);
      launch_strided<2>({&out, &in}, CopyFn<To, From>{elements<To>(out), elements<From>(in)});
    });
  });
}

void unary(UnaryOp op, const Tensor& out, const Tensor& in) {
  dispatch_float(out.dtype(), "cuda unary", [&](auto tag) {
    using T = decltype(tag);
    launch_strided<2>({&out, &in}, UnaryFn<T>{op, out.data<T>(), in.data<T>()});
  });
}

void unary_backward(UnaryOp op, const Tensor& dx, const Tensor& dy, const Tensor& x, const Tensor& y) {
  dispatch_float(dx.dtype(), "cuda unary_backward", [&](auto tag) {
    using T = decltype(tag);
    launch_strided<4>({&dx, &dy, &x, &y}, UnaryBackwardFn<T>{op, dx.data<T>(), dy.data<T>(), x.data<T>(), y.data<T>()});
  });
}

void binary(BinaryOp op, const Tensor& out, const Tensor& a, const Tensor& b) {
  dispatch_float(out.dtype(), "cuda binary", [&](auto tag) {
    using T = decltype(tag);
    launch_strided<3>({&out, &a, &b}, BinaryFn<T>{op, out.data<T>(), a.data<T>(), b.data<T>()});
  });
}

void scalar(ScalarOp op, const Tensor& out, const Tensor& in, double s) {
  dispatch_float(out.dtype(), "cuda scalar", [&](auto tag) {
    using T = decltype(tag);
    launch_strided<2>({&out, &in}, ScalarFn<T>{op, out.data<T>(), in.data<T>(), static_cast<T>(s)});
  });
}

// SwiGLU's activation: contiguous operands of one shape (the op makes them so), one element per thread and step,
// the CPU twin's expressions.
// SwiGLU: element i of each operand at [i]; float32 arithmetic may read and write bfloat16 storage (a, b, da, db:
// the FFN's gate | up products under bf16 products; y: the down projection's operand), rounded once per store.
// Operands whose pointers are all aligned for four elements (16 bytes float32, 8 bytes bfloat16) go four elements
// per thread through vector loads and stores (vec), the rest one element per thread.
template <typename T> __device__ T swiglu_value(T a, T b) { return a * sigmoid_of(a) * b; }
template <typename T> __device__ void swiglu_grads(T dy, T a, T b, T& da, T& db) {
  const T s = sigmoid_of(a);
  da = dy * b * (s * (T(1) + a * (T(1) - s)));
  db = dy * (a * s);
}

// T: the arithmetic; A: a and b's storage (T, or bfloat16 for T = float); Y: y's (the same choice).
template <typename T, typename A, typename Y>
__global__ void swiglu_forward_kernel(Y* __restrict__ y, const A* __restrict__ a, const A* __restrict__ b, int64_t n,
                                      bool vec) {
  pdl_enter();
  const int64_t first = blockIdx.x * int64_t(blockDim.x) + threadIdx.x, stride = int64_t(blockDim.x) * gridDim.x;
  int64_t scalar_from = 0;
  if constexpr (std::is_same_v<T, float>) {
    if (vec) {
      for (int64_t i = first; i < n / 4; i += stride) {
        const float4 av = load4(a, i), bv = load4(b, i);
        store4(y, i, make_float4(swiglu_value(av.x, bv.x), swiglu_value(av.y, bv.y), swiglu_value(av.z, bv.z),
                                 swiglu_value(av.w, bv.w)));
      }
      scalar_from = n / 4 * 4;
    }
  }
  for (int64_t i = scalar_from + first; i < n; i += stride)
    y[i] = out_value<Y>(swiglu_value(in_value<T>(a[i]), in_value<T>(b[i])));
}

// T: the arithmetic and dy's storage; A: a, b, da and db's (T, or bfloat16 for T = float).
template <typename T, typename A>
__global__ void swiglu_backward_kernel(A* __restrict__ da, A* __restrict__ db, const T* __restrict__ dy,
                                       const A* __restrict__ a, const A* __restrict__ b, int64_t n, bool vec) {
  pdl_enter();
  const int64_t first = blockIdx.x * int64_t(blockDim.x) + threadIdx.x, stride = int64_t(blockDim.x) * gridDim.x;
  int64_t scalar_from = 0;
  if constexpr (std::is_same_v<T, float>) {
    if (vec) {
      for (int64_t i = first; i < n / 4; i += stride) {
        const float4 g = load4(dy, i), av = load4(a, i), bv = load4(b, i);
        float4 ga, gb;
        swiglu_grads(g.x, av.x, bv.x, ga.x, gb.x);
        swiglu_grads(g.y, av.y, bv.y, ga.y, gb.y);
        swiglu_grads(g.z, av.z, bv.z, ga.z, gb.z);
        swiglu_grads(g.w, av.w, bv.w, ga.w, gb.w);
        store4(da, i, ga);
        store4(db, i, gb);
      }
      scalar_from = n / 4 * 4;
    }
  }
  for (int64_t i = scalar_from + first; i < n; i += stride) {
    T ga, gb;
    swiglu_grads(dy[i], in_value<T>(a[i]), in_value<T>(b[i]), ga, gb);
    da[i] = out_value<A>(ga);
    db[i] = out_value<A>(gb);
  }
}

bool contiguous_like(std::initializer_list<const Tensor*> ts) {
  const Tensor& first = **ts.begin();
  for (const Tensor* t : ts)
    if (!t->is_contiguous() || t->shape() != first.shape() || t->dtype() != first.dtype()) return false;
  return true;
}

// a, b of one dtype (float32, float64, or bfloat16 with float32 arithmetic); y in theirs or the other of float32 and
// bfloat16 when those are the arithmetic.
void swiglu_forward(const Tensor& y, const Tensor& a, const Tensor& b) {
  const DType ar = arithmetic_dtype(a.dtype());
  GDN_CHECK(contiguous_like({&a, &b}) && y.is_contiguous() && y.shape() == a.shape() &&
                arithmetic_dtype(y.dtype()) == ar,
            "CUDA swiglu: y, a, b must be contiguous, of one shape and dtype (or bfloat16 storage of float32)");
  const int64_t n = y.numel();
  if (n == 0) return;
  dispatch_float(ar, "cuda swiglu_forward", [&](auto tag) {
    using T = decltype(tag);
    const bool vec = aligned4({&y, &a, &b});
    with_storage<T>(a, [&](auto* ap) {
      with_storage<T>(y, [&](auto* yp) {
        using A = std::remove_pointer_t<decltype(ap)>;
        launch(swiglu_forward_kernel<T, A, std::remove_pointer_t<decltype(yp)>>, grid_for(vec ? (n + 3) / 4 : n),
               kThreads, 0, yp, ap, static_cast<A*>(b.raw_data()), n, vec);
      });
    });
  });
}

// a, b, da, db of one dtype (as in the forward); dy in the arithmetic type.
void swiglu_backward(const Tensor& da, const Tensor& db, const Tensor& dy, const Tensor& a, const Tensor& b) {
  const DType ar = arithmetic_dtype(a.dtype());
  GDN_CHECK(contiguous_like({&da, &db, &a, &b}) && dy.is_contiguous() && dy.shape() == a.shape() && dy.dtype() == ar,
            "CUDA swiglu_backward: da, db, dy, a, b must be contiguous, of one shape and dtype (a, b, da, db may be "
            "bfloat16 storage of float32)");
  const int64_t n = dy.numel();
  if (n == 0) return;
  dispatch_float(ar, "cuda swiglu_backward", [&](auto tag) {
    using T = decltype(tag);
    const bool vec = aligned4({&da, &db, &dy, &a, &b});
    with_storage<T>(a, [&](auto* ap) {
      using A = std::remove_pointer_t<decltype(ap)>;
      launch(swiglu_backward_kernel<T, A>, grid_for(vec ? (n + 3) / 4 : n), kThreads, 0, static_cast<A*>(da.raw_data()),
             static_cast<A*>(db.raw_data()), dy.data<T>(), ap, static_cast<const A*>(b.raw_data()), n, vec);
    });
  });
}

}  // namespace

void register_elementwise_kernels(KernelTable& t) {
  t.fill = fill;
  t.copy = copy;
  t.copy_to_bf16 = copy_to_bf16;
  t.unary = unary;
  t.unary_backward = unary_backward;
  t.binary = binary;
  t.scalar = scalar;
  t.swiglu_forward = swiglu_forward;
  t.swiglu_backward = swiglu_backward;
}

}  // namespace gdn::cuda
