// tests/test_cuda_kernels_gdn_ops.cpp — the harness cases of the small Gated DeltaNet operators (see
// tests/test_cuda_kernels.cpp for the machinery and the doctest cases that run them): causal conv1d, l2norm, gated
// RMSNorm and the gate, forward and backward. The delta rule's cases are in tests/test_cuda_kernels_gdn.cpp.
//
// Every optional tensor (bias, initial/final states, their gradients) is run present and absent. Tolerances
// (normwise): float64 1e-12, float32 1e-5. For float32 the inputs that the layer's input projection writes in
// bfloat16 under bf16 products (the conv's x, the gated norm's z, the gate's a and b) also run as bfloat16 tensors on
// both sides: both twins read the same bf16 values with float32 arithmetic, so the float32 outputs keep 1e-5, and the
// gradients of those inputs (dx, dz, da, db), which both round once to bfloat16, are compared at 8e-3 (one bf16
// step, 2^-8 relative, where the float32 values straddle a rounding boundary).
#include <string>
#include <utility>
#include <vector>

#include "tests/cuda_harness.h"

namespace gdn::harness {

namespace {

// The storage dtypes of the inputs the layer's input projection writes: the pass dtype, and bfloat16 for float32.
std::vector<DType> projection_dtypes(const Ctx& c) {
  if (c.dt == kFloat32) return {kFloat32, kBFloat16};
  return {c.dt};
}
const char* dtype_tag(DType d) { return d == kBFloat16 ? " (bfloat16 input)" : ""; }
// The tolerance of a gradient written in the input's storage dtype.
double grad_tol(const Ctx& c, DType d) { return d == kBFloat16 ? 8e-3 : c.simple(); }

// ---------------------------------------------------------------------------------------------------------------
// causal conv1d

struct ConvShape {
  int64_t B, T, C, W;
};
// T = 1 and T = 2 are shorter than the W-1 = 3 inputs the final state keeps (part of it comes from the initial
// state); W = 2 and 3 are other widths; C = 300 spans two blocks of channels; T = 130 spans three tiles of the fused
// backward (64 steps each); W = 10 is wider than its register window (kConvMaxW = 8: the multi-kernel path). At W = 4
// float32 takes the 4- and 2-channel-per-thread kernels where C and the part widths allow (C = 100, 64 and 300 as one
// part, 300 and 24 as three; C = 24 with T = 9 also ends in a partial run), the one-channel ones elsewhere.
const ConvShape kConvShapes[] = {{2, 130, 100, 4}, {2, 1, 37, 4},   {1, 2, 64, 4},    {2, 65, 128, 2},
                                 {3, 17, 33, 3},   {2, 40, 300, 4}, {2, 21, 40, 10}, {3, 9, 24, 4}};

std::string conv_tag(const ConvShape& s) { return fmt::format("B{} T{} C{} W{}", s.B, s.T, s.C, s.W); }

// The output (and, backward, its gradient) as one tensor or as three channel parts (the layer's q | k | v).
std::vector<int64_t> conv_parts(int64_t C, bool three) {
  if (!three) return {C};
  return {C / 3, C / 3, C - 2 * (C / 3)};
}
std::vector<Tensor> conv_part_tensors(const ConvShape& s, bool three, DType dt) {
  std::vector<Tensor> out;
  for (int64_t w : conv_parts(s.C, three)) out.push_back(Ctx::out({s.B, s.T, w}, dt));
  return out;
}

void case_causal_conv1d_forward(Ctx& c) {
  for (const ConvShape& s : kConvShapes) {
    for (int flags = 0; flags < 64; ++flags) {
      const bool with_bias = flags & 1, with_init = flags & 2, with_final = flags & 4, silu = flags & 8;
      const bool three = flags & 16;
      const DType xd = flags & 32 ? kBFloat16 : c.dt;  // x as the bf16 projection writes it (float32 only)
      if (xd == kBFloat16 && c.dt != kFloat32) continue;
      c.run(fmt::format("{}{}{}{}{}{}{}", conv_tag(s), with_bias ? " bias" : "", with_init ? " initial_state" : "",
                        with_final ? " final_state" : "", silu ? " silu" : "", three ? " three parts" : "",
                        dtype_tag(xd)),
            [&] {
              Tensor x = Ctx::with_dtype(c.normal({s.B, s.T, s.C}), xd), w = c.normal({s.C, s.W}, 0.5);
              Tensor bias = with_bias ? c.normal({s.C}) : Tensor();
              Tensor init = with_init ? c.normal({s.B, s.C, s.W - 1}) : Tensor();
              const std::vector<Tensor> ys = conv_part_tensors(s, three, c.dt);
              std::vector<Tensor> ygs;
              for (const Tensor& y : ys) ygs.push_back(c.gpu(y));
              Tensor fin = with_final ? Ctx::out({s.B, s.C, s.W - 1}, c.dt) : Tensor(), fing = c.gpu(fin);
              cpu_kernels().causal_conv1d_forward(ys, fin, x, w, bias, init, silu);
              need_cuda(c.under_test().causal_conv1d_forward, "causal_conv1d_forward")(
                  ygs, fing, c.gpu(x), c.gpu(w), c.gpu(bias), c.gpu(init), silu);
              for (size_t i = 0; i < ys.size(); ++i) c.compare(fmt::format("y part {}", i), ygs[i], ys[i], c.simple());
              if (with_final) c.compare("final_state", fing, fin, 0.0);  // copies of inputs: exact
            });
    }
  }
}

void case_causal_conv1d_backward(Ctx& c) {
  for (const ConvShape& s : kConvShapes) {
    // bias: 0 absent, 1 present with dbias, 2 present without dbias; init: 0 absent, 1 with dinit, 2 without.
    for (int bias_mode = 0; bias_mode < 3; ++bias_mode) {
      for (int init_mode = 0; init_mode < 3; ++init_mode) {
        // variant % 3: 0 no SiLU, 1 SiLU, 2 SiLU with dy in three parts; variant >= 3: x and dx in bfloat16 (float32
        // arithmetic, for float32 only).
        for (int variant = 0; variant < 6; ++variant) {
          const bool silu = variant % 3 > 0, three = variant % 3 == 2;
          const DType xd = variant >= 3 ? kBFloat16 : c.dt;
          if (xd == kBFloat16 && c.dt != kFloat32) continue;
          const char* bias_tags[] = {"", " bias+dbias", " bias (no dbias)"};
          const char* init_tags[] = {"", " initial_state+dinitial_state", " initial_state (no dinitial_state)"};
          c.run(fmt::format("{}{}{}{}{}{}", conv_tag(s), bias_tags[bias_mode], init_tags[init_mode],
                            silu ? " silu" : "", three ? " three parts" : "", dtype_tag(xd)),
                [&] {
                  Tensor x = Ctx::with_dtype(c.normal({s.B, s.T, s.C}), xd), w = c.normal({s.C, s.W}, 0.5);
                  std::vector<Tensor> dys, dygs;
                  for (int64_t width : conv_parts(s.C, three)) {
                    dys.push_back(c.normal({s.B, s.T, width}));
                    dygs.push_back(c.gpu(dys.back()));
                  }
                  Tensor bias = bias_mode ? c.normal({s.C}) : Tensor();
                  Tensor init = init_mode ? c.normal({s.B, s.C, s.W - 1}) : Tensor();
                  Tensor dx = Ctx::out({s.B, s.T, s.C}, xd), dw = Ctx::out({s.C, s.W}, c.dt);
                  Tensor db = bias_mode == 1 ? Ctx::out({s.C}, c.dt) : Tensor();
                  Tensor dinit = init_mode == 1 ? Ctx::out({s.B, s.C, s.W - 1}, c.dt) : Tensor();
                  Tensor dxg = c.gpu(dx), dwg = c.gpu(dw), dbg = c.gpu(db), dinitg = c.gpu(dinit);
                  cpu_kernels().causal_conv1d_backward(dx, dw, db, dinit, dys, x, w, bias, init, silu);
                  need_cuda(c.under_test().causal_conv1d_backward, "causal_conv1d_backward")(
                      dxg, dwg, dbg, dinitg, dygs, c.gpu(x), c.gpu(w), c.gpu(bias), c.gpu(init), silu);
                  c.compare(xd == kBFloat16 ? "dx (bfloat16)" : "dx", dxg, dx, grad_tol(c, xd));
                  c.compare("dweight", dwg, dw, c.simple());
                  if (db.defined()) c.compare("dbias", dbg, db, c.simple());
                  if (dinit.defined()) c.compare("dinitial_state", dinitg, dinit, c.simple());
                });
        }
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------------------------
// l2norm, gated RMSNorm, gate

const Shape kRowShapes[] = {{2, 65, 3, 100}, {260, 128}, {37, 32}, {1, 64}, {2, 130, 4, 64}};

Shape without_last(const Shape& s) { return Shape(s.begin(), s.end() - 1); }

void case_l2norm_forward(Ctx& c) {
  for (const Shape& s : kRowShapes) {
    c.run(shape_str(s), [&] {
      Tensor x = c.normal(s, 2.0);
      Tensor y = Ctx::out(s, c.dt), r = Ctx::out(without_last(s), c.dt), yg = c.gpu(y), rg = c.gpu(r);
      cpu_kernels().l2norm_forward(y, r, x, 1e-6);
      need_cuda(c.under_test().l2norm_forward, "l2norm_forward")(yg, rg, c.gpu(x), 1e-6);
      c.compare("y", yg, y, c.simple());
      c.compare("rstd", rg, r, c.simple());
    });
  }
}

void case_l2norm_backward(Ctx& c) {
  for (const Shape& s : kRowShapes) {
    c.run(shape_str(s), [&] {
      Tensor x = c.normal(s, 2.0), dy = c.normal(s);
      Tensor y = Ctx::out(s, c.dt), r = Ctx::out(without_last(s), c.dt);
      cpu_kernels().l2norm_forward(y, r, x, 1e-6);
      Tensor dx = Ctx::out(s, c.dt), dxg = c.gpu(dx);
      cpu_kernels().l2norm_backward(dx, dy, y, r);
      need_cuda(c.under_test().l2norm_backward, "l2norm_backward")(dxg, c.gpu(dy), c.gpu(y), c.gpu(r));
      c.compare("dx", dxg, dx, c.simple());
    });
  }
}

void case_rms_norm_gated_forward(Ctx& c) {
  for (const Shape& s : kRowShapes) {
    for (DType zd : projection_dtypes(c)) {  // z also in bfloat16 for float32 x (the bf16 projection's output)
      c.run(shape_str(s) + dtype_tag(zd), [&] {
        Tensor x = c.normal(s, 2.0), z = Ctx::with_dtype(c.normal(s, 2.0), zd), w = c.normal({s.back()}, 1.0, 1.0);
        for (DType yd : projection_dtypes(c)) {  // y also in bfloat16 for float32 x (out_proj's bf16 operand)
          Tensor y = Ctx::out(s, yd), r = Ctx::out(without_last(s), c.dt), yg = c.gpu(y), rg = c.gpu(r);
          cpu_kernels().rms_norm_gated_forward(y, r, x, z, w, 1e-6);
          need_cuda(c.under_test().rms_norm_gated_forward, "rms_norm_gated_forward")(yg, rg, c.gpu(x), c.gpu(z),
                                                                                     c.gpu(w), 1e-6);
          c.compare(yd == kBFloat16 ? "y (bfloat16)" : "y", yg, y, yd == kBFloat16 ? 8e-3 : c.simple());
          c.compare("rstd", rg, r, c.simple());
        }
      });
    }
  }
}

void case_rms_norm_gated_backward(Ctx& c) {
  for (const Shape& s : kRowShapes) {
    for (DType zd : projection_dtypes(c)) {  // z and dz also in bfloat16 for float32 x
      c.run(shape_str(s) + dtype_tag(zd), [&] {
        Tensor x = c.normal(s, 2.0), z = Ctx::with_dtype(c.normal(s, 2.0), zd), w = c.normal({s.back()}, 1.0, 1.0);
        Tensor dy = c.normal(s), y = Ctx::out(s, c.dt), r = Ctx::out(without_last(s), c.dt);
        cpu_kernels().rms_norm_gated_forward(y, r, x, z, w, 1e-6);
        Tensor dx = Ctx::out(s, c.dt), dz = Ctx::out(s, zd), dw = Ctx::out({s.back()}, c.dt);
        Tensor dxg = c.gpu(dx), dzg = c.gpu(dz), dwg = c.gpu(dw);
        cpu_kernels().rms_norm_gated_backward(dx, dz, dw, dy, x, z, w, r);
        need_cuda(c.under_test().rms_norm_gated_backward, "rms_norm_gated_backward")(
            dxg, dzg, dwg, c.gpu(dy), c.gpu(x), c.gpu(z), c.gpu(w), c.gpu(r));
        c.compare("dx", dxg, dx, c.simple());
        c.compare(zd == kBFloat16 ? "dz (bfloat16)" : "dz", dzg, dz, grad_tol(c, zd));
        c.compare("dw", dwg, dw, c.simple());
      });
    }
  }
}

const Shape kGateShapes[] = {{2, 130, 4}, {2, 65, 3}, {1, 1, 8}, {3, 37, 32}};

// a: N(0, 9), or "large" uniform in [-5, 40] (softplus past its linear threshold 20, g down to about -300).
Tensor gate_a(Ctx& c, const Shape& s, bool large) { return large ? c.uniform(s, -5.0, 40.0) : c.normal(s, 3.0); }

// {a, b}: the two column halves of one [.., 2H] tensor (b | a, the layer's gate projection split), holding the values
// of x and y (undefined: a fresh output's).
std::pair<Tensor, Tensor> gate_halves(const Shape& s, DType dt, const Tensor& x = {}, const Tensor& y = {}) {
  Shape whole = s;
  const int64_t H = whole.back();
  whole.back() = 2 * H;
  const Tensor w = Ctx::out(whole, dt);
  const Strides st = contiguous_strides(whole);
  Tensor a = w.as_strided(s, st, H), b = w.as_strided(s, st, 0);
  if (x.defined()) cpu_kernels().copy(a, x);
  if (y.defined()) cpu_kernels().copy(b, y);
  return {a, b};
}

// Plain, and with a, b (da, db) column windows of one [.., 2H] tensor, read (written) in place. large: A_log up to 90
// and large a, so both guards act (A_log > kGateALogMax, g clamped at kGateMin).
void case_gdn_gate(Ctx& c, bool backward) {
  for (const Shape& s : kGateShapes) {
    for (bool large : {false, true}) {
      for (int mode = 0; mode < 4; ++mode) {  // mode & 1: windows; mode & 2: a, b, da, db in bfloat16 (float32 only)
        const bool windows = mode & 1;
        const DType ad = mode & 2 ? kBFloat16 : c.dt;
        if (ad == kBFloat16 && c.dt != kFloat32) continue;
        const std::string tag = fmt::format("{}{}{}{}", shape_str(s), large ? " large a and A_log (guards)" : "",
                                            windows ? " windows of b | a" : "", dtype_tag(ad));
        c.run(tag, [&] {
          const int64_t H = s.back();
          Tensor a = Ctx::with_dtype(gate_a(c, s, large), ad), b = Ctx::with_dtype(c.normal(s, 3.0), ad);
          if (windows) std::tie(a, b) = gate_halves(s, ad, a, b);
          Tensor A_log = c.uniform({H}, -1.0, large ? 90.0 : 2.0), dt_bias = c.normal({H});
          if (!backward) {
            Tensor g = Ctx::out(s, c.dt), beta = Ctx::out(s, c.dt), gg = c.gpu(g), betag = c.gpu(beta);
            cpu_kernels().gdn_gate_forward(g, beta, a, b, A_log, dt_bias);
            need_cuda(c.under_test().gdn_gate_forward, "gdn_gate_forward")(gg, betag, c.gpu(a), c.gpu(b),
                                                                           c.gpu(A_log), c.gpu(dt_bias));
            c.compare("g", gg, g, c.simple());
            c.compare("beta", betag, beta, c.simple());
            return;
          }
          Tensor dg = c.normal(s), dbeta = c.normal(s), dA = Ctx::out({H}, c.dt), ddt = Ctx::out({H}, c.dt);
          auto [da, db] = windows ? gate_halves(s, ad) : std::pair{Ctx::out(s, ad), Ctx::out(s, ad)};
          Tensor dag = c.gpu(da), dbg = c.gpu(db), dAg = c.gpu(dA), ddtg = c.gpu(ddt);
          cpu_kernels().gdn_gate_backward(da, db, dA, ddt, dg, dbeta, a, b, A_log, dt_bias);
          need_cuda(c.under_test().gdn_gate_backward, "gdn_gate_backward")(
              dag, dbg, dAg, ddtg, c.gpu(dg), c.gpu(dbeta), c.gpu(a), c.gpu(b), c.gpu(A_log), c.gpu(dt_bias));
          c.compare(ad == kBFloat16 ? "da (bfloat16)" : "da", dag, da, grad_tol(c, ad));
          c.compare(ad == kBFloat16 ? "db (bfloat16)" : "db", dbg, db, grad_tol(c, ad));
          c.compare("dA_log", dAg, dA, c.simple());
          c.compare("ddt_bias", ddtg, ddt, c.simple());
        });
      }
    }
  }
}
void case_gdn_gate_forward(Ctx& c) { case_gdn_gate(c, false); }
void case_gdn_gate_backward(Ctx& c) { case_gdn_gate(c, true); }
}  // namespace

std::vector<HarnessCase> gdn_ops_harness_cases() {
  return {
      {"causal_conv1d_forward", "gated deltanet ops", case_causal_conv1d_forward},
      {"causal_conv1d_backward", "gated deltanet ops", case_causal_conv1d_backward},
      {"l2norm_forward", "gated deltanet ops", case_l2norm_forward},
      {"l2norm_backward", "gated deltanet ops", case_l2norm_backward},
      {"rms_norm_gated_forward", "gated deltanet ops", case_rms_norm_gated_forward},
      {"rms_norm_gated_backward", "gated deltanet ops", case_rms_norm_gated_backward},
      {"gdn_gate_forward", "gated deltanet ops", case_gdn_gate_forward},
      {"gdn_gate_backward", "gated deltanet ops", case_gdn_gate_backward},
  };
}

}  // namespace gdn::harness
