// ops/cpu/matmul_cpu.cpp — batched GEMM on Eigen.
//
// Each operand matrix is either row-major (column stride 1) or column-major (row stride 1) with any leading
// dimension, so transposed views reach Eigen without a copy (Eigen::Map with an OuterStride). Eigen parallelises a
// large product itself through OpenMP; a batch of small products is split across threads by batch index instead.
#include "ops/cpu/eigen.h"  // first: see that header

#include "ops/cpu/cpu_kernels.h"
#include "ops/cpu/cpu_loops.h"

namespace gdn::cpu {

namespace {

template <typename T> using RowMat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <typename T> using ColMat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::ColMajor>;

// Calls fn with an Eigen map of the rows x cols matrix at p (strides rs, cs in elements).
template <typename T, typename Fn>
void with_matrix(const T* p, int64_t rows, int64_t cols, int64_t rs, int64_t cs, Fn&& fn) {
  using Stride = Eigen::OuterStride<>;
  if (cs == 1 || cols == 1) {
    fn(Eigen::Map<const RowMat<T>, 0, Stride>(p, rows, cols, Stride(std::max(rs, cols))));
  } else if (rs == 1 || rows == 1) {
    fn(Eigen::Map<const ColMat<T>, 0, Stride>(p, rows, cols, Stride(std::max(cs, rows))));
  } else {
    GDN_THROW("gemm: operand with strides ({}, {}) is neither row- nor column-major", rs, cs);
  }
}

void gemm(const Tensor& out, const Tensor& a, const Tensor& b, double alpha, double beta) {
  GDN_CHECK(out.dim() == 3 && a.dim() == 3 && b.dim() == 3, "gemm: expects 3-D [P,M,K] x [P,K,N]");
  GDN_CHECK(out.is_contiguous(), "gemm: output must be contiguous");
  const int64_t P = a.size(0), M = a.size(1), K = a.size(2), N = b.size(2);
  GDN_CHECK(b.size(0) == P && b.size(1) == K && out.size(0) == P && out.size(1) == M && out.size(2) == N,
            "gemm: shapes {} x {} -> {}", shape_str(a.shape()), shape_str(b.shape()), shape_str(out.shape()));
  if (a.dtype() == kBFloat16 || b.dtype() == kBFloat16) {
    // bfloat16 operands with a float32 or bfloat16 out (the CUDA twin's tensor-core path): their exact float32
    // values, multiplied in float32 (a product of two bfloat16 values is exact in float32; only the summation order
    // differs); a bfloat16 out is the float32 result (beta times its float32 value added first) rounded once.
    const bool out_ok = out.dtype() == kFloat32 || out.dtype() == kBFloat16;
    GDN_CHECK(a.dtype() == kBFloat16 && b.dtype() == kBFloat16 && out_ok,
              "gemm: {} x {} -> {} (bfloat16 operands need a float32 or bfloat16 out)", a.dtype(), b.dtype(),
              out.dtype());
    const Tensor af = float32_copy(a), bf = float32_copy(b);
    if (out.dtype() == kFloat32) return gemm(out, af, bf, alpha, beta);
    const Tensor of = beta != 0 ? float32_copy(out) : Tensor::empty(out.shape(), kFloat32, kCPU);
    gemm(of, af, bf, alpha, beta);
    kernels::copy(kCPU, out, of);
    return;
  }
  GDN_CHECK(a.dtype() == out.dtype() && b.dtype() == out.dtype(), "gemm: {} x {} -> {}", a.dtype(), b.dtype(),
            out.dtype());
  dispatch_float(out.dtype(), "gemm", [&](auto tag_) {
    using scalar_t = decltype(tag_);
    using T = scalar_t;
    const T* ap = a.data<T>();
    const T* bp = b.data<T>();
    T* op = out.data<T>();
    const T al = static_cast<T>(alpha), be = static_cast<T>(beta);
    auto one = [&](int64_t p) {
      Eigen::Map<RowMat<T>> o(op + p * M * N, M, N);
      with_matrix(ap + p * a.stride(0), M, K, a.stride(1), a.stride(2), [&](const auto& am) {
        with_matrix(bp + p * b.stride(0), K, N, b.stride(1), b.stride(2), [&](const auto& bm) {
          if (be == T(0))
            o.noalias() = al * (am * bm);
          else
            o = be * o + al * (am * bm);
        });
      });
    };
    if (P == 1) {
      one(0);
    } else {
#pragma omp parallel for schedule(static)
      for (int64_t p = 0; p < P; ++p) one(p);
    }
  });
}

}  // namespace

void register_matmul_kernels(KernelTable& t) { t.gemm = gemm; }

}  // namespace gdn::cpu
