// tests/cuda_harness.h — the machinery of the CUDA kernel harness (tests/test_cuda_kernels*.cpp): random inputs,
// device twins of CPU tensors with the same geometry, the normwise comparison, and the report table.
//
// A case builds its inputs on the CPU, gives the CUDA kernel a twin of every tensor (same bytes, same shape, strides
// and offset, so strided and broadcast views reach the device unchanged), runs the CPU kernel (the truth) and the
// CUDA kernel, and compares every output. Outputs start as NaN (floating) or a sentinel (integer) on both sides, so
// an element the CUDA kernel forgets to write fails the comparison.
//
// Error of one output: max|gpu - cpu| / max|cpu| (normwise; a NaN or Inf difference counts as infinite), or the
// number of differing elements for integer outputs (which must be 0). Every comparison is one row of the report;
// GDN_HARNESS_REPORT=<file> writes the rows as markdown after every family test.
#pragma once

#include <doctest/doctest.h>

#include <cmath>
#include <cstdlib>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "core/dispatch.h"
#include "ops/ops.h"

namespace gdn::harness {

// One comparison of one output.
struct Row {
  std::string kernel, dtype, shape, output;
  double error = 0, tolerance = 0;
  bool pass = false;
};

std::vector<Row>& report_rows();
// Writes report_rows() as markdown to the file named by GDN_HARNESS_REPORT (nothing when the variable is unset).
void write_report();

// The CUDA kernel of a table cell, or a located error naming the missing twin.
template <typename Fn> Fn need_cuda(Fn fn, const char* name) {
  GDN_CHECK(fn != nullptr, "kernel '{}' has no CUDA twin (empty cell in the CUDA column)", name);
  return fn;
}

// The CPU and CUDA columns of the kernel table.
inline const KernelTable& cpu_kernels() { return kernel_table(DeviceType::CPU); }
inline const KernelTable& cuda_kernels() { return kernel_table(DeviceType::CUDA); }

// Everything a case needs: the device, the dtype of this pass, the generator, and the comparison.
class Ctx {
 public:
  // device: where the twins live; under_test: the kernel column checked against the CPU (the CUDA column, or the
  // CPU column itself for the harness self-test, which runs every case on the CPU and must find zero errors).
  Ctx(Device device, DType dtype, uint64_t seed, const KernelTable& under_test)
      : dev(device), dt(dtype), gen(seed), table_(&under_test) {}
  const KernelTable& under_test() const { return *table_; }

  Device dev;
  DType dt;
  Generator gen;

  // ---- random CPU inputs in the pass dtype (never all zeros) ----
  Tensor normal(const Shape& shape, double scale = 1.0, double mean = 0.0) {
    return randn(shape, gen, dt, kCPU, mean, scale);
  }
  Tensor uniform(const Shape& shape, double lo, double hi) { return rand_uniform(shape, lo, hi, gen, dt); }
  // Integer ids in [0, n) of dtype idt (int32 or int64).
  Tensor ids(const Shape& shape, int64_t n, DType idt = kInt64) {
    std::vector<int64_t> v(static_cast<size_t>(shape_numel(shape)));
    for (auto& x : v) x = static_cast<int64_t>(gen.below(static_cast<uint64_t>(n)));
    return with_dtype(Tensor::from_int64(v, shape), idt);
  }
  // An output buffer: NaN for floating dtypes, -12345 for integers, so unwritten elements are caught.
  static Tensor out(const Shape& shape, DType dtype) {
    const double fill = is_floating(dtype) ? std::numeric_limits<double>::quiet_NaN() : -12345.0;
    return Tensor::from_vector(std::vector<double>(static_cast<size_t>(shape_numel(shape)), fill), shape, dtype);
  }
  // x converted to dtype on the CPU (a fresh contiguous tensor).
  static Tensor with_dtype(const Tensor& x, DType dtype);

  // The device twin of a CPU tensor: its whole storage copied, viewed with the same shape, strides and offset.
  // An undefined tensor (an absent optional) stays undefined.
  Tensor gpu(const Tensor& cpu) const;

  // ---- comparisons (each records one report row and one doctest CHECK) ----
  // Normwise for floating outputs, exact for integer outputs.
  void compare(const std::string& output, const Tensor& gpu, const Tensor& cpu, double tol);
  // For an output view that does not cover its storage: every storage element outside the view must still hold the
  // value it had before the call (the kernel wrote nothing outside its output).
  void compare_outside_view(const std::string& output, const Tensor& gpu, const Tensor& cpu);

  // Runs one shape of the current kernel; an exception (a missing twin, a GDN_CHECK, a CUDA error) becomes a failed
  // row named after the kernel and shape instead of ending the whole family.
  void run(const std::string& tag, const std::function<void()>& body);

  // The tolerances of the brief: simple kernels and the delta rule.
  double simple() const { return dt == kFloat64 ? 1e-12 : 1e-5; }
  double delta(double f32) const { return dt == kFloat64 ? 1e-10 : f32; }

  std::string kernel;  // set by the family runner before each case
  std::string tag;     // set by run()

 private:
  const KernelTable* table_;
  void record(const std::string& output, double error, double tol);
};

// One harness case per kernel of GDN_FOR_EACH_KERNEL: its family (the doctest case that runs it) and the function
// that runs all its shapes for the Ctx's dtype.
struct HarnessCase {
  const char* kernel;
  const char* family;
  void (*run)(Ctx&);
};

// The cases of tests/test_cuda_kernels_basic.cpp (elementwise, reductions), tests/test_cuda_kernels_nn.cpp (gemm,
// nn, optimizer), tests/test_cuda_kernels_gdn_ops.cpp (the small Gated DeltaNet operators),
// tests/test_cuda_kernels_gdn.cpp (the delta rule) and tests/test_cuda_kernels_moe.cpp (mixture of experts).
std::vector<HarnessCase> basic_harness_cases();
std::vector<HarnessCase> nn_harness_cases();
std::vector<HarnessCase> gdn_ops_harness_cases();
std::vector<HarnessCase> gdn_harness_cases();
std::vector<HarnessCase> moe_harness_cases();

}  // namespace gdn::harness
