// tests/test_cuda_kernels_nn.cpp — the harness cases of the GEMM, nn and optimizer kernels (see
// tests/test_cuda_kernels.cpp for the machinery and the doctest cases that run them): gemm (row- and column-major
// operands, batches; bfloat16 operands; float32 operands under bf16 products), embedding, cross-entropy (float32 and
// bfloat16 dlogits), RMSNorm, sum_squares and the list AdamW. Tolerances (normwise): float64 1e-12, float32 1e-5;
// gathers and integer outputs exact.
#include <algorithm>
#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include "core/precision.h"
#include "tests/cuda_harness.h"
#include "tests/test_helpers.h"

namespace gdn::harness {

namespace {

// ---------------------------------------------------------------------------------------------------------------
// gemm

// An operand [P, rows, cols]: row-major with leading dimension ld >= cols, or column-major (the transposed view of
// a row-major [P, cols, rows] with leading dimension ld >= rows); batch stride 0 when broadcast.
Tensor gemm_operand(Ctx& c, int64_t P, int64_t rows, int64_t cols, bool col_major, int64_t extra_ld,
                    bool broadcast_batch) {
  const int64_t inner = col_major ? rows : cols, outer = col_major ? cols : rows, ld = inner + extra_ld;
  const int64_t Pb = broadcast_batch ? 1 : P;
  Tensor base = c.normal({Pb, outer, ld});
  const int64_t bs = broadcast_batch ? 0 : outer * ld;
  return col_major ? base.as_strided({P, rows, cols}, {bs, 1, ld}, 0) : base.as_strided({P, rows, cols}, {bs, ld, 1}, 0);
}

void case_gemm(Ctx& c) {
  struct G {
    int64_t P, M, K, N;
    bool a_col, b_col;
    int64_t a_ld, b_ld;  // extra leading dimension
    bool b_bcast;
    double alpha, beta;
  };
  const G cases[] = {
      {1, 37, 100, 23, false, false, 0, 0, false, 1.0, 0.0},  {1, 37, 100, 23, true, false, 0, 0, false, 1.0, 0.0},
      {1, 37, 100, 23, false, true, 0, 0, false, 1.0, 0.0},   {1, 37, 100, 23, true, true, 0, 0, false, 1.0, 0.0},
      {5, 33, 64, 17, false, false, 0, 0, false, 0.7, 0.3},   {5, 33, 64, 17, true, true, 0, 0, false, -1.0, 1.0},
      {3, 37, 100, 23, false, false, 28, 5, false, 1.0, 0.0}, {4, 65, 32, 128, false, true, 0, 0, true, 1.0, 0.0},
      {1, 1, 100, 37, false, false, 0, 0, false, 1.0, 0.0},   {2, 37, 1, 23, false, false, 0, 0, false, 1.0, 0.0},
      {2, 130, 128, 100, false, true, 0, 0, false, 0.125, 0.0}};
  for (const G& g : cases) {
    const std::string tag =
        fmt::format("P{} M{} K{} N{} a {}{} b {}{}{} alpha {} beta {}", g.P, g.M, g.K, g.N, g.a_col ? "col" : "row",
                    g.a_ld ? fmt::format(" ld+{}", g.a_ld) : "", g.b_col ? "col" : "row",
                    g.b_ld ? fmt::format(" ld+{}", g.b_ld) : "", g.b_bcast ? " batch-broadcast" : "", g.alpha, g.beta);
    c.run(tag, [&] {
      Tensor a = gemm_operand(c, g.P, g.M, g.K, g.a_col, g.a_ld, false);
      Tensor b = gemm_operand(c, g.P, g.K, g.N, g.b_col, g.b_ld, g.b_bcast);
      // beta != 0 accumulates into out: a random start; beta = 0 ignores it (NaN start, as for every output).
      Tensor o = g.beta != 0 ? c.normal({g.P, g.M, g.N}) : Ctx::out({g.P, g.M, g.N}, c.dt);
      Tensor og = c.gpu(o);
      cpu_kernels().gemm(o, a, b, g.alpha, g.beta);
      need_cuda(c.under_test().gemm, "gemm")(og, c.gpu(a), c.gpu(b), g.alpha, g.beta);
      c.compare("out", og, o, c.simple());
    });
  }
  if (c.dt != kFloat32) return;
  // bfloat16 operands with a float32 out (the path of ops/matmul.cpp's linear under bf16 products): both twins
  // multiply the same bf16 values, whose products are exact in float32, so only the summation order differs.
  // Under Precision::BFloat16 with float32 operands, a GEMM of at least bf16_gemm_min_flops() makes those bf16
  // copies itself: it must equal the float32 product of the operands rounded to bfloat16; a smaller one runs on
  // TF32 kernels, within 5e-3 of the float32 product. The first three shapes are above the default 64 MFLOP, the
  // last below. (The self-test's CPU column has no such path and skips those rows.)
  const G bf16_cases[] = {{1, 256, 320, 512, false, true, 0, 0, false, 1.0, 0.0},
                          {1, 256, 320, 512, true, false, 8, 0, false, 1.0, 1.0},
                          {3, 130, 256, 400, false, false, 0, 24, true, 0.5, 0.0},
                          {1, 37, 100, 23, false, true, 0, 0, false, 1.0, 0.0}};
  auto rounded = [](const Tensor& x) { return Ctx::with_dtype(Ctx::with_dtype(x, kBFloat16), kFloat32); };
  const bool cuda_under_test = &c.under_test() != &cpu_kernels();
  for (const G& g : bf16_cases) {
    const double flops = 2.0 * static_cast<double>(g.P) * g.M * g.N * g.K;
    const bool bf16_copies = flops >= bf16_gemm_min_flops();
    const std::string tag = fmt::format("P{} M{} K{} N{} a {} b {}{} beta {}", g.P, g.M, g.K, g.N,
                                        g.a_col ? "col" : "row", g.b_col ? "col" : "row",
                                        g.b_bcast ? " batch-broadcast" : "", g.beta);
    c.run("bfloat16 operands: " + tag, [&] {
      // A compact bf16 buffer read row- or column-major, batch-broadcast when asked.
      auto bf16_operand = [&](int64_t rows, int64_t cols, bool col_major, bool broadcast) {
        Tensor t = Ctx::with_dtype(c.normal({g.P, rows, cols}), kBFloat16);
        const int64_t batch = broadcast ? 0 : rows * cols;
        return t.as_strided({g.P, rows, cols}, {batch, col_major ? 1 : cols, col_major ? rows : 1}, 0);
      };
      Tensor a = bf16_operand(g.M, g.K, g.a_col, false), b = bf16_operand(g.K, g.N, g.b_col, g.b_bcast);
      // out in float32, and in bfloat16 (the FFN's gate | up products under bf16 products: rounded once).
      for (DType od : {kFloat32, kBFloat16}) {
        Tensor o = g.beta != 0 ? Ctx::with_dtype(c.normal({g.P, g.M, g.N}), od) : Ctx::out({g.P, g.M, g.N}, od);
        Tensor og = c.gpu(o);
        cpu_kernels().gemm(o, a, b, g.alpha, g.beta);
        need_cuda(c.under_test().gemm, "gemm")(og, c.gpu(a), c.gpu(b), g.alpha, g.beta);
        c.compare(od == kBFloat16 ? "out (bfloat16)" : "out", og, o, od == kBFloat16 ? 8e-3 : c.simple());
      }
    });
    if (!cuda_under_test) continue;
    c.run(fmt::format("Precision::BFloat16 ({}): {}", bf16_copies ? "bf16 copies" : "TF32", tag), [&] {
      Tensor a = gemm_operand(c, g.P, g.M, g.K, g.a_col, g.a_ld, false);
      Tensor b = gemm_operand(c, g.P, g.K, g.N, g.b_col, g.b_ld, g.b_bcast);
      Tensor o = g.beta != 0 ? c.normal({g.P, g.M, g.N}) : Ctx::out({g.P, g.M, g.N}, c.dt);
      Tensor og = c.gpu(o);
      {
        PrecisionGuard bf16(Precision::BFloat16);
        need_cuda(c.under_test().gemm, "gemm")(og, c.gpu(a), c.gpu(b), g.alpha, g.beta);
      }
      if (bf16_copies) {
        cpu_kernels().gemm(o, rounded(a), rounded(b), g.alpha, g.beta);
        c.compare("out (bf16-rounded operands)", og, o, c.simple());
      } else {
        cpu_kernels().gemm(o, a, b, g.alpha, g.beta);
        c.compare("out (TF32)", og, o, 5e-3);
      }
    });
  }
}

// ---------------------------------------------------------------------------------------------------------------
// nn: embedding, cross-entropy, RMSNorm, AdamW

void case_embedding_forward(Ctx& c) {
  for (DType idt : {kInt32, kInt64}) {
    const std::tuple<int64_t, int64_t, int64_t> shapes[] = {{130, 50, 100}, {37, 1000, 37}, {1, 7, 128}};
    for (auto [N, V, D] : shapes) {
      c.run(fmt::format("N{} V{} D{} ids {}", N, V, D, dtype_name(idt)), [&] {
        Tensor w = c.normal({V, D}), ids = c.ids({N}, V, idt);  // N > V: ids repeat
        Tensor o = Ctx::out({N, D}, c.dt), og = c.gpu(o);
        cpu_kernels().embedding_forward(o, w, ids);
        need_cuda(c.under_test().embedding_forward, "embedding_forward")(og, c.gpu(w), c.gpu(ids));
        c.compare("out", og, o, 0.0);  // a gather: exact
      });
    }
  }
}

void case_embedding_backward(Ctx& c) {
  for (DType idt : {kInt32, kInt64}) {
    // V50 < N: repeated ids (sums); V = N: the MoE-like scatter (rows to rows, some hit twice, some never).
    const std::tuple<int64_t, int64_t, int64_t> shapes[] = {{130, 50, 100}, {260, 260, 64}, {37, 1000, 37}, {1, 7, 128}};
    for (auto [N, V, D] : shapes) {
      c.run(fmt::format("N{} V{} D{} ids {}", N, V, D, dtype_name(idt)), [&] {
        Tensor dout = c.normal({N, D}), ids = c.ids({N}, V, idt);
        Tensor dw = Ctx::out({V, D}, c.dt), dwg = c.gpu(dw);
        cpu_kernels().embedding_backward(dw, dout, ids);
        need_cuda(c.under_test().embedding_backward, "embedding_backward")(dwg, c.gpu(dout), c.gpu(ids));
        c.compare("dweight", dwg, dw, c.simple());
      });
    }
    c.run(fmt::format("N64 V64 D100 permutation ids {}", dtype_name(idt)), [&] {
      std::vector<int64_t> perm(64);
      for (int64_t i = 0; i < 64; ++i) perm[static_cast<size_t>(i)] = (i * 37 + 11) % 64;
      Tensor dout = c.normal({64, 100}), ids = Ctx::with_dtype(Tensor::from_int64(perm, {64}), idt);
      Tensor dw = Ctx::out({64, 100}, c.dt), dwg = c.gpu(dw);
      cpu_kernels().embedding_backward(dw, dout, ids);
      need_cuda(c.under_test().embedding_backward, "embedding_backward")(dwg, c.gpu(dout), c.gpu(ids));
      c.compare("dweight", dwg, dw, 0.0);  // one row each: exact
    });
  }
}

// Targets in [0, V) with about a quarter of the rows (or all, when every_row) set to ignore_index.
Tensor ce_targets(Ctx& c, int64_t N, int64_t V, int64_t ignore_index, bool every_row) {
  std::vector<int64_t> t = c.ids({N}, V).to_int64_vector();
  for (auto& x : t)
    if (every_row || c.gen.below(4) == 0) x = ignore_index;
  return Tensor::from_int64(t, {N});
}

struct CeShape {
  int64_t N, V, ignore_index;
  bool all_ignored;
};
const CeShape kCeShapes[] = {{130, 1000, -100, false}, {37, 257, -100, false}, {64, 32000, -100, false},
                             {37, 100, 3, false},      {16, 50, -100, true},   {1, 37, -100, false}};
std::string ce_tag(const CeShape& s) {
  return fmt::format("N{} V{} ignore_index {}{}", s.N, s.V, s.ignore_index, s.all_ignored ? " all rows ignored" : "");
}

// Logits in the dtype, and for float32 also in bfloat16 (the bf16 lm_head's in a training step: both twins read the
// same bf16 values with float32 arithmetic).
void case_cross_entropy_forward(Ctx& c) {
  for (const CeShape& s : kCeShapes) {
    c.run(ce_tag(s), [&] {
      Tensor logits = c.normal({s.N, s.V}, 4.0), t = ce_targets(c, s.N, s.V, s.ignore_index, s.all_ignored);
      for (DType ld : {c.dt, kBFloat16}) {
        if (ld == kBFloat16 && c.dt != kFloat32) continue;
        const Tensor lx = Ctx::with_dtype(logits, ld);
        const std::string what = ld == kBFloat16 ? " (bfloat16 logits)" : "";
        Tensor loss = Ctx::out({1}, c.dt), lse = Ctx::out({s.N}, c.dt), count = Ctx::out({1}, c.dt);
        Tensor lg = c.gpu(loss), lseg = c.gpu(lse), cg = c.gpu(count);
        cpu_kernels().cross_entropy_forward(loss, lse, count, lx, t, s.ignore_index);
        need_cuda(c.under_test().cross_entropy_forward, "cross_entropy_forward")(lg, lseg, cg, c.gpu(lx), c.gpu(t),
                                                                                 s.ignore_index);
        c.compare("loss" + what, lg, loss, c.simple());
        c.compare("lse" + what, lseg, lse, c.simple());
        c.compare("count" + what, cg, count, 0.0);
      }
    });
  }
}

void case_cross_entropy_backward(Ctx& c) {
  for (const CeShape& s : kCeShapes) {
    c.run(ce_tag(s), [&] {
      Tensor logits = c.normal({s.N, s.V}, 4.0), t = ce_targets(c, s.N, s.V, s.ignore_index, s.all_ignored);
      Tensor loss = Ctx::out({1}, c.dt), lse = Ctx::out({s.N}, c.dt), count = Ctx::out({1}, c.dt);
      cpu_kernels().cross_entropy_forward(loss, lse, count, logits, t, s.ignore_index);  // lse, count: inputs
      Tensor dloss = c.uniform({1}, 0.5, 2.0);
      Tensor dl = Ctx::out({s.N, s.V}, c.dt), dlg = c.gpu(dl);
      cpu_kernels().cross_entropy_backward(dl, dloss, logits, lse, count, t, s.ignore_index);
      need_cuda(c.under_test().cross_entropy_backward, "cross_entropy_backward")(
          dlg, c.gpu(dloss), c.gpu(logits), c.gpu(lse), c.gpu(count), c.gpu(t), s.ignore_index);
      c.compare("dlogits", dlg, dl, c.simple());
      if (c.dt != kFloat32) return;
      // bfloat16 dlogits (linear_cross_entropy's bf16 products): both twins round their float32 values once, so
      // they differ only where those values straddle a rounding boundary (one bf16 step, 2^-8 relative).
      Tensor db = Ctx::out({s.N, s.V}, kBFloat16), dbg = c.gpu(db);
      cpu_kernels().cross_entropy_backward(db, dloss, logits, lse, count, t, s.ignore_index);
      need_cuda(c.under_test().cross_entropy_backward, "cross_entropy_backward")(
          dbg, c.gpu(dloss), c.gpu(logits), c.gpu(lse), c.gpu(count), c.gpu(t), s.ignore_index);
      c.compare("dlogits (bfloat16)", dbg, db, 8e-3);
      // bfloat16 logits and dlogits.
      const Tensor lb = Ctx::with_dtype(logits, kBFloat16);
      Tensor dbb = Ctx::out({s.N, s.V}, kBFloat16), dbbg = c.gpu(dbb);
      cpu_kernels().cross_entropy_backward(dbb, dloss, lb, lse, count, t, s.ignore_index);
      need_cuda(c.under_test().cross_entropy_backward, "cross_entropy_backward")(
          dbbg, c.gpu(dloss), c.gpu(lb), c.gpu(lse), c.gpu(count), c.gpu(t), s.ignore_index);
      c.compare("dlogits (bfloat16 logits)", dbbg, dbb, 8e-3);
    });
  }
}

// The one-pass forward + backward against the CPU twin (its forward, then its backward with dloss / count = dscale),
// float32 / float64 dlogits, bfloat16 dlogits for float32 logits, and both bfloat16. Float32 / bfloat16 rows of a
// multiple of 16 bytes up to V = 49152 take the register kernel (V = 49152: its full rows, with an ignore_index that
// is a class; V = 64 all rows ignored), the others shared memory; the widest (V = 50000, 195 KiB of float32) too
// (its float64 rows the two-pass fallback).
void case_cross_entropy_fused(Ctx& c) {
  std::vector<CeShape> shapes(std::begin(kCeShapes), std::end(kCeShapes));
  shapes.insert(shapes.end(), {{3, 50000, -100, false}, {5, 49152, 7, false}, {6, 64, -100, true}});
  for (const CeShape& s : shapes) {
    c.run(ce_tag(s), [&] {
      Tensor logits = c.normal({s.N, s.V}, 4.0), t = ce_targets(c, s.N, s.V, s.ignore_index, s.all_ignored);
      Tensor dscale = c.uniform({1}, 0.01, 0.5);
      // (logits, dlogits): the dtype's, bfloat16 dlogits for float32 logits, and both bfloat16.
      std::vector<std::pair<DType, DType>> dtypes{{c.dt, c.dt}};
      if (c.dt == kFloat32) dtypes.insert(dtypes.end(), {{kFloat32, kBFloat16}, {kBFloat16, kBFloat16}});
      for (auto [ld, dld] : dtypes) {
        const Tensor lx = Ctx::with_dtype(logits, ld);
        const std::string what = ld == kBFloat16 ? " (bfloat16 logits)" : dld == kBFloat16 ? " (bfloat16)" : "";
        Tensor loss = Ctx::out({1}, c.dt), lse = Ctx::out({s.N}, c.dt), count = Ctx::out({1}, c.dt);
        Tensor dl = Ctx::out({s.N, s.V}, dld);
        Tensor lossg = c.gpu(loss), lseg = c.gpu(lse), countg = c.gpu(count), dlg = c.gpu(dl);
        cpu_kernels().cross_entropy_fused(loss, lse, count, dl, dscale, lx, t, s.ignore_index);
        need_cuda(c.under_test().cross_entropy_fused, "cross_entropy_fused")(
            lossg, lseg, countg, dlg, c.gpu(dscale), c.gpu(lx), c.gpu(t), s.ignore_index);
        c.compare("loss" + what, lossg, loss, c.simple());
        c.compare("lse" + what, lseg, lse, c.simple());
        c.compare("count" + what, countg, count, 0.0);
        c.compare("dlogits" + what, dlg, dl, dld == kBFloat16 ? 8e-3 : c.simple());
      }
    });
  }
}

const Shape kNormShapes[] = {{37, 100}, {260, 128}, {2, 65, 64}, {1, 32}, {5, 1000}};

// Both kernels plain and with the residual fused in (forward: h = x + r normalised; backward: dx + dres).
void case_rms_norm_forward(Ctx& c) {
  for (const Shape& s : kNormShapes) {
    for (bool residual : {false, true}) {
      c.run(shape_str(s) + (residual ? " residual" : ""), [&] {
        const int64_t D = s.back(), N = shape_numel(s) / D;
        Tensor x = c.normal(s, 2.0), w = c.normal({D}, 1.0, 1.0), res = residual ? c.normal(s) : Tensor();
        for (DType yd : {c.dt, kBFloat16}) {  // y also in bfloat16 for float32 x (a bf16 GEMM's operand)
          if (yd == kBFloat16 && c.dt != kFloat32) continue;
          Tensor y = Ctx::out(s, yd), r = Ctx::out({N}, c.dt), yg = c.gpu(y), rg = c.gpu(r);
          Tensor h = residual ? Ctx::out(s, c.dt) : Tensor(), hg = c.gpu(h);
          cpu_kernels().rms_norm_forward(y, r, h, x, res, w, 1e-6);
          need_cuda(c.under_test().rms_norm_forward, "rms_norm_forward")(yg, rg, hg, c.gpu(x), c.gpu(res), c.gpu(w),
                                                                         1e-6);
          c.compare(yd == kBFloat16 ? "y (bfloat16)" : "y", yg, y, yd == kBFloat16 ? 8e-3 : c.simple());
          c.compare("rstd", rg, r, c.simple());
          if (residual) c.compare("h = x + r", hg, h, 0.0);  // one rounded add: exact
        }
      });
    }
  }
}

void case_rms_norm_backward(Ctx& c) {
  for (const Shape& s : kNormShapes) {
    for (bool residual : {false, true}) {
      c.run(shape_str(s) + (residual ? " residual gradient" : ""), [&] {
        const int64_t D = s.back(), N = shape_numel(s) / D;
        Tensor x = c.normal(s, 2.0), w = c.normal({D}, 1.0, 1.0), dy = c.normal(s);
        Tensor dres = residual ? c.normal(s) : Tensor();
        Tensor y = Ctx::out(s, c.dt), r = Ctx::out({N}, c.dt);
        cpu_kernels().rms_norm_forward(y, r, Tensor(), x, Tensor(), w, 1e-6);
        Tensor dx = Ctx::out(s, c.dt), dw = Ctx::out({D}, c.dt), dxg = c.gpu(dx), dwg = c.gpu(dw);
        cpu_kernels().rms_norm_backward(dx, dw, dy, dres, x, w, r);
        need_cuda(c.under_test().rms_norm_backward, "rms_norm_backward")(dxg, dwg, c.gpu(dy), c.gpu(dres), c.gpu(x),
                                                                         c.gpu(w), c.gpu(r));
        c.compare("dx", dxg, dx, c.simple());
        c.compare("dw", dwg, dw, c.simple());
      });
    }
  }
}

void case_sum_squares(Ctx& c) {
  for (const std::vector<int64_t>& sizes : {std::vector<int64_t>{3700, 1, 100003}, std::vector<int64_t>{5},
                                            std::vector<int64_t>{70000, 0, 33, 1 << 20}}) {
    c.run(fmt::format("{} tensors, {} elements in the first", sizes.size(), sizes[0]), [&] {
      std::vector<Tensor> xs, xg;
      for (int64_t n : sizes) {
        xs.push_back(c.normal({n}, 3.0));
        xg.push_back(c.gpu(xs.back()));
      }
      Tensor out = Tensor::empty({1}, kFloat64), outg = c.gpu(full({1}, NAN, kFloat64));
      cpu_kernels().sum_squares(out, xs);
      need_cuda(c.under_test().sum_squares, "sum_squares")(outg, xg);
      c.compare("out", outg, out, c.simple());
    });
  }
}

// AdamW over a list of three tensors (one launch on the GPU), without a norm, with a norm above max_norm (the clip
// factor applies), below it, and infinite (the step is skipped: nothing may change).
void case_adamw_step(Ctx& c) {
  const AdamWParams params[] = {{1e-3, 0.9, 0.95, 1e-8, 0.1, 7, 1.0}, {3e-4, 0.9, 0.999, 1e-8, 0.0, 1, 0.0},
                                {1e-2, 0.8, 0.99, 1e-6, 0.01, 1000, 0.5}};
  for (const AdamWParams& p : params) {
    for (double sq_norm : {-1.0, 9.0, 0.01, double(INFINITY)}) {  // -1: no norm given
     for (bool on_device : {false, true}) {  // lr and step from AdamWParams, or from a schedule tensor
      c.run(fmt::format("lr {} wd {} step {} max_norm {} sq_norm {} schedule {}", p.lr, p.weight_decay, p.step,
                        p.max_norm, sq_norm, on_device),
            [&] {
              std::vector<Tensor> w, m, v, g, wg, mg, vg, gg;
              for (int64_t n : {int64_t{3700}, int64_t{1}, int64_t{100003}}) {
                w.push_back(c.normal({n}));
                m.push_back(c.normal({n}, 0.01));
                v.push_back(c.uniform({n}, 1e-6, 1e-3));
                g.push_back(c.normal({n}, 0.1));
                wg.push_back(c.gpu(w.back()));  // in place: twins of the same start values
                mg.push_back(c.gpu(m.back()));
                vg.push_back(c.gpu(v.back()));
                gg.push_back(c.gpu(g.back()));
              }
              Tensor norm = sq_norm < 0 ? Tensor() : full({1}, sq_norm, kFloat64);
              // With a schedule, AdamWParams carries a wrong lr and step that must be ignored.
              Tensor sched = on_device ? Tensor::from_vector({p.lr, double(p.step)}, {2}, kFloat64) : Tensor();
              AdamWParams given = p;
              if (on_device) given.lr = 99, given.step = 12345;
              cpu_kernels().adamw_step(w, m, v, g, norm, sched, given);
              need_cuda(c.under_test().adamw_step, "adamw_step")(wg, mg, vg, gg,
                                                                 norm.defined() ? c.gpu(norm) : Tensor(),
                                                                 sched.defined() ? c.gpu(sched) : Tensor(), given);
              for (size_t k = 0; k < w.size(); ++k) {
                c.compare(fmt::format("param{}", k), wg[k], w[k], c.simple());
                c.compare(fmt::format("m{}", k), mg[k], m[k], c.simple());
                c.compare(fmt::format("v{}", k), vg[k], v[k], c.simple());
              }
            });
     }
    }
  }
}

}  // namespace

std::vector<HarnessCase> nn_harness_cases() {
  return {
      {"gemm", "gemm", case_gemm},
      {"embedding_forward", "nn", case_embedding_forward},
      {"embedding_backward", "nn", case_embedding_backward},
      {"cross_entropy_forward", "nn", case_cross_entropy_forward},
      {"cross_entropy_backward", "nn", case_cross_entropy_backward},
      {"cross_entropy_fused", "nn", case_cross_entropy_fused},
      {"rms_norm_forward", "nn", case_rms_norm_forward},
      {"rms_norm_backward", "nn", case_rms_norm_backward},
      {"sum_squares", "nn", case_sum_squares},
      {"adamw_step", "nn", case_adamw_step},
  };
}

}  // namespace gdn::harness
