// tests/test_cuda_kernels_moe.cpp — the harness cases of the mixture-of-experts kernels (see
// tests/test_cuda_kernels.cpp for the machinery and the doctest cases that run them): moe_route, moe_plan,
// grouped_gemm (both weight layouts) and grouped_gemm_dweight.
//
// Shapes cover E = 1, 3, 8; k = 1, 2 (and k = E); odd N; experts that receive no pair; probabilities with ties
// (values drawn from a few levels, and rows where every entry is equal) and a NaN entry; groups of one row, of
// several 32-row tiles, and empty groups. Integer outputs (ids, plan) must agree exactly; the grouped GEMMs within
// the simple-kernel tolerances (the GPU sums in a different order than Eigen).
#include <numeric>

#include "tests/cuda_harness.h"

namespace gdn::harness {

namespace {

// ---------------------------------------------------------------------------------------------------------------
// routing

struct RouteShape {
  int64_t N, E, k;
};
const RouteShape kRouteShapes[] = {{37, 1, 1}, {37, 3, 1}, {37, 3, 2}, {129, 8, 2}, {1, 8, 1}, {65, 8, 8},
                                   {301, 3, 3}};

// probs [N,E]: uniform in (0, 1) or, with ties, drawn from 3 levels; with ties, row 0 is all equal and (when N > 2)
// row 2 holds a NaN.
Tensor route_probs(Ctx& c, int64_t N, int64_t E, bool ties) {
  if (!ties) return c.uniform({N, E}, 0.01, 1.0);
  std::vector<double> v(static_cast<size_t>(N * E));
  for (auto& x : v) x = 0.25 * static_cast<double>(1 + c.gen.below(3));
  for (int64_t e = 0; e < E; ++e) v[static_cast<size_t>(e)] = 0.5;
  if (N > 2) v[static_cast<size_t>(2 * E + E / 2)] = std::numeric_limits<double>::quiet_NaN();
  return Tensor::from_vector(v, {N, E}, c.dt);
}

void case_moe_route(Ctx& c) {
  for (const RouteShape& s : kRouteShapes) {
    for (bool ties : {false, true}) {
      c.run(fmt::format("N{} E{} k{}{}", s.N, s.E, s.k, ties ? " ties + NaN" : ""), [&] {
        Tensor probs = route_probs(c, s.N, s.E, ties);
        Tensor ids = Ctx::out({s.N, s.k}, kInt64), flat = Ctx::out({s.N, s.k}, kInt64);
        Tensor idsg = c.gpu(ids), flatg = c.gpu(flat);
        cpu_kernels().moe_route(ids, flat, probs);
        need_cuda(c.under_test().moe_route, "moe_route")(idsg, flatg, c.gpu(probs));
        c.compare("ids", idsg, ids, 0.0);
        c.compare("flat", flatg, flat, 0.0);
      });
    }
  }
}

// ---------------------------------------------------------------------------------------------------------------
// plan

// ids [N,k] in [0, E): from the CPU router (distinct per row), or random draws from a few experts only (so some
// experts get no pair; repeats within a row allowed).
Tensor plan_ids(Ctx& c, int64_t N, int64_t E, int64_t k, bool sparse) {
  if (!sparse) {
    Tensor ids = Ctx::out({N, k}, kInt64), flat = Ctx::out({N, k}, kInt64);
    cpu_kernels().moe_route(ids, flat, c.uniform({N, E}, 0.01, 1.0));
    return ids;
  }
  std::vector<int64_t> v(static_cast<size_t>(N * k));
  const int64_t used[] = {0, E / 2, E - 1};  // E = 8: experts 0, 4, 7 only
  for (auto& x : v) x = used[c.gen.below(3)];
  return Tensor::from_int64(v, {N, k});
}

void case_moe_plan(Ctx& c) {
  for (const RouteShape& s : kRouteShapes) {
    for (bool sparse : {false, true}) {
      c.run(fmt::format("N{} E{} k{}{}", s.N, s.E, s.k, sparse ? " experts 0, E/2, E-1 only" : ""), [&] {
        Tensor ids = plan_ids(c, s.N, s.E, s.k, sparse);
        const int64_t M = s.N * s.k;
        Tensor order = Ctx::out({M}, kInt64), tokens = Ctx::out({M}, kInt64);
        Tensor offsets = Ctx::out({s.E + 1}, kInt64), counts = Ctx::out({s.E}, kInt64);
        Tensor og = c.gpu(order), tg = c.gpu(tokens), offg = c.gpu(offsets), cg = c.gpu(counts);
        cpu_kernels().moe_plan(order, tokens, offsets, counts, ids);
        need_cuda(c.under_test().moe_plan, "moe_plan")(og, tg, offg, cg, c.gpu(ids));
        c.compare("order", og, order, 0.0);
        c.compare("tokens", tg, tokens, 0.0);
        c.compare("offsets", offg, offsets, 0.0);
        c.compare("counts", cg, counts, 0.0);
      });
    }
  }
}

// ---------------------------------------------------------------------------------------------------------------
// grouped GEMM

struct GemmShape {
  int64_t M, E, P, Q;
  const char* groups;  // "random", "empty" (every other group empty), "one" (all rows in the last group)
};
const GemmShape kGemmShapes[] = {{37, 1, 70, 37, "random"}, {101, 3, 33, 64, "random"}, {300, 8, 65, 100, "random"},
                                 {129, 8, 48, 31, "empty"}, {77, 3, 32, 32, "one"},     {8, 8, 17, 5, "random"}};

// offsets [E+1] splitting M rows into E groups.
Tensor group_offsets(Ctx& c, const GemmShape& s) {
  std::vector<int64_t> counts(static_cast<size_t>(s.E), 0);
  const std::string g = s.groups;
  for (int64_t r = 0; r < s.M; ++r) {
    int64_t e = static_cast<int64_t>(c.gen.below(static_cast<uint64_t>(s.E)));
    if (g == "empty") e = (e / 2) * 2;  // odd groups stay empty
    if (g == "one") e = s.E - 1;
    counts[static_cast<size_t>(e)]++;
  }
  std::vector<int64_t> off(static_cast<size_t>(s.E + 1), 0);
  std::partial_sum(counts.begin(), counts.end(), off.begin() + 1);
  return Tensor::from_int64(off, {s.E + 1});
}

std::string gemm_tag(const GemmShape& s) {
  return fmt::format("M{} E{} P{} Q{} groups {}", s.M, s.E, s.P, s.Q, s.groups);
}

void case_grouped_gemm(Ctx& c) {
  for (const GemmShape& s : kGemmShapes) {
    for (bool transpose_w : {true, false}) {
      c.run(fmt::format("{}{}", gemm_tag(s), transpose_w ? " a @ W^T" : " a @ W"), [&] {
        Tensor off = group_offsets(c, s), a = c.normal({s.M, s.Q});
        std::vector<Tensor> ws, wg;
        for (int64_t e = 0; e < s.E; ++e) {
          ws.push_back(transpose_w ? c.normal({s.P, s.Q}, 0.3) : c.normal({s.Q, s.P}, 0.3));
          wg.push_back(c.gpu(ws.back()));
        }
        Tensor out = Ctx::out({s.M, s.P}, c.dt), outg = c.gpu(out);
        cpu_kernels().grouped_gemm(out, a, ws, off, transpose_w);
        need_cuda(c.under_test().grouped_gemm, "grouped_gemm")(outg, c.gpu(a), wg, c.gpu(off), transpose_w);
        c.compare("out", outg, out, c.simple());
      });
    }
  }
}

void case_grouped_gemm_dweight(Ctx& c) {
  for (const GemmShape& s : kGemmShapes) {
    c.run(gemm_tag(s), [&] {
      Tensor off = group_offsets(c, s), a = c.normal({s.M, s.Q}), dy = c.normal({s.M, s.P});
      std::vector<Tensor> dws, dwg;
      for (int64_t e = 0; e < s.E; ++e) {
        dws.push_back(Ctx::out({s.P, s.Q}, c.dt));
        dwg.push_back(c.gpu(dws.back()));
      }
      cpu_kernels().grouped_gemm_dweight(dws, dy, a, off);
      need_cuda(c.under_test().grouped_gemm_dweight, "grouped_gemm_dweight")(dwg, c.gpu(dy), c.gpu(a), c.gpu(off));
      for (size_t e = 0; e < dws.size(); ++e) c.compare(fmt::format("dweight{}", e), dwg[e], dws[e], c.simple());
    });
  }
}

}  // namespace

std::vector<HarnessCase> moe_harness_cases() {
  return {
      {"moe_route", "moe", case_moe_route},
      {"moe_plan", "moe", case_moe_plan},
      {"grouped_gemm", "moe", case_grouped_gemm},
      {"grouped_gemm_dweight", "moe", case_grouped_gemm_dweight},
  };
}

}  // namespace gdn::harness
