// cuda/gdn_gate.cu — CUDA kernels of the Gated DeltaNet gate (decay g and write strength beta from the layer's b | a
// projection), forward and backward; float32 and float64, a, b, da, db also as bfloat16 storage of float32 arithmetic
// (the projection's output under bf16 products and its gradient). The CPU twin is in ops/cpu/gated_deltanet_cpu.cpp;
// the scalar helpers (raw_gate, clamp_gate, sigmoid_of) and the column pass are in cuda/gated_deltanet_common.cuh.
//
// Math (H heads):
//   gate:  A = exp(min(A_log, kGateALogMax)), raw = -A softplus(a + dt_bias), g = max(raw, kGateMin) (a NaN stays
//          NaN), beta = sigmoid(b) (the guards: core/dispatch.h, docs/MATH.md "Gates"); where raw is above
//          kGateMin: da = dg (-A) sigmoid(a + dt_bias) and dA_log += dg raw if A_log < kGateALogMax; else da = 0 and
//          nothing is added; ddt_bias = sum da, db = dbeta beta (1 - beta).
//
// Parallel decomposition:
//   * gate forward: one thread per output element, grid-stride, the head index fastest so loads are coalesced.
//   * gate backward: one kernel for da, db and the first pass of dA_log and ddt_bias. A block covers P rows of
//     Hb = min(H, 256) heads per step (P = 256 / Hb; H > 256 heads are tiled over blockIdx.y), a thread one head
//     (consecutive threads consecutive elements), grid-stride over the rows with at most 1024 blocks along them, a
//     number that depends only on N and H. Each thread adds its head's dA_log and ddt_bias terms in double over the
//     rows it visits; the block adds its row lanes' sums by a fixed pairwise tree (shared memory) into its row of a
//     double partial [S, 2H]; pass 2 is column_finalize_kernel (cuda/gated_deltanet_common.cuh: a warp per column
//     adds the S partials in a fixed order), so two runs give identical bits; no atomics.
// The double sums differ from the CPU's (per OpenMP thread) only in their order.
#include <cuda_runtime.h>

#include <algorithm>
#include <type_traits>

#include "cuda/cuda_kernels.h"
#include "cuda/gated_deltanet_common.cuh"
#include "cuda/launch.h"

namespace gdn::cuda {

namespace {

using namespace gdn_common;

// ---------------------------------------------------------------------------------------------------------------
// gate: rows of H heads, element i has row i / H and head i % H; a, b, da, db are read and written at row * (their
// row stride) + head (column windows of the layer's b | a projection), g, beta, dg, dbeta contiguous. A: the storage
// of a, b, da, db (T, or bfloat16 for T = float: the projection's output under bf16 products, its gradient rounded
// once); everything else is T.

// The row strides of a, b, da, db.
struct GateStrides {
  int64_t a, b, da, db;
};

template <typename T, typename A>
__global__ void gate_forward_kernel(T* g, T* beta, const A* a, const A* b, const T* A_log, const T* dt_bias, int64_t N,
                                    int64_t H, GateStrides st) {
  pdl_enter();
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < N; i += int64_t(blockDim.x) * gridDim.x) {
    const int64_t r = i / H, h = i - r * H;
    g[i] = clamp_gate(raw_gate(A_log[h], in_value<T>(a[r * st.a + h]) + dt_bias[h]).raw);
    beta[i] = sigmoid_of(in_value<T>(b[r * st.b + h]));
  }
}

// The backward of one element whose a + dt_bias is xa: da (0 where g is clamped) and its dA_log term dg raw (0 where
// a guard is active: g clamped, or A_log not below kGateALogMax). The product is not fused into the sum it joins.
template <typename T> struct GateGrad {
  T da;
  double dA_log;
};
template <typename T> __device__ inline GateGrad<T> gate_grad(T dg, T xa, T A_log) {
  const RawGate<T> rg = raw_gate(A_log, xa);
  if (rg.raw < static_cast<T>(kGateMin)) return {T(0), 0.0};
  const double term = A_log < static_cast<T>(kGateALogMax) ? __dmul_rn(static_cast<double>(dg), rg.raw) : 0.0;
  return {dg * (-rg.A) * sigmoid_of(xa), term};
}

// The gate backward's blocks along the rows, at most (each writes one row of double partials).
constexpr int64_t kGateBlocks = 1024;

// The heads of a block of the gate backward (Hb = min(H, kThreads)) and its rows per step (P = kThreads / Hb).
__host__ __device__ inline int gate_block_heads(int64_t H) { return static_cast<int>(H < kThreads ? H : kThreads); }

// da, db, and the partials of dA_log and ddt_bias. Block (x, y) owns heads y * Hb ... (those below H); thread t has
// head y * Hb + t % Hb and row lane t / Hb (of P; threads beyond P * Hb idle), and visits rows t / Hb + P x,
// + P gridDim.x, ... (a block step reads P rows' Hb heads, contiguous in dg and dbeta). Each thread adds its dA_log
// terms and its da values (for bfloat16 da the unrounded T values, as the CPU adds them) in double; the block adds
// its row lanes' sums by a fixed pairwise tree (shared memory) and writes partial[x, h] (dA_log) and
// partial[x, H + h] (ddt_bias) of partial [gridDim.x, 2H].
template <typename T, typename A>
__global__ void gate_backward_kernel(A* da, A* db, double* partial, const T* dg, const T* dbeta, const A* a,
                                     const A* b, const T* A_log, const T* dt_bias, int64_t R, int64_t H,
                                     GateStrides st) {
  pdl_enter();
  __shared__ double sums[2][kThreads];
  const int Hb = gate_block_heads(H), P = kThreads / Hb;
  const int c = threadIdx.x % Hb, lane = threadIdx.x / Hb;
  const int64_t h = blockIdx.y * int64_t(Hb) + c;
  double acc_A = 0, acc_dt = 0;
  if (lane < P && h < H) {
    const T al = A_log[h], dtb = dt_bias[h];
    for (int64_t r = blockIdx.x * int64_t(P) + lane; r < R; r += int64_t(P) * gridDim.x) {
      const int64_t i = r * H + h;
      const GateGrad<T> gr = gate_grad(dg[i], in_value<T>(a[r * st.a + h]) + dtb, al);
      const T s = sigmoid_of(in_value<T>(b[r * st.b + h]));
      da[r * st.da + h] = out_value<A>(gr.da);
      db[r * st.db + h] = out_value<A>(dbeta[i] * s * (T(1) - s));
      acc_A += gr.dA_log;
      acc_dt += static_cast<double>(gr.da);
    }
  }
  sums[0][threadIdx.x] = acc_A;
  sums[1][threadIdx.x] = acc_dt;
  int half = 1;  // the largest power of two below P (1 for P = 1: a step that adds nothing)
  while (2 * half < P) half *= 2;
  for (int step = half; step > 0; step /= 2) {  // row lane l takes in the sums of l + step
    __syncthreads();
    if (lane < step && lane + step < P) {
      sums[0][threadIdx.x] += sums[0][threadIdx.x + step * Hb];
      sums[1][threadIdx.x] += sums[1][threadIdx.x + step * Hb];
    }
  }
  __syncthreads();
  if (lane == 0 && h < H) {
    partial[blockIdx.x * 2 * H + h] = sums[0][c];
    partial[blockIdx.x * 2 * H + H + h] = sums[1][c];
  }
}

template <typename T> struct GateParamStore {
  T *dA_log, *ddt_bias;
  int64_t H;
  __device__ void operator()(int64_t m, double s) const {
    if (m < H)
      dA_log[m] = static_cast<T>(s);
    else
      ddt_bias[m - H] = static_cast<T>(s);
  }
};

void gdn_gate_forward(const Tensor& g, const Tensor& beta, const Tensor& a, const Tensor& b, const Tensor& A_log,
                      const Tensor& dt_bias) {
  GDN_CHECK(g.is_contiguous() && beta.is_contiguous() && A_log.is_contiguous() && dt_bias.is_contiguous(),
            "gdn_gate: g, beta, A_log, dt_bias contiguous only");
  const int64_t H = A_log.numel(), N = a.numel();
  if (N == 0 || H == 0) return;
  GDN_CHECK(b.dtype() == a.dtype(), "gdn_gate: a is {}, b {}", a.dtype(), b.dtype());
  const GateStrides st{a.checked_row_stride("gdn_gate: a"), b.checked_row_stride("gdn_gate: b"), 0, 0};
  dispatch_float(arithmetic_dtype(a.dtype()), "cuda gdn_gate_forward", [&](auto tag_) {
    using T = decltype(tag_);
    with_storage<T>(a, [&](auto* ap) {
      using A = std::remove_pointer_t<decltype(ap)>;
      launch(gate_forward_kernel<T, A>, grid_for(N), kThreads, 0, g.data<T>(), beta.data<T>(), ap,
             static_cast<const A*>(b.raw_data()), A_log.data<T>(), dt_bias.data<T>(), N, H, st);
    });
  });
}

void gdn_gate_backward(const Tensor& da, const Tensor& db, const Tensor& dA_log, const Tensor& ddt_bias,
                       const Tensor& dg, const Tensor& dbeta, const Tensor& a, const Tensor& b, const Tensor& A_log,
                       const Tensor& dt_bias) {
  GDN_CHECK(dg.is_contiguous() && dbeta.is_contiguous(), "gdn_gate_backward: dg, dbeta contiguous only");
  GDN_CHECK(A_log.is_contiguous() && dt_bias.is_contiguous() && dA_log.is_contiguous() && ddt_bias.is_contiguous(),
            "gdn_gate_backward: contiguous only");
  const int64_t H = A_log.numel(), N = a.numel();
  if (H == 0) return;
  const GateStrides st{a.checked_row_stride("gdn_gate_backward: a"), b.checked_row_stride("gdn_gate_backward: b"),
                       da.checked_row_stride("gdn_gate_backward: da"),
                       db.checked_row_stride("gdn_gate_backward: db")};
  GDN_CHECK(b.dtype() == a.dtype() && da.dtype() == a.dtype() && db.dtype() == a.dtype(),
            "gdn_gate_backward: a, b, da, db must be of one dtype, got {}, {}, {}, {}", a.dtype(), b.dtype(),
            da.dtype(), db.dtype());
  // S blocks along the rows (a function of N and H only), ceil(H / Hb) along the heads.
  const int Hb = gate_block_heads(H);
  const int64_t R = N / H, P = kThreads / Hb, heads_y = (H + Hb - 1) / Hb;
  const int64_t S = std::clamp<int64_t>((R + P - 1) / P, 1, std::max<int64_t>(1, kGateBlocks / heads_y));
  Tensor partial = Tensor::empty({S, 2 * H}, kFloat64, a.device());
  dispatch_float(arithmetic_dtype(a.dtype()), "cuda gdn_gate_backward", [&](auto tag_) {
    using T = decltype(tag_);
    with_storage<T>(a, [&](auto* ap) {
      using A = std::remove_pointer_t<decltype(ap)>;
      launch(gate_backward_kernel<T, A>, dim3(static_cast<unsigned>(S), static_cast<unsigned>(heads_y)), kThreads, 0,
             static_cast<A*>(da.raw_data()), static_cast<A*>(db.raw_data()), partial.data<double>(), dg.data<T>(),
             dbeta.data<T>(), ap, static_cast<const A*>(b.raw_data()), A_log.data<T>(), dt_bias.data<T>(), R, H, st);
      // dA_log, ddt_bias [H]: the S block partials of each, a warp per column.
      launch(column_finalize_kernel<GateParamStore<T>>, grid_for(2 * H * 32), kThreads, 0, partial.data<double>(), S,
             2 * H, GateParamStore<T>{dA_log.data<T>(), ddt_bias.data<T>(), H});
    });
  });
}

}  // namespace

void register_gdn_gate_kernels(KernelTable& t) {
  t.gdn_gate_forward = gdn_gate_forward;
  t.gdn_gate_backward = gdn_gate_backward;
}

}  // namespace gdn::cuda
