// core/precision.cpp — the process-wide product precision (core/precision.h).
#include "core/precision.h"

namespace gdn {

namespace {
Precision g_precision = Precision::Float32;
}

Precision matmul_precision() { return g_precision; }
void set_matmul_precision(Precision p) { g_precision = p; }

}  // namespace gdn
