// tests/test_cuda_kernels_gdn.cpp — the harness cases of the gated delta rule kernels (see
// tests/test_cuda_kernels.cpp for the machinery and the doctest cases that run them) in recurrent and chunked form,
// forward and backward. The small Gated DeltaNet operators (conv, norms, gate) are in
// tests/test_cuda_kernels_gdn_ops.cpp.
//
// Inputs follow the model's ranges: q, k l2-normalised, beta = sigmoid(N(0, 1)) in (0, 1), gates g = logsigmoid of
// a normal (about -3..0) or "strong" g uniform in [-30, -0.001] (states decay to nothing within a chunk); every
// optional tensor (initial/final states, chunk states, their gradients) is run present and absent. Shapes cover
// T = 1, T below, at, and above the chunk (63, 64, 65, 130 with chunk 64; chunk 16), Hv = Hk and Hv = 2 Hk, K and V
// in {32, 64, 100, 128} with K != V. Tolerances (normwise): float64 1e-10; float32 o 5e-3, dq/dk/dv 8e-3,
// dg/dbeta 2e-2, states 5e-3.
//
// The chunked delta rule also runs every shape and variant under Precision::BFloat16 (core/precision.h). float32
// tensors at the shapes with K and V multiples of 16 (all chunks here are too) take the bf16 tensor-core kernels
// (cuda/delta_rule_chunked_mma*.cuh): compared with the float32 CPU twin at o and states 2e-2, dq/dk/dv and
// dinitial_state 4e-2, dg/dbeta 5e-2 (see kTolBf*), and on the device they must report the tensor-core path and differ
// from the float32 CUDA result by more than 1e-6 somewhere (the tensor cores did run). Every other call under
// BFloat16 (float64 tensors, K or V = 100) must equal the Precision::Float32 CUDA result bit for bit, and the
// Precision::Float32 calls must report a float32 path.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <iterator>
#include <sstream>
#include <string>
#include <vector>

#include "core/precision.h"
#include "tests/cuda_harness.h"

#if GDN_WITH_CUDA
#include "cuda/delta_rule_chunked_path.h"
#endif

namespace gdn::harness {

namespace {

// ---------------------------------------------------------------------------------------------------------------
// gated delta rule

struct DrShape {
  int64_t B, T, Hk, Hv, K, V, chunk;  // chunk: chunked kernels only
};

std::string dr_tag(const DrShape& s, bool chunked) {
  std::string t = fmt::format("B{} T{} Hk{} Hv{} K{} V{}", s.B, s.T, s.Hk, s.Hv, s.K, s.V);
  return chunked ? t + fmt::format(" chunk{}", s.chunk) : t;
}

struct DrInputs {
  Tensor q, k, v, g, beta, s0;
  double scale = 1.0;
};

DrInputs dr_inputs(Ctx& c, const DrShape& s, bool strong_gates, bool with_s0) {
  DrInputs in;
  in.q = l2norm(c.normal({s.B, s.T, s.Hk, s.K}));
  in.k = l2norm(c.normal({s.B, s.T, s.Hk, s.K}));
  in.v = c.normal({s.B, s.T, s.Hv, s.V});
  in.beta = sigmoid(c.normal({s.B, s.T, s.Hv}));
  in.g = strong_gates ? c.uniform({s.B, s.T, s.Hv}, -30.0, -1e-3) : logsigmoid(c.normal({s.B, s.T, s.Hv}));
  if (with_s0) in.s0 = c.normal({s.B, s.Hv, s.K, s.V}, 0.5);
  in.scale = 1.0 / std::sqrt(static_cast<double>(s.K));
  return in;
}

// The variants of the optional tensors and gates: tag, strong gates, initial state, final state (forward) or
// dfinal_state (backward), chunk_states (chunked forward) / dinitial_state (backward).
struct DrVariant {
  const char* tag;
  bool strong, s0, final_or_dfinal, chunk_states_or_dinit;
};
const DrVariant kDrVariants[] = {
    {"no optional tensors", false, false, false, false},
    {"all optional tensors", false, true, true, true},
    {"strong gates, all optional tensors", true, true, true, true},
    {"initial state only", false, true, false, false},
    {"final/dfinal state only", false, false, true, false},
};

const DrShape kRecurrentShapes[] = {{2, 65, 2, 2, 32, 32, 0},   {2, 63, 2, 4, 64, 64, 0},  {1, 130, 2, 4, 100, 100, 0},
                                    {2, 1, 2, 2, 128, 128, 0},  {1, 37, 1, 2, 128, 64, 0}, {2, 16, 2, 2, 64, 100, 0}};

// The last shape's chunk-parallel grids (512 blocks) are larger than two blocks per SM on the lent cards, where the
// launches of the Generic shapes drop to 256 threads; the other shapes' grids are small.
const DrShape kChunkedShapes[] = {
    {2, 130, 2, 2, 64, 64, 64},   {2, 65, 2, 4, 32, 32, 64},  {2, 63, 2, 4, 100, 100, 64}, {1, 1, 2, 2, 128, 128, 64},
    {1, 64, 2, 2, 32, 100, 64},   {2, 130, 2, 4, 128, 128, 64}, {1, 130, 1, 2, 64, 128, 16}, {2, 37, 2, 2, 100, 64, 16},
    {1, 16, 2, 4, 128, 32, 16},   {4, 512, 4, 8, 128, 128, 64}};

// The entries of `all` named by the environment variable `var` ("i,j,...", 0-based), or all of them when it is
// unset: GDN_HARNESS_DR_SHAPES picks entries of kChunkedShapes and GDN_HARNESS_DR_VARIANTS entries of kDrVariants,
// for a racecheck run of the chunked cases that must fit a time limit.
template <typename T, size_t N> std::vector<T> picked(const char* var, const T (&all)[N]) {
  const char* e = std::getenv(var);
  if (!e || !*e) return {std::begin(all), std::end(all)};
  std::vector<T> out;
  std::stringstream list(e);
  for (std::string item; std::getline(list, item, ',');) {
    const size_t i = std::stoul(item);
    REQUIRE_MESSAGE(i < N, var << ": no entry " << i);
    out.push_back(all[i]);
  }
  return out;
}
std::vector<DrShape> chunked_shapes() { return picked("GDN_HARNESS_DR_SHAPES", kChunkedShapes); }
std::vector<DrVariant> chunked_variants() { return picked("GDN_HARNESS_DR_VARIANTS", kDrVariants); }

// float32 tolerances of the delta rule (float64: 1e-10 for all).
constexpr double kTolO = 5e-3, kTolDqkv = 8e-3, kTolDgBeta = 2e-2, kTolState = 5e-3;

void case_recurrent_forward(Ctx& c) {
  for (const DrShape& s : kRecurrentShapes) {
    for (const DrVariant& var : kDrVariants) {
      c.run(fmt::format("{} {}", dr_tag(s, false), var.tag), [&] {
        DrInputs in = dr_inputs(c, s, var.strong, var.s0);
        Tensor o = Ctx::out({s.B, s.T, s.Hv, s.V}, c.dt), og = c.gpu(o);
        Tensor fs = var.final_or_dfinal ? Ctx::out({s.B, s.Hv, s.K, s.V}, c.dt) : Tensor(), fsg = c.gpu(fs);
        cpu_kernels().gated_delta_rule_recurrent_forward(o, fs, in.q, in.k, in.v, in.g, in.beta, in.s0, in.scale);
        need_cuda(c.under_test().gated_delta_rule_recurrent_forward, "gated_delta_rule_recurrent_forward")(
            og, fsg, c.gpu(in.q), c.gpu(in.k), c.gpu(in.v), c.gpu(in.g), c.gpu(in.beta), c.gpu(in.s0), in.scale);
        c.compare("o", og, o, c.delta(kTolO));
        if (fs.defined()) c.compare("final_state", fsg, fs, c.delta(kTolState));
      });
    }
  }
}

// The gradients of one backward call and their comparison.
struct DrGrads {
  Tensor dq, dk, dv, dg, dbeta, ds0;
  DrGrads(const DrShape& s, DType dt, bool with_ds0) {
    dq = Ctx::out({s.B, s.T, s.Hk, s.K}, dt);
    dk = Ctx::out({s.B, s.T, s.Hk, s.K}, dt);
    dv = Ctx::out({s.B, s.T, s.Hv, s.V}, dt);
    dg = Ctx::out({s.B, s.T, s.Hv}, dt);
    dbeta = Ctx::out({s.B, s.T, s.Hv}, dt);
    if (with_ds0) ds0 = Ctx::out({s.B, s.Hv, s.K, s.V}, dt);
  }
  DrGrads(const DrGrads& cpu, const Ctx& c)
      : dq(c.gpu(cpu.dq)), dk(c.gpu(cpu.dk)), dv(c.gpu(cpu.dv)), dg(c.gpu(cpu.dg)), dbeta(c.gpu(cpu.dbeta)),
        ds0(c.gpu(cpu.ds0)) {}
};

void compare_grads(Ctx& c, const DrGrads& gpu, const DrGrads& cpu) {
  c.compare("dq", gpu.dq, cpu.dq, c.delta(kTolDqkv));
  c.compare("dk", gpu.dk, cpu.dk, c.delta(kTolDqkv));
  c.compare("dv", gpu.dv, cpu.dv, c.delta(kTolDqkv));
  c.compare("dg", gpu.dg, cpu.dg, c.delta(kTolDgBeta));
  c.compare("dbeta", gpu.dbeta, cpu.dbeta, c.delta(kTolDgBeta));
  if (cpu.ds0.defined()) c.compare("dinitial_state", gpu.ds0, cpu.ds0, c.delta(kTolState));
}

void case_recurrent_backward(Ctx& c) {
  for (const DrShape& s : kRecurrentShapes) {
    for (const DrVariant& var : kDrVariants) {
      c.run(fmt::format("{} {}", dr_tag(s, false), var.tag), [&] {
        DrInputs in = dr_inputs(c, s, var.strong, var.s0);
        Tensor d_o = c.normal({s.B, s.T, s.Hv, s.V});
        Tensor dfs = var.final_or_dfinal ? c.normal({s.B, s.Hv, s.K, s.V}) : Tensor();
        DrGrads cpu(s, c.dt, var.chunk_states_or_dinit), gpu(cpu, c);
        cpu_kernels().gated_delta_rule_recurrent_backward(cpu.dq, cpu.dk, cpu.dv, cpu.dg, cpu.dbeta, cpu.ds0, d_o, dfs,
                                                          in.q, in.k, in.v, in.g, in.beta, in.s0, in.scale);
        need_cuda(c.under_test().gated_delta_rule_recurrent_backward, "gated_delta_rule_recurrent_backward")(
            gpu.dq, gpu.dk, gpu.dv, gpu.dg, gpu.dbeta, gpu.ds0, c.gpu(d_o), c.gpu(dfs), c.gpu(in.q), c.gpu(in.k),
            c.gpu(in.v), c.gpu(in.g), c.gpu(in.beta), c.gpu(in.s0), in.scale);
        compare_grads(c, gpu, cpu);
      });
    }
  }
}

int64_t n_chunks(const DrShape& s) { return (s.T + s.chunk - 1) / s.chunk; }

// Tolerances of the bf16 tensor-core path against the float32 CPU twin (normwise). bfloat16 keeps 8 significant
// bits (unit roundoff 2^-9, about 2e-3 per rounded operand). Measured on the CPU twin at these shapes and variants,
// rounding only the inputs q, k, v, s0, do, dfinal_state to bf16 already gives o 4.4e-3, states 3.8e-3, dq 6.6e-3,
// dk 2.6e-3, dv 3.3e-3, dinitial_state 5.1e-3, dg 7.2e-3, dbeta 6.6e-3; the kernels round more (W, H and dH every
// chunk, Vn, dVn, P, dP, dQK, dL), about 1.5-2.5x that. Hence o and states 2e-2, dq/dk/dv/dinitial_state 4e-2,
// dg/dbeta 5e-2: the order of FLA's own tests of chunk_gated_delta_rule (about 1e-2 for o, 2e-2 for gradients, on
// bf16 tensors), with room for the extra roundings, and still two orders below what a wrong tile or layout gives.
constexpr double kTolBfO = 2e-2, kTolBfState = 2e-2, kTolBfDqkv = 4e-2, kTolBfDgBeta = 5e-2;

// The chunked shapes the tensor-core path takes (float32 tensors under Precision::BFloat16): K and V multiples of 16
// (a chunk that is not, such as C = T = 1, is padded with zero rows to a multiple of 16 inside the kernels); none
// when GDN_DR_SPLIT=0 or GDN_DR_UNTILED=1 turn the path off for the process.
bool tensor_core_shape(const DrShape& s) {
#if GDN_WITH_CUDA
  if (!cuda::delta_rule_chunked_tensor_cores_allowed()) return false;
#endif
  return s.K % 16 == 0 && s.V % 16 == 0;
}

// The backward's share of the tensor-core shapes: those its host rule sends there (the rest run the float32 kernels,
// bit for bit the Precision::Float32 result).
bool tensor_core_backward_shape(const DrShape& s) {
  if (!tensor_core_shape(s)) return false;
#if GDN_WITH_CUDA
  return cuda::delta_rule_chunked_backward_takes_tensor_cores();
#else
  return true;
#endif
}

// max |a - b| over the elements of two tensors of the same shape (either device).
double max_abs_diff(const Tensor& a, const Tensor& b) {
  const std::vector<double> x = to_device(a, kCPU).to_double_vector(), y = to_device(b, kCPU).to_double_vector();
  double m = 0;
  for (size_t i = 0; i < x.size(); ++i) m = std::max(m, std::fabs(x[i] - y[i]));
  return m;
}

// The path the last chunked forward (backward) ran on the device; "" on the CPU (the harness self-test).
std::string last_path(const Ctx& c, bool backward) {
#if GDN_WITH_CUDA
  if (!c.dev.is_cpu()) {
    const cuda::DeltaRuleChunkedPaths p = cuda::delta_rule_chunked_last_paths();
    return backward ? p.backward : p.forward;
  }
#endif
  return "";
}
constexpr const char* kTensorCorePath = "bf16 tensor cores";

// After a call under Precision::Float32: a float32 path ran (never the tensor cores).
void check_float32_path(Ctx& c, bool backward) {
  const std::string path = last_path(c, backward);
  CHECK_MESSAGE(path != kTensorCorePath, c.kernel << " [" << c.tag << "] ran " << path << " under Precision::Float32");
}

// After a call under Precision::BFloat16 that should take the tensor cores: it did, and the result (the first
// output) differs from the float32 CUDA result by more than 1e-6 somewhere. Device only.
void check_tensor_cores_ran(Ctx& c, bool backward, const Tensor& bf16_result, const Tensor& f32_result) {
  if (c.dev.is_cpu()) return;
  const std::string path = last_path(c, backward);
  CHECK_MESSAGE(path == kTensorCorePath, c.kernel << " [" << c.tag << "] ran " << path << " under BFloat16");
  const double diff = max_abs_diff(bf16_result, f32_result);
  CHECK_MESSAGE(diff > 1e-6, c.kernel << " [" << c.tag << "] bf16 result equals the float32 one (max diff " << diff
                                      << "): the tensor cores did not run");
}

void case_chunked_forward(Ctx& c) {
  for (const DrShape& s : chunked_shapes()) {
    for (const DrVariant& var : chunked_variants()) {
      c.run(fmt::format("{} {}", dr_tag(s, true), var.tag), [&] {
        DrInputs in = dr_inputs(c, s, var.strong, var.s0);
        Tensor o = Ctx::out({s.B, s.T, s.Hv, s.V}, c.dt), og = c.gpu(o);
        Tensor fs = var.final_or_dfinal ? Ctx::out({s.B, s.Hv, s.K, s.V}, c.dt) : Tensor(), fsg = c.gpu(fs);
        Tensor cs = var.chunk_states_or_dinit ? Ctx::out({s.B, s.Hv, n_chunks(s), s.K, s.V}, c.dt) : Tensor();
        Tensor csg = c.gpu(cs);
        cpu_kernels().gated_delta_rule_chunked_forward(o, fs, cs, in.q, in.k, in.v, in.g, in.beta, in.s0, in.scale,
                                                       s.chunk, nullptr);
        auto run_cuda = [&](const Tensor& og_, const Tensor& fsg_, const Tensor& csg_) {
          need_cuda(c.under_test().gated_delta_rule_chunked_forward, "gated_delta_rule_chunked_forward")(
              og_, fsg_, csg_, c.gpu(in.q), c.gpu(in.k), c.gpu(in.v), c.gpu(in.g), c.gpu(in.beta), c.gpu(in.s0),
              in.scale, s.chunk, nullptr);
        };
        {
          PrecisionGuard f32(Precision::Float32);
          run_cuda(og, fsg, csg);
          check_float32_path(c, false);
        }
        c.compare("o", og, o, c.delta(kTolO));
        if (fs.defined()) c.compare("final_state", fsg, fs, c.delta(kTolState));
        if (cs.defined()) c.compare("chunk_states", csg, cs, c.delta(kTolState));
        // The same call under Precision::BFloat16.
        Tensor ob = c.gpu(Ctx::out(o.shape(), c.dt));
        Tensor fsb = fs.defined() ? c.gpu(Ctx::out(fs.shape(), c.dt)) : Tensor();
        Tensor csb = cs.defined() ? c.gpu(Ctx::out(cs.shape(), c.dt)) : Tensor();
        {
          PrecisionGuard bf16(Precision::BFloat16);
          run_cuda(ob, fsb, csb);
        }
        if (c.dt == kFloat32 && tensor_core_shape(s)) {
          check_tensor_cores_ran(c, false, ob, og);
          c.compare("o (bf16 products)", ob, o, kTolBfO);
          if (fs.defined()) c.compare("final_state (bf16 products)", fsb, fs, kTolBfState);
          if (cs.defined()) c.compare("chunk_states (bf16 products)", csb, cs, kTolBfState);
          // A forward that keeps no chunk states (no backward follows: at the fixed shapes the recurrence then
          // stores neither them nor Vn) makes the same output, bit for bit.
          if (cs.defined()) {
            Tensor on = c.gpu(Ctx::out(o.shape(), c.dt));
            {
              PrecisionGuard bf16(Precision::BFloat16);
              run_cuda(on, Tensor(), Tensor());
            }
            c.compare("o (bf16 products, no chunk states, bitwise)", on, to_device(ob, kCPU), 0.0);
          }
        } else {  // the float32 / float64 kernels: bit for bit the Precision::Float32 result
          c.compare("o (BFloat16 setting, bitwise)", ob, to_device(og, kCPU), 0.0);
          if (fs.defined()) c.compare("final_state (BFloat16 setting, bitwise)", fsb, to_device(fsg, kCPU), 0.0);
          if (cs.defined()) c.compare("chunk_states (BFloat16 setting, bitwise)", csb, to_device(csg, kCPU), 0.0);
        }
      });
    }
  }
}

void case_chunked_backward(Ctx& c) {
  for (const DrShape& s : chunked_shapes()) {
    for (const DrVariant& var : chunked_variants()) {
      c.run(fmt::format("{} {}", dr_tag(s, true), var.tag), [&] {
        DrInputs in = dr_inputs(c, s, var.strong, var.s0);
        // chunk_states from the CPU forward: both backwards read the same start states.
        Tensor o = Ctx::out({s.B, s.T, s.Hv, s.V}, c.dt), cs = Ctx::out({s.B, s.Hv, n_chunks(s), s.K, s.V}, c.dt);
        cpu_kernels().gated_delta_rule_chunked_forward(o, Tensor(), cs, in.q, in.k, in.v, in.g, in.beta, in.s0,
                                                       in.scale, s.chunk, nullptr);
        Tensor d_o = c.normal({s.B, s.T, s.Hv, s.V});
        Tensor dfs = var.final_or_dfinal ? c.normal({s.B, s.Hv, s.K, s.V}) : Tensor();
        DrGrads cpu(s, c.dt, var.chunk_states_or_dinit), gpu(cpu, c);
        cpu_kernels().gated_delta_rule_chunked_backward(cpu.dq, cpu.dk, cpu.dv, cpu.dg, cpu.dbeta, cpu.ds0, d_o, dfs,
                                                        in.q, in.k, in.v, in.g, in.beta, cs, in.scale, s.chunk, {});
        auto run_cuda = [&](const DrGrads& gr, const Tensor& states, const std::vector<Tensor>& saved) {
          need_cuda(c.under_test().gated_delta_rule_chunked_backward, "gated_delta_rule_chunked_backward")(
              gr.dq, gr.dk, gr.dv, gr.dg, gr.dbeta, gr.ds0, c.gpu(d_o), c.gpu(dfs), c.gpu(in.q), c.gpu(in.k),
              c.gpu(in.v), c.gpu(in.g), c.gpu(in.beta), states, in.scale, s.chunk, saved);
        };
        {
          PrecisionGuard f32(Precision::Float32);
          run_cuda(gpu, c.gpu(cs), {});
          check_float32_path(c, true);
        }
        compare_grads(c, gpu, cpu);
        // The same call under Precision::BFloat16.
        DrGrads bf_out(s, c.dt, var.chunk_states_or_dinit), bf(bf_out, c);  // fresh NaN outputs
        {
          PrecisionGuard bf16(Precision::BFloat16);
          run_cuda(bf, c.gpu(cs), {});
        }
        if (c.dt == kFloat32 && tensor_core_backward_shape(s)) {
          check_tensor_cores_ran(c, true, bf.dq, gpu.dq);
          c.compare("dq (bf16 products)", bf.dq, cpu.dq, kTolBfDqkv);
          c.compare("dk (bf16 products)", bf.dk, cpu.dk, kTolBfDqkv);
          c.compare("dv (bf16 products)", bf.dv, cpu.dv, kTolBfDqkv);
          c.compare("dg (bf16 products)", bf.dg, cpu.dg, kTolBfDgBeta);
          c.compare("dbeta (bf16 products)", bf.dbeta, cpu.dbeta, kTolBfDgBeta);
          if (cpu.ds0.defined()) c.compare("dinitial_state (bf16 products)", bf.ds0, cpu.ds0, kTolBfDqkv);
        } else {  // the float32 / float64 kernels: bit for bit the Precision::Float32 result
          const char* tag = " (BFloat16 setting, bitwise)";
          c.compare(std::string("dq") + tag, bf.dq, to_device(gpu.dq, kCPU), 0.0);
          c.compare(std::string("dk") + tag, bf.dk, to_device(gpu.dk, kCPU), 0.0);
          c.compare(std::string("dv") + tag, bf.dv, to_device(gpu.dv, kCPU), 0.0);
          c.compare(std::string("dg") + tag, bf.dg, to_device(gpu.dg, kCPU), 0.0);
          c.compare(std::string("dbeta") + tag, bf.dbeta, to_device(gpu.dbeta, kCPU), 0.0);
          if (cpu.ds0.defined()) c.compare(std::string("dinitial_state") + tag, bf.ds0, to_device(gpu.ds0, kCPU), 0.0);
        }
        // The scratch the device forward keeps for the backward (the op layer's path): reusing it gives the bits of
        // a backward that recomputes it, in both precision settings.
        if (c.dev.is_cpu()) return;
        for (Precision pr : {Precision::Float32, Precision::BFloat16}) {
          PrecisionGuard guard(pr);
          const Tensor csg = c.gpu(Ctx::out(cs.shape(), c.dt));
          std::vector<Tensor> saved;
          need_cuda(c.under_test().gated_delta_rule_chunked_forward, "gated_delta_rule_chunked_forward")(
              c.gpu(Ctx::out(o.shape(), c.dt)), Tensor(), csg, c.gpu(in.q), c.gpu(in.k), c.gpu(in.v), c.gpu(in.g),
              c.gpu(in.beta), c.gpu(in.s0), in.scale, s.chunk, &saved);
          CHECK_MESSAGE(!saved.empty(), c.kernel << " [" << c.tag << "] the device forward kept nothing");
          DrGrads fresh_out(s, c.dt, var.chunk_states_or_dinit), fresh(fresh_out, c);
          DrGrads reused_out(s, c.dt, var.chunk_states_or_dinit), reused(reused_out, c);
          run_cuda(fresh, csg, {});
          run_cuda(reused, csg, saved);
          const std::string tag = pr == Precision::Float32 ? " (saved scratch, float32, bitwise)"
                                                           : " (saved scratch, BFloat16 setting, bitwise)";
          c.compare("dq" + tag, reused.dq, to_device(fresh.dq, kCPU), 0.0);
          c.compare("dk" + tag, reused.dk, to_device(fresh.dk, kCPU), 0.0);
          c.compare("dv" + tag, reused.dv, to_device(fresh.dv, kCPU), 0.0);
          c.compare("dg" + tag, reused.dg, to_device(fresh.dg, kCPU), 0.0);
          c.compare("dbeta" + tag, reused.dbeta, to_device(fresh.dbeta, kCPU), 0.0);
          if (cpu.ds0.defined()) c.compare("dinitial_state" + tag, reused.ds0, to_device(fresh.ds0, kCPU), 0.0);
        }
      });
    }
  }
}

}  // namespace

std::vector<HarnessCase> gdn_harness_cases() {
  return {
      {"gated_delta_rule_recurrent_forward", "delta rule recurrent", case_recurrent_forward},
      {"gated_delta_rule_recurrent_backward", "delta rule recurrent", case_recurrent_backward},
      {"gated_delta_rule_chunked_forward", "delta rule chunked", case_chunked_forward},
      {"gated_delta_rule_chunked_backward", "delta rule chunked", case_chunked_backward},
  };
}

}  // namespace gdn::harness
