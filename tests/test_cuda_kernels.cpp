// tests/test_cuda_kernels.cpp — every CUDA kernel against its CPU twin, in the spirit of ggml's test-backend-ops.
//
// Why: ops reach device code only through the kernel table (core/dispatch.h), and the CPU column is the truth. This
// harness calls each cell of GDN_FOR_EACH_KERNEL directly — kernel_table(CPU).NAME and kernel_table(CUDA).NAME on
// twins of the same random inputs — at odd shapes, float32 and float64, with strided and broadcast operands where
// the contract allows them and every optional tensor both present and absent, and compares every output
// (tests/cuda_harness.h: normwise error, integer outputs exact). This file holds the machinery, the registry and the
// doctest cases; the cases are in tests/test_cuda_kernels_basic.cpp (elementwise, reductions),
// tests/test_cuda_kernels_nn.cpp (GEMM, nn, optimizer), tests/test_cuda_kernels_gdn_ops.cpp (Gated DeltaNet conv,
// norms, gate), tests/test_cuda_kernels_gdn.cpp (the delta rule) and tests/test_cuda_kernels_moe.cpp (mixture of
// experts).
//
// Cases:
//   "cuda harness: every kernel in the list has a harness case" — the registry against the X-macro list (no GPU).
//   "cuda: every kernel in the list has a CUDA twin" — register_cuda_kernels fills every cell (no GPU; needs a CUDA
//     build, else SKIPPED).
//   "cuda harness: self-test with the CPU column on both sides" — every case with the CPU as "device" (no GPU):
//     valid inputs, every comparison within tolerance (about 2500 comparisons).
//   "cuda harness: <family>" — the cases of one family on the device (SKIPPED without a CUDA build or device).
// Run alone: gdn_tests -tc='cuda*'. GDN_HARNESS_REPORT=<file> writes every comparison of this process as a markdown
// table (rewritten after each family), so one run of the binary gives the table of every family; under ctest each
// case is its own process and the file holds the last family only.
#include <algorithm>
#include <cstdio>
#include <fstream>
#include <map>
#include <set>

#include "tests/cuda_harness.h"
#include "tests/test_helpers.h"

#if GDN_WITH_CUDA
#include "cuda/cuda_kernels.h"
#endif

namespace gdn::harness {

// ---------------------------------------------------------------------------------------------------------------
// machinery (declared in tests/cuda_harness.h)

std::vector<Row>& report_rows() {
  static std::vector<Row> rows;
  return rows;
}

void write_report() {
  const char* path = std::getenv("GDN_HARNESS_REPORT");
  if (path == nullptr || path[0] == '\0') return;
  std::ofstream f(path);
  if (!f) {
    std::fprintf(stderr, "GDN_HARNESS_REPORT: cannot write %s\n", path);
    return;
  }
  // Summary: one row per (kernel, dtype) with the largest error and the largest error / tolerance.
  struct Summary {
    int checks = 0, failures = 0;
    double max_error = 0, worst_ratio = 0;
  };
  std::map<std::pair<std::string, std::string>, Summary> summary;
  for (const Row& r : report_rows()) {
    Summary& s = summary[{r.kernel, r.dtype}];
    s.checks += 1;
    s.failures += r.pass ? 0 : 1;
    s.max_error = std::max(s.max_error, r.error);
    const double ratio = r.tolerance > 0 ? r.error / r.tolerance : (r.error > 0 ? INFINITY : 0.0);
    s.worst_ratio = std::max(s.worst_ratio, ratio);
  }
  f << "# CUDA kernel harness: GPU vs CPU\n\n";
  f << "Error = max|gpu - cpu| / max|cpu| per output (integer outputs: number of differing elements).\n\n";
  f << "## Per kernel\n\n| kernel | dtype | checks | max error | max error / tolerance | failures |\n"
    << "|---|---|---:|---:|---:|---:|\n";
  for (const auto& [key, s] : summary)
    f << fmt::format("| {} | {} | {} | {:.3e} | {:.3g} | {} |\n", key.first, key.second, s.checks, s.max_error,
                     s.worst_ratio, s.failures);
  f << "\n## Every comparison\n\n| kernel | dtype | shape | output | max error | tolerance | pass |\n"
    << "|---|---|---|---|---:|---:|---|\n";
  for (const Row& r : report_rows())
    f << fmt::format("| {} | {} | {} | {} | {:.3e} | {:.1e} | {} |\n", r.kernel, r.dtype, r.shape, r.output, r.error,
                     r.tolerance, r.pass ? "yes" : "**NO**");
}

Tensor Ctx::with_dtype(const Tensor& x, DType dtype) {
  if (x.dtype() == dtype && x.is_contiguous()) return x;
  Tensor o = Tensor::empty(x.shape(), dtype);
  cpu_kernels().copy(o, x);
  return o;
}

namespace {
// A 1-D tensor over the whole storage of t (on t's device).
Tensor whole_storage(const Tensor& t) {
  const int64_t n = static_cast<int64_t>(t.storage()->nbytes() / element_size(t.dtype()));
  return t.as_strided({n}, {1}, 0);
}

// The host copy of a device tensor with the same geometry (the whole storage is copied; no device kernel runs).
Tensor to_host(const Tensor& gpu) {
  Tensor all = whole_storage(gpu);
  Tensor host = Tensor::empty(all.shape(), gpu.dtype(), kCPU);
  copy_bytes(host.raw_data(), kCPU, gpu.storage()->data(), gpu.device(), gpu.storage()->nbytes());
  return host.as_strided(gpu.shape(), gpu.strides(), gpu.offset());
}
}  // namespace

Tensor Ctx::gpu(const Tensor& cpu) const {
  if (!cpu.defined()) return {};
  GDN_CHECK(cpu.device().is_cpu(), "harness: gpu() expects a CPU tensor");
  Tensor all = whole_storage(cpu);
  Tensor dev_all = Tensor::empty(all.shape(), cpu.dtype(), dev);
  copy_bytes(dev_all.raw_data(), dev, cpu.storage()->data(), kCPU, cpu.storage()->nbytes());
  return dev_all.as_strided(cpu.shape(), cpu.strides(), cpu.offset());
}

void Ctx::record(const std::string& output, double error, double tol) {
  const bool pass = error <= tol;  // false for NaN
  report_rows().push_back({kernel, std::string(dtype_name(dt)), tag, output, error, tol, pass});
  CHECK_MESSAGE(pass, kernel << " " << dtype_name(dt) << " [" << tag << "] output " << output << ": error " << error
                             << " > tolerance " << tol);
}

void Ctx::compare(const std::string& output, const Tensor& gpu, const Tensor& cpu, double tol) {
  GDN_CHECK(gpu.shape() == cpu.shape() && gpu.dtype() == cpu.dtype(), "harness: {} compares {} {} with {} {}",
            output, gpu.dtype(), shape_str(gpu.shape()), cpu.dtype(), shape_str(cpu.shape()));
  const std::vector<double> a = to_host(gpu).to_double_vector(), b = cpu.to_double_vector();
  if (!is_floating(cpu.dtype())) {
    int64_t differ = 0;
    for (size_t i = 0; i < a.size(); ++i) differ += a[i] != b[i] ? 1 : 0;
    record(output, static_cast<double>(differ), 0.0);
    return;
  }
  double worst = 0, scale = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double d = std::fabs(a[i] - b[i]);
    if (!std::isfinite(d) && !(a[i] == b[i])) worst = INFINITY;  // NaN or Inf on one side only
    else if (std::isfinite(d)) worst = std::max(worst, d);
    if (std::isfinite(b[i])) scale = std::max(scale, std::fabs(b[i]));
  }
  record(output, scale > 0 ? worst / scale : worst, tol);
}

void Ctx::compare_outside_view(const std::string& output, const Tensor& gpu, const Tensor& cpu) {
  const std::vector<double> a = whole_storage(to_host(gpu)).to_double_vector();
  const std::vector<double> b = whole_storage(cpu).to_double_vector();
  std::vector<char> inside(b.size(), 0);
  Tensor index = Tensor::empty({static_cast<int64_t>(b.size())}, kInt64);
  int64_t* ip = index.data<int64_t>();
  for (size_t i = 0; i < b.size(); ++i) ip[i] = static_cast<int64_t>(i);
  for (double off : index.as_strided(cpu.shape(), cpu.strides(), cpu.offset()).to_double_vector())
    inside[static_cast<size_t>(off)] = 1;
  int64_t differ = 0;
  for (size_t i = 0; i < b.size(); ++i)
    if (!inside[i] && !(a[i] == b[i] || (std::isnan(a[i]) && std::isnan(b[i])))) ++differ;
  record(output + " (outside the view)", static_cast<double>(differ), 0.0);
}

void Ctx::run(const std::string& shape_tag, const std::function<void()>& body) {
  tag = shape_tag;
  try {
    NoGradGuard no_grad;
    body();
  } catch (const std::exception& e) {
    record(fmt::format("exception: {}", e.what()), INFINITY, 0.0);
  }
}

}  // namespace gdn::harness

// -----------------------------------------------------------------------------------------------------------------
// registry and doctest cases

namespace {

using namespace gdn;
using namespace gdn::harness;

// The families, one doctest case each (the names after "cuda harness: ").
const std::vector<std::string> kFamilies = {"elementwise", "reductions", "gemm", "nn", "gated deltanet ops",
                                            "delta rule recurrent", "delta rule chunked", "moe"};

// Every kernel name of GDN_FOR_EACH_KERNEL, from the list itself.
std::vector<std::string> kernel_list() {
#define GDN_HARNESS_NAME_(NAME, SIG) #NAME,
  return {GDN_FOR_EACH_KERNEL(GDN_HARNESS_NAME_)};
#undef GDN_HARNESS_NAME_
}

std::vector<HarnessCase> all_cases() {
  std::vector<HarnessCase> all = basic_harness_cases();
  for (const HarnessCase& h : nn_harness_cases()) all.push_back(h);
  for (const HarnessCase& h : gdn_ops_harness_cases()) all.push_back(h);
  for (const HarnessCase& h : gdn_harness_cases()) all.push_back(h);
  for (const HarnessCase& h : moe_harness_cases()) all.push_back(h);
  return all;
}

// Runs every case of one family (all families when empty), float32 then float64, with the twins on `dev` and the
// kernels of `under_test`; returns the number of cases run.
int run_cases(const std::string& family, Device dev, const KernelTable& under_test) {
  int ran = 0;
  for (const HarnessCase& h : all_cases()) {
    if (!family.empty() && family != h.family) continue;
    for (DType dt : {kFloat32, kFloat64}) {
      Ctx c(dev, dt, 20240601, under_test);
      c.kernel = h.kernel;
      h.run(c);
    }
    ++ran;
  }
  return ran;
}

// The doctest case of one family: on the CUDA device against the CUDA column, then the report is rewritten.
void run_family(const std::string& family) {
  std::optional<Device> dev = gdn::test::cuda_device_or_skip();
  if (!dev) return;
  CHECK_MESSAGE(run_cases(family, *dev, cuda_kernels()) > 0, "family '" << family << "' has no cases");
  write_report();
}

}  // namespace

TEST_CASE("cuda harness: every kernel in the list has a harness case") {
  std::map<std::string, HarnessCase> cases;
  for (const HarnessCase& h : all_cases()) {
    CHECK_MESSAGE(cases.count(h.kernel) == 0, "two harness cases for kernel " << h.kernel);
    cases.emplace(h.kernel, h);
  }
  const std::vector<std::string> names = kernel_list();
  std::string missing;
  for (const std::string& name : names)
    if (cases.count(name) == 0) missing += " " + name;
  CHECK_MESSAGE(missing.empty(), "kernels of GDN_FOR_EACH_KERNEL without a harness case:" << missing);
  const std::set<std::string> listed(names.begin(), names.end());
  for (const auto& [name, h] : cases) {
    CHECK_MESSAGE(listed.count(name) == 1, "harness case for '" << name << "', which is not in GDN_FOR_EACH_KERNEL");
    CHECK_MESSAGE(std::find(kFamilies.begin(), kFamilies.end(), h.family) != kFamilies.end(),
                  "harness case '" << name << "' names family '" << h.family << "', which no doctest case runs");
  }
}

// The harness checked against itself, no GPU needed: every case runs with the CPU column on both sides, so every
// input is valid for the CPU kernels (no GDN_CHECK fires) and every comparison passes. (Not "exactly zero": with
// several OpenMP threads a few CPU reductions merge per-thread sums in varying order.)
TEST_CASE("cuda harness: self-test with the CPU column on both sides") {
  const size_t first = report_rows().size();
  CHECK(run_cases("", kCPU, cpu_kernels()) == static_cast<int>(kernel_list().size()));
  CHECK(report_rows().size() - first > 1000);
  report_rows().resize(first);  // not part of the GPU report
}

TEST_CASE("cuda: every kernel in the list has a CUDA twin") {
  if (!cuda_compiled_in()) {
    gdn::test::report_skipped("this build has no CUDA backend (configure with -DGDN_CUDA=ON)");
    return;
  }
#if GDN_WITH_CUDA
  KernelTable table;  // a fresh table: only what register_cuda_kernels fills, no device needed
  gdn::cuda::register_cuda_kernels(table);
  std::string missing;
  int n_missing = 0;
#define GDN_HARNESS_TWIN_(NAME, SIG) \
  if (table.NAME == nullptr) {       \
    missing += " " #NAME;            \
    ++n_missing;                     \
  }
  GDN_FOR_EACH_KERNEL(GDN_HARNESS_TWIN_)
#undef GDN_HARNESS_TWIN_
  CHECK_MESSAGE(n_missing == 0, n_missing << " of " << kernel_list().size()
                                          << " kernels have no CUDA twin (register_cuda_kernels leaves them empty):"
                                          << missing);
#endif
}

TEST_CASE("cuda harness: elementwise") { run_family("elementwise"); }
TEST_CASE("cuda harness: reductions") { run_family("reductions"); }
TEST_CASE("cuda harness: gemm") { run_family("gemm"); }
TEST_CASE("cuda harness: nn") { run_family("nn"); }
TEST_CASE("cuda harness: gated deltanet ops") { run_family("gated deltanet ops"); }
TEST_CASE("cuda harness: delta rule recurrent") { run_family("delta rule recurrent"); }
TEST_CASE("cuda harness: delta rule chunked") { run_family("delta rule chunked"); }
TEST_CASE("cuda harness: moe") { run_family("moe"); }
