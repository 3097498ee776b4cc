// ops/cpu/delta_rule_chunked_cpu.cpp — the gated delta rule in chunked WY (UT) form: the training path.
//
// Math: docs/MATH.md, "Gated delta rule: chunked form". Per (batch, value head) the sequence is cut into chunks of C rows; the
// tail chunk simply has fewer rows (L = T - t0 < C). Working on the L valid rows is the CPU equivalent of padding and
// masking: no padded row exists, so none can change a result. For one chunk with rows Q, K [L,K], V [L,V], gates
// g, beta [L] and the state H [K,V] at its start:
//   gam = inclusive cumsum of g (double), Gam_ij = exp(gam_i - gam_j) for i >= j, 0 above the diagonal
//   L = strictly_lower(diag(beta) (K K^T ⊙ Gam)),  A = (I + L)^-1 (never formed: triangular solves)
//   W = A diag(beta e^gam) K,  U = A diag(beta) V,  Vn = U - W H
//   O = scale (diag(e^gam) Q H + (Q K^T ⊙ Gam) Vn),  H_next = e^gam_L H + K^T diag(e^(gam_L - gam)) Vn
// Gam is built by the recurrence Gam_ij = exp(g_i) Gam_(i-1)j below the diagonal, so the upper triangle is never
// exponentiated (the FLA pitfall: exp of the masked triangle overflows) and strong decay underflows to exactly 0.
//
// Backward (reverse over chunks, dH = dS_T): for each chunk it recomputes Gam, L, W, U, Vn from the chunk's start
// state saved by the forward (chunk_states), then, with dP = scale dO Vn^T, dQK = dP ⊙ Gam:
//   dVn = scale (QK^T⊙Gam)^T dO + diag(e^(gam_L-gam)) K dH
//   dQ  = scale diag(e^gam) dO H^T + dQK K,   dK = diag(e^(gam_L-gam)) Vn dH^T + dQK^T Q
//   dH_start = e^gam_L dH + scale Q^T diag(e^gam) dO - W^T dVn
//   dW = -dVn H^T, dU = dVn; with dWt = A^T dW and dUt = A^T dU (transposed triangular solves):
//   dK += diag(beta e^gam) dWt, dV = diag(beta) dUt, dbeta = e^gam ⊙ rowdot(K, dWt) + rowdot(V, dUt),
//   dL = -strictly_lower(dWt W^T + dUt U^T) (= -A^T dA A^T), Pm = dL ⊙ Gam:
//   dbeta += rowsum(Pm ⊙ K K^T), dK += diag(beta) Pm K + Pm^T diag(beta) K,
//   dgam collects every place gam appears (see the code), and dg = reverse cumsum of dgam inside the chunk.
// All products are Eigen GEMMs on Maps of the chunk's rows in the [B,T,H,D] tensors (outer stride H*D, no copies);
// one task per (batch, value head) on OpenMP threads. The state and every matrix are in the input type (float32 or
// float64); gate cumsums and the decay factors are computed in double.
#include "ops/cpu/eigen.h"  // first: see that header

#include <cmath>
#include <vector>

#include "ops/cpu/cpu_kernels.h"
#include "ops/cpu/cpu_loops.h"
#include "ops/cpu/delta_rule_common.h"

namespace gdn::cpu {

namespace {

template <typename Tp> using Mat = Eigen::Matrix<Tp, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <typename Tp> using Vec = Eigen::Matrix<Tp, Eigen::Dynamic, 1>;
template <typename Tp> using ConstRows = Eigen::Map<const Mat<Tp>, 0, Eigen::OuterStride<>>;
template <typename Tp> using Rows = Eigen::Map<Mat<Tp>, 0, Eigen::OuterStride<>>;

DeltaRuleShape shape_of(const Tensor& q, const Tensor& v) {
  return {q.size(0), q.size(1), q.size(2), v.size(2), q.size(3), v.size(3)};
}

// The rows [t0, t0+L) of one head of a [B,T,H,D] tensor, as an L x D matrix.
template <typename Tp> ConstRows<Tp> chunk_rows(const Tp* base, int64_t L, int64_t D, int64_t row_stride) {
  return ConstRows<Tp>(base, L, D, Eigen::OuterStride<>(row_stride));
}
template <typename Tp> Rows<Tp> chunk_rows(Tp* base, int64_t L, int64_t D, int64_t row_stride) {
  return Rows<Tp>(base, L, D, Eigen::OuterStride<>(row_stride));
}

// What forward and backward both compute for one chunk from its inputs and its start state H.
template <typename Tp> struct Chunk {
  int64_t L = 0;
  Vec<Tp> eg, r, beta;  // e^gam_i, e^(gam_L - gam_i), beta_i  [L]
  Tp eg_last = 1;       // e^gam_L
  Mat<Tp> Gam;          // [L,L] exp(gam_i - gam_j) for i >= j, 0 above
  Mat<Tp> KK;           // [L,L] K K^T
  Mat<Tp> Lm;           // [L,L] strictly_lower(diag(beta) KK ⊙ Gam)
  Mat<Tp> W, U, Vn;     // [L,K], [L,V], [L,V]
  Mat<Tp> P;            // [L,L] (Q K^T) ⊙ Gam, lower triangle with diagonal
};

// g, beta: the chunk's first gate entry; gate_stride = Hv (next time step).
template <typename Tp, typename HMat>
void prepare_chunk(Chunk<Tp>& c, const ConstRows<Tp>& Q, const ConstRows<Tp>& Kc, const ConstRows<Tp>& Vc,
                   const Tp* g, const Tp* beta, int64_t gate_stride, const HMat& H) {
  const int64_t L = Q.rows();
  c.L = L;
  c.eg.resize(L);
  c.r.resize(L);
  c.beta.resize(L);
  std::vector<double> gam(L), decay(L);
  double acc = 0;
  for (int64_t i = 0; i < L; ++i) {
    acc += static_cast<double>(g[i * gate_stride]);
    gam[i] = acc;
    decay[i] = std::exp(static_cast<double>(g[i * gate_stride]));
    c.beta[i] = beta[i * gate_stride];
  }
  for (int64_t i = 0; i < L; ++i) {
    c.eg[i] = static_cast<Tp>(std::exp(gam[i]));
    c.r[i] = static_cast<Tp>(std::exp(gam[L - 1] - gam[i]));
  }
  c.eg_last = c.eg[L - 1];
  // Gam below the diagonal by products of per-step decays (double), never exponentiating the upper triangle.
  c.Gam.setZero(L, L);
  std::vector<double> row(L, 0.0);
  for (int64_t i = 0; i < L; ++i) {
    for (int64_t j = 0; j < i; ++j) row[j] *= decay[i];
    row[i] = 1.0;
    for (int64_t j = 0; j <= i; ++j) c.Gam(i, j) = static_cast<Tp>(row[j]);
  }
  c.KK.noalias() = Kc * Kc.transpose();
  c.Lm.setZero(L, L);
  for (int64_t i = 0; i < L; ++i)
    for (int64_t j = 0; j < i; ++j) c.Lm(i, j) = c.beta[i] * c.KK(i, j) * c.Gam(i, j);
  const auto unit_lower = c.Lm.template triangularView<Eigen::UnitLower>();
  c.W.noalias() = c.beta.cwiseProduct(c.eg).asDiagonal() * Kc;
  unit_lower.solveInPlace(c.W);
  c.U.noalias() = c.beta.asDiagonal() * Vc;
  unit_lower.solveInPlace(c.U);
  c.Vn = c.U;
  c.Vn.noalias() -= c.W * H;
  c.P.noalias() = Q * Kc.transpose();
  c.P = c.P.cwiseProduct(c.Gam);
}

// The CPU keeps nothing for the backward (saved stays empty): its per-chunk W, U are recomputed there.
void gated_delta_rule_chunked_forward(const Tensor& o, const Tensor& final_state, const Tensor& chunk_states,
                                      const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& g,
                                      const Tensor& beta, const Tensor& initial_state, double scale,
                                      int64_t chunk_size, std::vector<Tensor>* /*saved*/) {
  const DeltaRuleShape s = shape_of(q, v);
  const int64_t K = s.K, V = s.V, T = s.T, C = chunk_size;
  const int64_t n_chunks = (T + C - 1) / C;
  dispatch_float(q.dtype(), "gated_delta_rule_chunked_forward", [&](auto tag_) {
    using Tp = decltype(tag_);
    const Tp *qp = q.data<Tp>(), *kp = k.data<Tp>(), *vp = v.data<Tp>(), *gp = g.data<Tp>(), *bp = beta.data<Tp>();
    const Tp* s0 = initial_state.defined() ? initial_state.data<Tp>() : nullptr;
    Tp* fs = final_state.defined() ? final_state.data<Tp>() : nullptr;
    Tp* cs = chunk_states.defined() ? chunk_states.data<Tp>() : nullptr;
    Tp* op = o.data<Tp>();
    const Tp sc = static_cast<Tp>(scale);
    const bool parallel = s.B * s.Hv * s.T * s.K * s.V >= kParallelGrain;  // small calls: no thread start-up
#pragma omp parallel for collapse(2) schedule(dynamic) if (parallel)
    for (int64_t b = 0; b < s.B; ++b)
      for (int64_t hv = 0; hv < s.Hv; ++hv) {
        Mat<Tp> H = Mat<Tp>::Zero(K, V);
        if (s0) H = Eigen::Map<const Mat<Tp>>(s0 + s.state_offset(b, hv), K, V);
        Chunk<Tp> c;
        Mat<Tp> tmp;
        for (int64_t n = 0; n < n_chunks; ++n) {
          const int64_t t0 = n * C, L = std::min(C, T - t0);
          if (cs) Eigen::Map<Mat<Tp>>(cs + (s.state_offset(b, hv) * n_chunks + n * K * V), K, V) = H;
          const auto Q = chunk_rows(qp + s.key_row(b, t0, hv), L, K, s.Hk * K);
          const auto Kc = chunk_rows(kp + s.key_row(b, t0, hv), L, K, s.Hk * K);
          const auto Vc = chunk_rows(vp + s.value_row(b, t0, hv), L, V, s.Hv * V);
          const int64_t gi = s.gate_index(b, t0, hv);
          prepare_chunk(c, Q, Kc, Vc, gp + gi, bp + gi, s.Hv, H);
          // O = scale (diag(e^gam) Q H + P Vn)
          auto O = chunk_rows(op + s.value_row(b, t0, hv), L, V, s.Hv * V);
          tmp.noalias() = Q * H;
          O.noalias() = (sc * c.eg).asDiagonal() * tmp;
          tmp.noalias() = c.P.template triangularView<Eigen::Lower>() * c.Vn;
          O.noalias() += sc * tmp;
          // H = e^gam_L H + K^T diag(e^(gam_L - gam)) Vn
          tmp.noalias() = c.r.asDiagonal() * c.Vn;
          H *= c.eg_last;
          H.noalias() += Kc.transpose() * tmp;
        }
        if (fs) Eigen::Map<Mat<Tp>>(fs + s.state_offset(b, hv), K, V) = H;
      }
  });
}

// Row-wise dot products of two L x D matrices.
template <typename A, typename B> auto rowdot(const A& a, const B& b) { return a.cwiseProduct(b).rowwise().sum(); }

void gated_delta_rule_chunked_backward(const Tensor& dq, const Tensor& dk, const Tensor& dv, const Tensor& dg,
                                       const Tensor& dbeta, const Tensor& dinitial_state, const Tensor& do_,
                                       const Tensor& dfinal_state, const Tensor& q, const Tensor& k, const Tensor& v,
                                       const Tensor& g, const Tensor& beta, const Tensor& chunk_states, double scale,
                                       int64_t chunk_size, const std::vector<Tensor>& /*saved*/) {
  const DeltaRuleShape s = shape_of(q, v);
  const int64_t K = s.K, V = s.V, T = s.T, C = chunk_size;
  const int64_t n_chunks = (T + C - 1) / C;
  GDN_CHECK(chunk_states.defined() && chunk_states.size(2) == n_chunks,
            "gated_delta_rule_chunked_backward: chunk_states must hold {} chunk start states", n_chunks);
  dispatch_float(q.dtype(), "gated_delta_rule_chunked_backward", [&](auto tag_) {
    using Tp = decltype(tag_);
    const Tp *qp = q.data<Tp>(), *kp = k.data<Tp>(), *vp = v.data<Tp>(), *gp = g.data<Tp>(), *bp = beta.data<Tp>();
    const Tp* dop = do_.data<Tp>();
    const Tp* cs = chunk_states.data<Tp>();
    const Tp* dsT = dfinal_state.defined() ? dfinal_state.data<Tp>() : nullptr;
    Tp *dvp = dv.data<Tp>(), *dgp = dg.data<Tp>(), *dbp = dbeta.data<Tp>();
    Tp* ds0 = dinitial_state.defined() ? dinitial_state.data<Tp>() : nullptr;
    KeyGradRows<Tp> dq_rows(dq.data<Tp>(), s), dk_rows(dk.data<Tp>(), s);
    const Tp sc = static_cast<Tp>(scale);
    const bool parallel = s.B * s.Hv * s.T * s.K * s.V >= kParallelGrain;  // small calls: no thread start-up
#pragma omp parallel for collapse(2) schedule(dynamic) if (parallel)
    for (int64_t b = 0; b < s.B; ++b)
      for (int64_t hv = 0; hv < s.Hv; ++hv) {
        const int64_t kstride = dq_rows.time_stride();
        Mat<Tp> dH = Mat<Tp>::Zero(K, V);  // gradient of the state at the end of the current chunk
        if (dsT) dH = Eigen::Map<const Mat<Tp>>(dsT + s.state_offset(b, hv), K, V);
        Chunk<Tp> c;
        Mat<Tp> dVn, dP, dQK, dQi, dKi, dHn, dWt, dUt, dL, Pm, tmp;
        Vec<Tp> dgam, kd, wk;
        for (int64_t n = n_chunks - 1; n >= 0; --n) {
          const int64_t t0 = n * C, L = std::min(C, T - t0);
          const Eigen::Map<const Mat<Tp>> H(cs + (s.state_offset(b, hv) * n_chunks + n * K * V), K, V);
          const auto Q = chunk_rows(qp + s.key_row(b, t0, hv), L, K, s.Hk * K);
          const auto Kc = chunk_rows(kp + s.key_row(b, t0, hv), L, K, s.Hk * K);
          const auto Vc = chunk_rows(vp + s.value_row(b, t0, hv), L, V, s.Hv * V);
          const auto dO = chunk_rows(dop + s.value_row(b, t0, hv), L, V, s.Hv * V);
          auto dQ = chunk_rows(dq_rows.rows(b, hv) + t0 * kstride, L, K, kstride);
          auto dK = chunk_rows(dk_rows.rows(b, hv) + t0 * kstride, L, K, kstride);
          auto dV = chunk_rows(dvp + s.value_row(b, t0, hv), L, V, s.Hv * V);
          const int64_t gi = s.gate_index(b, t0, hv);
          prepare_chunk(c, Q, Kc, Vc, gp + gi, bp + gi, s.Hv, H);
          const Vec<Tp> beta_eg = c.beta.cwiseProduct(c.eg);

          // Through O = scale (diag(e^gam) Q H + P Vn) and H_next = e^gam_L H + K^T diag(r) Vn.
          tmp.noalias() = Kc * dH;
          dVn.noalias() = c.P.transpose().template triangularView<Eigen::Upper>() * dO;
          dVn *= sc;
          dVn.noalias() += c.r.asDiagonal() * tmp;
          dP.noalias() = sc * (dO * c.Vn.transpose());
          dQK = dP.cwiseProduct(c.Gam);
          const Mat<Tp> dPP = dP.cwiseProduct(c.P);  // d/dgam of P_ij = QK_ij exp(gam_i - gam_j)
          dgam = dPP.rowwise().sum() - dPP.colwise().sum().transpose();
          tmp.noalias() = dO * H.transpose();
          dQi.noalias() = (sc * c.eg).asDiagonal() * tmp;
          dgam += rowdot(Q, dQi);
          tmp.noalias() = c.Vn * dH.transpose();
          dKi.noalias() = c.r.asDiagonal() * tmp;
          kd = rowdot(Kc, dKi);
          dgam -= kd;
          dgam[L - 1] += c.eg_last * H.cwiseProduct(dH).sum() + kd.sum();
          dQ = dQi;
          dQ.noalias() += dQK.template triangularView<Eigen::Lower>() * Kc;
          dK = dKi;
          dK.noalias() += dQK.transpose().template triangularView<Eigen::Upper>() * Q;

          // State gradient at the chunk start: e^gam_L dH + scale Q^T diag(e^gam) dO - W^T dVn.
          tmp.noalias() = (sc * c.eg).asDiagonal() * dO;
          dHn.noalias() = c.eg_last * dH;
          dHn.noalias() += Q.transpose() * tmp;
          dHn.noalias() -= c.W.transpose() * dVn;

          // Through Vn = U - W H, W = A diag(beta e^gam) K, U = A diag(beta) V.
          const auto unit_upper = c.Lm.transpose().template triangularView<Eigen::UnitUpper>();
          dWt.noalias() = -(dVn * H.transpose());
          unit_upper.solveInPlace(dWt);  // A^T dW
          dUt = dVn;
          unit_upper.solveInPlace(dUt);  // A^T dU
          dK.noalias() += beta_eg.asDiagonal() * dWt;
          dV.noalias() = c.beta.asDiagonal() * dUt;
          wk = rowdot(Kc, dWt);
          Vec<Tp> db = c.eg.cwiseProduct(wk) + rowdot(Vc, dUt);
          dgam += beta_eg.cwiseProduct(wk);

          // Through A = (I + L)^-1: dL = -strictly_lower(dWt W^T + dUt U^T).
          dL.noalias() = dWt * c.W.transpose();
          dL.noalias() += dUt * c.U.transpose();
          Pm.setZero(L, L);
          for (int64_t i = 0; i < L; ++i) {
            Tp dgi = 0;
            for (int64_t j = 0; j < i; ++j) {
              const Tp dl = -dL(i, j);
              const Tp m = dl * c.Lm(i, j);  // d/dgam of L_ij = beta_i KK_ij exp(gam_i - gam_j)
              dgi += m;
              dgam[j] -= m;
              Pm(i, j) = dl * c.Gam(i, j);
              db[i] += Pm(i, j) * c.KK(i, j);
            }
            dgam[i] += dgi;
          }
          tmp.noalias() = Pm.template triangularView<Eigen::StrictlyLower>() * Kc;
          dK.noalias() += c.beta.asDiagonal() * tmp;
          tmp.noalias() = c.beta.asDiagonal() * Kc;
          dK.noalias() += Pm.transpose().template triangularView<Eigen::StrictlyUpper>() * tmp;

          // dg = reverse cumsum of dgam inside the chunk.
          double acc = 0;
          for (int64_t i = L - 1; i >= 0; --i) {
            acc += static_cast<double>(dgam[i]);
            dgp[gi + i * s.Hv] = static_cast<Tp>(acc);
            dbp[gi + i * s.Hv] = db[i];
          }
          dH = dHn;
        }
        if (ds0) Eigen::Map<Mat<Tp>>(ds0 + s.state_offset(b, hv), K, V) = dH;
      }
    dq_rows.finish();
    dk_rows.finish();
  });
}

}  // namespace

void register_delta_rule_chunked_kernels(KernelTable& t) {
  t.gated_delta_rule_chunked_forward = gated_delta_rule_chunked_forward;
  t.gated_delta_rule_chunked_backward = gated_delta_rule_chunked_backward;
}

}  // namespace gdn::cpu
