// core/precision.cpp — the process-wide product precision (core/precision.h).
#include "core/precision.h"

#include <cstdlib>

#include "core/check.h"

namespace gdn {

namespace {
Precision g_precision = Precision::Float32;
}

Precision matmul_precision() { return g_precision; }
void set_matmul_precision(Precision p) { g_precision = p; }

namespace {
double g_bf16_gemm_min_flops = -1;  // < 0: not read from the environment yet
}

double bf16_gemm_min_flops() {
  if (g_bf16_gemm_min_flops < 0) {
    g_bf16_gemm_min_flops = 64e6;
    if (const char* e = std::getenv("GDN_GEMM_BF16_MIN_MFLOP"); e && *e) {
      char* end = nullptr;
      const double mflop = std::strtod(e, &end);
      GDN_USER_CHECK(end && *end == '\0' && mflop >= 0, "GDN_GEMM_BF16_MIN_MFLOP must be a number >= 0, got '{}'", e);
      g_bf16_gemm_min_flops = mflop * 1e6;
    }
  }
  return g_bf16_gemm_min_flops;
}
void set_bf16_gemm_min_flops(double flops) { g_bf16_gemm_min_flops = flops; }

}  // namespace gdn
