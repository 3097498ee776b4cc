// tests/test_cuda.cpp — CUDA ops through the op layer against the CPU on random data (never zeros), including strided
// and broadcast operands, dtype conversion, and a backward pass run on the device. Each kernel on its own, at many
// shapes, is checked by the harness in tests/test_cuda_kernels.cpp.
//
// Runs only where the CUDA backend is compiled in and a device is visible (scripts/gpu_check.sh); elsewhere each case
// prints one "SKIPPED: " line and ctest reports it as skipped. The CPU result is the truth. float64 must agree to
// 1e-12. float32 must agree to 1e-6 where both sides round the same exact operation (add, mul, div, copies, dtype
// conversion) and to 1e-5 where they use different approximations (exp, log, tanh, sigmoid, pow, and the backward built from them) or sum in a
// different order (GEMMs, compared normwise: max |difference| / max |CPU value|). Elementwise relative errors divide by
// 1e-6 + |CPU value|, so entries near zero are held to an absolute error instead.
#include "core/dispatch.h"
#include "tests/test_helpers.h"
#include "train/device.h"

using namespace gdn;

namespace {
// True where the CUDA backend is compiled in and a device is visible; elsewhere prints the one "SKIPPED: " line by
// which ctest reports the case as skipped (tests/test_helpers.h).
bool have_cuda() { return gdn::test::cuda_device_or_skip().has_value(); }

// Elementwise relative error, for elementwise kernels.
double max_rel_diff(const Tensor& gpu, const Tensor& cpu) {
  std::vector<double> a = to_device(gpu, kCPU).to_double_vector(), b = cpu.to_double_vector();
  double worst = 0;
  for (size_t i = 0; i < a.size(); ++i) worst = std::max(worst, std::fabs(a[i] - b[i]) / (1e-6 + std::fabs(b[i])));
  return worst;
}

// max |a - b| / max |b|: for reductions such as GEMM, whose near-zero entries come from cancellation and carry the
// absolute (not relative) rounding error of the sum.
double normwise_diff(const Tensor& gpu, const Tensor& cpu) {
  std::vector<double> a = to_device(gpu, kCPU).to_double_vector(), b = cpu.to_double_vector();
  double err = 0, scale = 1e-30;
  for (size_t i = 0; i < a.size(); ++i) {
    err = std::max(err, std::fabs(a[i] - b[i]));
    scale = std::max(scale, std::fabs(b[i]));
  }
  return err / scale;
}
}  // namespace

TEST_CASE("cuda: fill, unary and scalar kernels match the CPU") {
  if (!have_cuda()) return;
  const Device cuda{DeviceType::CUDA, 0};
  Generator gen(42);
  for (DType dt : {kFloat32, kFloat64}) {
    // float32: the CPU evaluates exp/tanh/logistic with Eigen's vectorised approximations (a few ulp), CUDA with
    // its own libdevice functions, so they may differ by ~1e-6 relative.
    const double tol = dt == kFloat64 ? 1e-12 : 1e-5;
    Tensor x = randn({3, 1000}, gen, dt);
    Tensor xp = rand_uniform({3, 1000}, 0.5, 3.0, gen, dt);  // positive, for log/sqrt/rsqrt
    Tensor xg = to_device(x, cuda), xpg = to_device(xp, cuda);
    REQUIRE(xg.device() == cuda);
    for (auto [name, fn, positive] : std::vector<std::tuple<const char*, Tensor (*)(const Tensor&), bool>>{
             {"neg", neg, false}, {"exp", gdn::exp, false}, {"log", gdn::log, true}, {"sqrt", gdn::sqrt, true},
             {"rsqrt", rsqrt, true}, {"sigmoid", sigmoid, false}, {"silu", silu, false},
             {"softplus", softplus, false}, {"logsigmoid", logsigmoid, false}, {"tanh", gdn::tanh, false},
             {"abs", gdn::abs, false}}) {
      Tensor cpu = fn(positive ? xp : x), gpu = fn(positive ? xpg : xg);
      CHECK_MESSAGE(max_rel_diff(gpu, cpu) < tol, name << " " << dtype_name(dt));
    }
    CHECK(max_rel_diff(xg * 1.7, x * 1.7) < tol);
    CHECK(max_rel_diff(xg + 0.3, x + 0.3) < tol);
    CHECK(max_rel_diff(pow(xpg, 1.5), pow(xp, 1.5)) < tol);
    Tensor f = full({7, 9}, 2.5, dt, cuda);
    for (double v : to_device(f, kCPU).to_double_vector()) CHECK(v == 2.5);
  }
  // The caching allocator reuses freed blocks.
  Allocator* alloc = get_allocator(cuda);
  { Tensor a = Tensor::empty({1 << 20}, kFloat32, cuda); }
  size_t allocs = alloc->stats().num_allocs;
  size_t cached = alloc->stats().cached_bytes;
  CHECK(cached >= (size_t{4} << 20));
  { Tensor b = Tensor::empty({1 << 20}, kFloat32, cuda); }
  CHECK(alloc->stats().num_allocs == allocs + 1);
  CHECK(alloc->stats().cached_bytes == cached);
}

TEST_CASE("cuda: gemm (cuBLAS) matches the CPU for plain, transposed and batched operands") {
  if (!have_cuda()) return;
  const Device cuda{DeviceType::CUDA, 0};
  Generator gen(7);
  NoGradGuard no_grad;  // matmul's backward needs kernels the CUDA column does not have yet
  for (DType dt : {kFloat32, kFloat64}) {
    const double tol = dt == kFloat64 ? 1e-12 : 1e-5;
    Tensor a = randn({37, 19}, gen, dt), b = randn({19, 23}, gen, dt), bt = randn({23, 19}, gen, dt);
    Tensor x = randn({3, 5, 37, 19}, gen, dt), y = randn({3, 5, 19, 11}, gen, dt);
    Tensor ag = to_device(a, cuda), bg = to_device(b, cuda), btg = to_device(bt, cuda);
    Tensor xg = to_device(x, cuda), yg = to_device(y, cuda);
    CHECK(normwise_diff(matmul(ag, bg), matmul(a, b)) < tol);
    CHECK(normwise_diff(linear(ag, btg), linear(a, bt)) < tol);                         // column-major right operand
    CHECK(normwise_diff(matmul(transpose(bg, 0, 1), transpose(ag, 0, 1)),               // both column-major
                       matmul(transpose(b, 0, 1), transpose(a, 0, 1))) < tol);
    CHECK(normwise_diff(matmul(xg, yg), matmul(x, y)) < tol);                           // batched [3,5]
    CHECK(normwise_diff(matmul(xg, transpose(transpose(yg, 2, 3), 2, 3)), matmul(x, y)) < tol);
    CHECK(normwise_diff(linear(xg, btg), linear(x, bt)) < tol);                         // rows of a 4-D input
  }
}

TEST_CASE("cuda: strided copy, dtype conversion, broadcasting binary ops, and a backward on the device") {
  if (!have_cuda()) return;
  const Device cuda{DeviceType::CUDA, 0};
  Generator gen(11);
  for (DType dt : {kFloat32, kFloat64}) {
    const double tol = dt == kFloat64 ? 1e-12 : 1e-6;
    Tensor a = randn({6, 1, 5}, gen, dt), b = randn({4, 1}, gen, dt), c = rand_uniform({6, 4, 5}, 0.5, 2, gen, dt);
    Tensor ag = to_device(a, cuda), bg = to_device(b, cuda), cg = to_device(c, cuda);
    {
      NoGradGuard no_grad;
      CHECK(max_rel_diff(ag + bg, a + b) < tol);  // broadcast to [6, 4, 5]
      CHECK(max_rel_diff(ag - bg, a - b) < tol);
      CHECK(max_rel_diff(ag * cg, a * c) < tol);
      CHECK(max_rel_diff(ag / cg, a / c) < tol);
      // A transposed (strided) operand and a strided copy to contiguous.
      Tensor t = transpose(cg, 0, 2), tc = transpose(c, 0, 2);
      CHECK(max_rel_diff(contiguous(t), contiguous(tc)) == 0);
      CHECK(max_rel_diff(t * t, tc * tc) < tol);
      CHECK(max_rel_diff(exp(t), exp(tc)) < (dt == kFloat64 ? 1e-12 : 1e-5));
      CHECK(max_rel_diff(slice(cg, 1, 1, 4, 2) + 1.0, slice(c, 1, 1, 4, 2) + 1.0) < tol);
    }
    // dtype conversion on the device.
    Tensor other = to_dtype(cg, dt == kFloat32 ? kFloat64 : kFloat32);
    CHECK(max_rel_diff(other, to_dtype(c, other.dtype())) < 1e-6);
    // Autograd through device kernels: y = silu(x) * x, dL/dx with a random cotangent, against the CPU.
    Tensor x = randn({3, 7}, gen, dt), gy = randn({3, 7}, gen, dt);
    Tensor xg = to_device(x, cuda);
    x.set_requires_grad(true);
    xg.set_requires_grad(true);
    backward({silu(x) * x}, {gy});
    backward({silu(xg) * xg}, {to_device(gy, cuda)});
    REQUIRE(xg.grad().defined());
    CHECK(xg.grad().device() == cuda);
    CHECK(max_rel_diff(xg.grad(), x.grad()) < (dt == kFloat64 ? 1e-12 : 1e-5));
  }
  Tensor ids = to_device(Tensor::from_int64({3, -1, 7}, {3}), cuda);
  CHECK(to_device(ids, kCPU).to_int64_vector() == std::vector<int64_t>{3, -1, 7});
}

TEST_CASE("dispatch: an empty kernel cell fails loudly, naming the kernel and the device") {
  // Every CUDA cell is filled now, so the rule is shown on the CPU table with one cell emptied for the test.
  KernelTable& t = kernel_table(DeviceType::CPU);
  auto saved = t.sum_to;
  t.sum_to = nullptr;
  Tensor a = Tensor::from_vector({1, 2, 3, 4}, {2, 2});
  CHECK_THROWS_WITH_AS(sum(a), doctest::Contains("'sum_to' is not implemented for device cpu"), Error);
  t.sum_to = saved;
  CHECK(sum(a).item() == 10.0);
}
