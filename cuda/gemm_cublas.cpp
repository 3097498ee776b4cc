// cuda/gemm_cublas.cpp — the gemm kernel on CUDA through cuBLAS (strided-batched SGEMM / DGEMM).
//
// Our tensors are row-major; cuBLAS is column-major. A row-major M x N matrix C read column-major is C^T, so
// C = A B is computed as C^T = B^T A^T: cuBLAS gets (B, A) in that order with m = N, n = M. A row-major operand is
// already "its transpose, column-major" (op N, leading dimension = its row stride); a column-major operand (a
// transposed view, row stride 1) needs op T with leading dimension = its column stride. So, as on the CPU,
// transposed views reach the GEMM without a copy. The handle is created once and bound to cuda::current_stream().
// cuBLAS takes int dimensions and leading dimensions: larger ones are refused, never silently narrowed.
// dtypes: out float32 or float64 with operands of the same dtype, or bfloat16 operands with a float32 or bfloat16 out
// (cublasGemmStridedBatchedEx with CUDA_R_16BF operands and CUBLAS_COMPUTE_32F: bf16 tensor cores, float32
// accumulation, a bfloat16 out rounded once at the end; ops/matmul.cpp's linear hands its bf16 copies in).
// Precision (core/precision.h): float32 GEMMs run as SGEMM (exact float32 products, no TF32) under
// Precision::Float32. Under Precision::BFloat16, one of at least
// bf16_gemm_min_flops() first copies A and B into compact bfloat16 buffers of the same layout (row- or column-major;
// the copy kernel rounds to nearest even) and takes the bf16 path; a smaller one passes the float32 operands with
// CUBLAS_COMPUTE_32F_FAST_16BF (cuBLAS picks TF32 tensor-core kernels for those). float64 is always DGEMM. The
// handle gets a workspace of its own (allocated once, outside any graph capture) so that cuBLAS never allocates while
// a CUDA graph is being captured.
#include <cublas_v2.h>

#include "core/dispatch.h"
#include "core/precision.h"
#include "cuda/cuda_check.h"
#include "cuda/cuda_kernels.h"
#include "cuda/stream.h"

#define CUBLAS_CHECK(call)                                                                 \
  do {                                                                                     \
    cublasStatus_t st_ = (call);                                                           \
    if (st_ != CUBLAS_STATUS_SUCCESS) GDN_THROW("{} failed: cuBLAS status {}", #call, static_cast<int>(st_)); \
  } while (0)

namespace gdn::cuda {

namespace {

cublasHandle_t handle() {
  static cublasHandle_t h = [] {
    cublasHandle_t created;
    CUBLAS_CHECK(cublasCreate(&created));
    CUBLAS_CHECK(cublasSetStream(created, current_stream()));
    constexpr size_t kWorkspaceBytes = 32u << 20;
    void* workspace = nullptr;
    CUDA_CHECK(cudaMalloc(&workspace, kWorkspaceBytes));  // lives as long as the handle (the process)
    CUBLAS_CHECK(cublasSetWorkspace(created, workspace, kWorkspaceBytes));
    return created;
  }();
  return h;
}

struct Operand {
  cublasOperation_t op;
  int64_t ld;
};

// How cuBLAS should read a rows x cols operand with strides (rs, cs) given in elements.
Operand operand(int64_t rows, int64_t cols, int64_t rs, int64_t cs) {
  if (cs == 1 || cols == 1) return {CUBLAS_OP_N, std::max(rs, cols)};  // row-major: its transpose, column-major
  if (rs == 1 || rows == 1) return {CUBLAS_OP_T, std::max(cs, rows)};  // column-major
  GDN_THROW("CUDA gemm: operand with strides ({}, {}) is neither row- nor column-major", rs, cs);
}

// A float32 operand [P, rows, cols] copied into a compact bfloat16 buffer of the same layout (row-major: rows of
// `cols` elements; column-major: columns of `rows`), returned as a [P, rows, cols] view of it. A batch-broadcast
// operand (batch stride 0) is copied once and keeps stride 0.
Tensor bf16_copy(const Tensor& t) {
  const int64_t P = t.stride(0) == 0 ? 1 : t.size(0), rows = t.size(1), cols = t.size(2);
  const bool row_major = operand(rows, cols, t.stride(1), t.stride(2)).op == CUBLAS_OP_N;
  const int64_t outer = row_major ? rows : cols, inner = row_major ? cols : rows;
  Tensor src = t.as_strided({P, outer, inner}, {t.stride(0), t.stride(row_major ? 1 : 2), t.stride(row_major ? 2 : 1)},
                            t.offset());
  Tensor dst = Tensor::empty({P, outer, inner}, kBFloat16, t.device());
  kernels::copy(t.device(), dst, src);
  const int64_t bs = P > 1 ? outer * inner : 0;
  return row_major ? dst.as_strided(t.shape(), {bs, inner, 1}, 0) : dst.as_strided(t.shape(), {bs, 1, inner}, 0);
}

void gemm(const Tensor& out, const Tensor& a, const Tensor& b, double alpha, double beta) {
  GDN_CHECK(out.dim() == 3 && a.dim() == 3 && b.dim() == 3 && out.is_contiguous(), "CUDA gemm: 3-D, contiguous out");
  const int64_t P = a.size(0), M = a.size(1), K = a.size(2), N = b.size(2);
  GDN_CHECK(b.size(0) == P && b.size(1) == K && out.size(1) == M && out.size(2) == N, "CUDA gemm: {} x {} -> {}",
            shape_str(a.shape()), shape_str(b.shape()), shape_str(out.shape()));
  const bool bf16_operands = a.dtype() == kBFloat16;
  GDN_CHECK(a.dtype() == b.dtype() &&
                (bf16_operands ? out.dtype() == kFloat32 || out.dtype() == kBFloat16 : out.dtype() == a.dtype()),
            "CUDA gemm: {} x {} -> {} (operands of the out's dtype, or bfloat16 ones with a float32 or bfloat16 out)",
            a.dtype(), b.dtype(), out.dtype());
  const bool bf16_precision = out.dtype() == kFloat32 && matmul_precision() == Precision::BFloat16;
  if (!bf16_operands && bf16_precision && 2.0 * static_cast<double>(P) * M * N * K >= bf16_gemm_min_flops()) {
    gemm(out, bf16_copy(a), bf16_copy(b), alpha, beta);
    return;
  }
  const Operand oa = operand(M, K, a.stride(1), a.stride(2)), ob = operand(K, N, b.stride(1), b.stride(2));
  const int64_t sa = P > 1 ? a.stride(0) : 0, sb = P > 1 ? b.stride(0) : 0;
  constexpr int64_t kIntMax = 2147483647;
  for (int64_t d : {P, M, N, K, oa.ld, ob.ld})
    GDN_CHECK(d <= kIntMax, "CUDA gemm: dimension {} of {} x {} does not fit cuBLAS's int", d, shape_str(a.shape()),
              shape_str(b.shape()));
  const float al = static_cast<float>(alpha), be = static_cast<float>(beta);
  if (bf16_operands) {
    const bool bf16_out = out.dtype() == kBFloat16;
    CUBLAS_CHECK(cublasGemmStridedBatchedEx(handle(), ob.op, oa.op, N, M, K, &al, b.data<bfloat16>(), CUDA_R_16BF,
                                            ob.ld, sb, a.data<bfloat16>(), CUDA_R_16BF, oa.ld, sa, &be,
                                            out.raw_data(), bf16_out ? CUDA_R_16BF : CUDA_R_32F, N, M * N, P,
                                            CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  } else if (bf16_precision) {
    CUBLAS_CHECK(cublasGemmStridedBatchedEx(handle(), ob.op, oa.op, N, M, K, &al, b.data<float>(), CUDA_R_32F, ob.ld,
                                            sb, a.data<float>(), CUDA_R_32F, oa.ld, sa, &be, out.data<float>(),
                                            CUDA_R_32F, N, M * N, P, CUBLAS_COMPUTE_32F_FAST_16BF,
                                            CUBLAS_GEMM_DEFAULT));
  } else if (out.dtype() == kFloat32) {
    CUBLAS_CHECK(cublasSgemmStridedBatched(handle(), ob.op, oa.op, N, M, K, &al, b.data<float>(), ob.ld, sb,
                                           a.data<float>(), oa.ld, sa, &be, out.data<float>(), N, M * N, P));
  } else if (out.dtype() == kFloat64) {
    CUBLAS_CHECK(cublasDgemmStridedBatched(handle(), ob.op, oa.op, N, M, K, &alpha, b.data<double>(), ob.ld, sb,
                                           a.data<double>(), oa.ld, sa, &beta, out.data<double>(), N, M * N, P));
  } else {
    GDN_THROW("CUDA gemm: unsupported dtype {}", out.dtype());
  }
}

}  // namespace

void register_gemm_kernels(KernelTable& t) { t.gemm = gemm; }

}  // namespace gdn::cuda
