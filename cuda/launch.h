// cuda/launch.h — what every CUDA kernel file shares: launch geometry, the stream, kernel launches with
// Programmatic Dependent Launch, alignment, multi-tensor rows, block-wide and column sums.
//
// Every kernel of ours is launched with launch(kernel, grid, block, smem_bytes, args...): on cuda::current_stream()
// (cuda/stream.h), through cudaLaunchKernelEx, checked at once (a bad configuration is a located gdn::Error).
// Programmatic Dependent Launch (PDL, sm_90): launch() sets cudaLaunchAttributeProgrammaticStreamSerialization, so a
// kernel may be scheduled while its predecessor in the stream is still draining (and in the step's CUDA graph the
// edge between two such kernels is a programmatic one): a short kernel's launch and ramp-up overlap the tail of the
// kernel before it.
// The rule that keeps this safe: every __global__ kernel of ours begins with pdl_enter(), before it reads or writes
// any global memory; it waits (griddepcontrol.wait) until the preceding grid has completed and its writes are
// visible (it does not trigger its dependents early: the next kernel is scheduled as its blocks exit). A kernel is
// launched through launch() if and only if it begins with pdl_enter(), and no kernel in cuda/ is launched with the
// triple-chevron syntax (tests/pdl_launches.sh checks both). Kernels of libraries (cuBLAS, CUB) are launched by them
// as usual, and one of ours that follows them waits for them in full.
// GDN_PDL=0 turns the attribute off (plain stream order; for A/B runs and debugging); it is also off on devices below
// compute capability 9.0, and for device code built below compute_90 (there pdl_enter() compiles to nothing).
//
// block_sum() is the reduction of row-wise kernels (norms, cross-entropy, gate sums): warp shuffles, then one value
// per warp through shared memory. It is deterministic — the same inputs always add up in the same order — which the
// tests rely on when they compare two runs, and which float atomics would not give.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <type_traits>
#include <utility>

#include "core/tensor.h"
#include "cuda/cuda_check.h"
#include "cuda/stream.h"

namespace gdn::cuda {

constexpr int kThreads = 256;  // threads per block for 1-D elementwise-style kernels

// Blocks for n elements at `threads` per block, capped for grid-stride loops.
inline unsigned grid_for(int64_t n, int threads = kThreads, int64_t cap = 65535) {
  return static_cast<unsigned>(std::max<int64_t>(1, std::min<int64_t>((n + threads - 1) / threads, cap)));
}

// The first statement of every kernel of ours (a no-op below sm_90): block until the grid this one depends on has
// completed and its memory is visible (griddepcontrol.wait). The kernel does not trigger its dependents early: the
// next grid is scheduled as this one's blocks exit, so waiting blocks never hold SM resources that this grid's last
// wave could use (an early trigger at the start of every kernel measured slower on the large preset).
__device__ __forceinline__ void pdl_enter() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

// A 0 / 1 switch from the environment (the A/B switches of the kernels): `fallback` when unset or empty, a UserError
// for anything else.
inline bool env_switch(const char* name, bool fallback) {
  const char* e = std::getenv(name);
  if (!e || !*e) return fallback;
  GDN_USER_CHECK(std::strcmp(e, "0") == 0 || std::strcmp(e, "1") == 0, "{} must be 0 or 1, got '{}'", name, e);
  return e[0] == '1';
}

// Whether launch() sets the PDL attribute, decided once at the first launch: GDN_PDL is not 0 (1 or unset is on,
// anything else a UserError), the current device has compute capability >= 9.0, and `kernel`'s device code was built
// for compute_90 or later (so its pdl_enter() waits; all of ours are built with the same architectures).
inline bool pdl_enabled(const void* kernel) {
  static const bool on = [kernel] {
    if (!env_switch("GDN_PDL", true)) return false;
    int device = 0, major = 0;
    CUDA_CHECK(cudaGetDevice(&device));
    CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
    cudaFuncAttributes attr{};
    CUDA_CHECK(cudaFuncGetAttributes(&attr, kernel));
    return major >= 9 && attr.ptxVersion >= 90;
  }();
  return on;
}

// Launches kernel(args...) with grid, block and smem_bytes of dynamic shared memory on current_stream(), with the PDL
// attribute where pdl_enabled(). The arguments convert to the kernel's parameter types as in a triple-chevron launch;
// the kernel's template arguments must all be given (none are deduced from the arguments). Errors are reported as
// CUDA_CHECK_LAST() would report them.
template <typename... Params, typename... Args>
void launch(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem_bytes, Args&&... args) {
  cudaLaunchAttribute attr[1] = {};
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  cudaLaunchConfig_t config = {};
  config.gridDim = grid;
  config.blockDim = block;
  config.dynamicSmemBytes = smem_bytes;
  config.stream = current_stream();
  config.attrs = attr;
  config.numAttrs = pdl_enabled(reinterpret_cast<const void*>(kernel)) ? 1 : 0;
  const cudaError_t launched = cudaLaunchKernelEx(&config, kernel, std::forward<Args>(args)...);
  CUDA_CHECK_LAST();  // the launch's own error, or one left by earlier asynchronous work
  CUDA_CHECK(launched);
}

// Whether p is a multiple of `bytes`: the condition of the vector paths (16 for float4, 8 for four bfloat16 values).
__host__ __device__ inline bool is_aligned(const void* p, uintptr_t bytes) {
  return reinterpret_cast<uintptr_t>(p) % bytes == 0;
}

// Multi-tensor kernels (AdamW, sum_squares, copy_to_bf16) see their tensors as rows of a table, each row with the
// index `begin` of its first element in the concatenation, in increasing order, and row n a sentinel whose begin is
// the total. find_row: the row of element i by binary search over the n rows (where a thread starts, so that no
// thread walks the table from its first row).
template <typename Row> __device__ inline int find_row(const Row* rows, int n, int64_t i) {
  int lo = 0, hi = n - 1;  // rows[lo].begin <= i < rows[hi + 1].begin
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (rows[mid].begin <= i) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

// Sum of v over each aligned group of W lanes (W a power of two up to 32; the whole warp by default), returned to
// every lane of the group; every lane of the warp calls it.
template <int W = 32, typename T> __device__ inline T warp_sum(T v) {
  for (int offset = W / 2; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

// Sum of v over the lanes below this one (0 on lane 0), to every lane of a full warp: an inclusive scan by
// __shfl_up_sync in five steps, then each lane takes its left neighbour's sum.
template <typename T> __device__ inline T warp_exclusive_sum(T v) {
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int offset = 1; offset < 32; offset <<= 1) {
    const T t = __shfl_up_sync(0xffffffffu, v, offset);
    if (lane >= offset) v += t;
  }
  const T before = __shfl_up_sync(0xffffffffu, v, 1);
  return lane == 0 ? T(0) : before;
}

template <typename T> __device__ inline T warp_max(T v) {
  for (int offset = 16; offset > 0; offset >>= 1) v = max(v, __shfl_xor_sync(0xffffffffu, v, offset));
  return v;
}

// Sum of v over the whole block, returned to every thread. blockDim.x must be a multiple of 32 (at most 1024);
// every thread of the block must call it. `scratch` is 32 values of shared memory, reusable after the call.
template <typename T> __device__ inline T block_sum(T v, T* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  v = warp_sum(v);
  __syncthreads();  // scratch may still be read by a previous call
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < warps ? scratch[lane] : T(0);
  return warp_sum(v);
}

// The sum over k < S of partial[k * M + m] by one warp (m the same on every lane), the second pass of the
// deterministic column reductions: lane l adds k = l, l + 32, ... in order, then warp_sum's fixed xor butterfly,
// which leaves the same bits on every lane and every run. (One thread walking all S partials would wait on S loads in
// a row.)
__device__ inline double warp_column_sum(const double* partial, int64_t S, int64_t M, int64_t m) {
  double s = 0;
  for (int64_t k = threadIdx.x & 31; k < S; k += 32) s += partial[k * M + m];
  return warp_sum(s);
}

// Maximum of v over the whole block, returned to every thread; same rules as block_sum.
template <typename T> __device__ inline T block_max(T v, T* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  v = warp_max(v);
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < warps ? scratch[lane] : scratch[0];
  return warp_max(v);
}

// Tensors that may be stored in bfloat16 while the arithmetic is float32 (a bf16 GEMM's operand written by a norm or
// swiglu; the FFN's hidden products): with_storage<T>(t, f) calls f with t's typed pointer, T* or __nv_bfloat16*
// (the latter only for T = float); out_value<O>(v) is v in the stored type, rounded once to nearest even where O is
// bfloat16; in_value<T>(x) a stored value in the arithmetic type.
template <typename O, typename V> __device__ inline O out_value(V v) {
  if constexpr (std::is_same_v<O, __nv_bfloat16>) return __float2bfloat16_rn(static_cast<float>(v));
  else return static_cast<O>(v);
}

template <typename T, typename S> __device__ inline T in_value(S x) {
  if constexpr (std::is_same_v<S, __nv_bfloat16>) return __bfloat162float(x);
  else return static_cast<T>(x);
}

// Four consecutive elements (the i-th group of four; 16-byte aligned float32, 8-byte aligned bfloat16) as float4,
// and back (bfloat16 rounded to nearest even).
__device__ inline float4 load4(const float* p, int64_t i) { return reinterpret_cast<const float4*>(p)[i]; }
__device__ inline float4 load4(const __nv_bfloat16* p, int64_t i) {
  const uint2 u = reinterpret_cast<const uint2*>(p)[i];
  return make_float4(__uint_as_float(u.x << 16), __uint_as_float(u.x & 0xffff0000u), __uint_as_float(u.y << 16),
                     __uint_as_float(u.y & 0xffff0000u));
}
__device__ inline void store4(float* p, int64_t i, float4 v) { reinterpret_cast<float4*>(p)[i] = v; }
__device__ inline void store4(__nv_bfloat16* p, int64_t i, float4 v) {
  const __nv_bfloat162 lo = __floats2bfloat162_rn(v.x, v.y), hi = __floats2bfloat162_rn(v.z, v.w);
  reinterpret_cast<uint2*>(p)[i] =
      make_uint2(*reinterpret_cast<const uint32_t*>(&lo), *reinterpret_cast<const uint32_t*>(&hi));
}

// s += a.x b.x + a.y b.y + a.z b.z + a.w b.w in double, one element after the other (the row sums of the float4
// row kernels).
__device__ inline void add_dot4(double& s, float4 a, float4 b) {
  s += static_cast<double>(a.x) * b.x;
  s += static_cast<double>(a.y) * b.y;
  s += static_cast<double>(a.z) * b.z;
  s += static_cast<double>(a.w) * b.w;
}

// Whether every tensor's data is aligned for four elements of its dtype (the four-element load and store paths).
inline bool aligned4(std::initializer_list<const Tensor*> ts) {
  for (const Tensor* t : ts)
    if (!is_aligned(t->raw_data(), 4 * element_size(t->dtype()))) return false;
  return true;
}

template <typename T, typename F> void with_storage(const Tensor& t, F f) {
  if constexpr (std::is_same_v<T, float>) {
    if (t.dtype() == kBFloat16) return f(reinterpret_cast<__nv_bfloat16*>(t.raw_data()));
  }
  f(t.data<T>());
}

}  // namespace gdn::cuda
