// ops/cpu/delta_rule_recurrent_cpu.cpp — the gated delta rule token by token: the reference every other
// implementation is tested against, and the inference path (T = 1 with the state carried between calls).
//
// Per (batch, value head), state S [K,V] from S0 (docs/MATH.md, "Gated delta rule: recurrent form"):
//   S' = exp(g_t) S;  e = v_t - S'^T k_t;  u = beta_t e;  S = S' + k_t u^T;  o_t = S^T (scale q_t)
// Backward, t = T-1 .. 0, dS = dS_T (0 if absent):
//   dS += scale q do^T;  dq = scale S do;  du = dS^T k;  dk = dS u;  dbeta = e . du;  de = beta du;  dv = de;
//   dk -= S' de;  dS' = dS - k de^T;  dg = <S', dS'>;  dS = exp(g) dS'.   dS0 = the final dS.
// The backward needs S_{t-1} at every step, walking backwards. Inverting a step is unstable (exp(-g) blows up for
// strong decay), so it keeps the state at every kCheckpoint-th token from one forward sweep and recomputes the
// states of one segment at a time: memory (T/64 + 64) K V per task, cost one extra forward.
// The state is kept in the input type (float32 or float64); one task per (batch, value head) on OpenMP threads.
#include <cmath>
#include <vector>

#include "ops/cpu/cpu_kernels.h"
#include "ops/cpu/cpu_loops.h"
#include "ops/cpu/delta_rule_common.h"

namespace gdn::cpu {

namespace {

constexpr int64_t kCheckpoint = 64;

DeltaRuleShape shape_of(const Tensor& q, const Tensor& v) {
  return {q.size(0), q.size(1), q.size(2), v.size(2), q.size(3), v.size(3)};
}

// One step of the state S [K,V] for token t; returns e (prediction error) and u = beta e in the given buffers.
template <typename Tp>
void recurrent_step(Tp* S, Tp* e, Tp* u, const Tp* kt, const Tp* vt, Tp decay, Tp beta, int64_t K, int64_t V) {
  for (int64_t j = 0; j < V; ++j) e[j] = vt[j];
  for (int64_t i = 0; i < K; ++i) {
    Tp* Si = S + i * V;
    for (int64_t j = 0; j < V; ++j) {
      Si[j] *= decay;
      e[j] -= kt[i] * Si[j];
    }
  }
  for (int64_t j = 0; j < V; ++j) u[j] = beta * e[j];
  for (int64_t i = 0; i < K; ++i) {
    Tp* Si = S + i * V;
    for (int64_t j = 0; j < V; ++j) Si[j] += kt[i] * u[j];
  }
}

void gated_delta_rule_recurrent_forward(const Tensor& o, const Tensor& final_state, const Tensor& q, const Tensor& k,
                                        const Tensor& v, const Tensor& g, const Tensor& beta,
                                        const Tensor& initial_state, double scale) {
  const DeltaRuleShape s = shape_of(q, v);
  const int64_t K = s.K, V = s.V;
  dispatch_float(q.dtype(), "gated_delta_rule_recurrent_forward", [&](auto tag_) {
    using Tp = decltype(tag_);
    const Tp *qp = q.data<Tp>(), *kp = k.data<Tp>(), *vp = v.data<Tp>(), *gp = g.data<Tp>(), *bp = beta.data<Tp>();
    const Tp* s0 = initial_state.defined() ? initial_state.data<Tp>() : nullptr;
    Tp* fs = final_state.defined() ? final_state.data<Tp>() : nullptr;
    Tp* op = o.data<Tp>();
    const Tp sc = static_cast<Tp>(scale);
    const bool parallel = s.B * s.Hv * s.T * s.K * s.V >= kParallelGrain;  // small calls: no thread start-up
#pragma omp parallel for collapse(2) schedule(dynamic) if (parallel)
    for (int64_t b = 0; b < s.B; ++b)
      for (int64_t hv = 0; hv < s.Hv; ++hv) {
        std::vector<Tp> S(K * V, Tp(0)), e(V), u(V);
        if (s0) std::copy(s0 + s.state_offset(b, hv), s0 + s.state_offset(b, hv) + K * V, S.begin());
        for (int64_t t = 0; t < s.T; ++t) {
          const int64_t gi = s.gate_index(b, t, hv);
          const Tp* qt = qp + s.key_row(b, t, hv);
          recurrent_step(S.data(), e.data(), u.data(), kp + s.key_row(b, t, hv), vp + s.value_row(b, t, hv),
                         std::exp(gp[gi]), bp[gi], K, V);
          Tp* ot = op + s.value_row(b, t, hv);  // o = S^T (scale q)
          for (int64_t j = 0; j < V; ++j) ot[j] = Tp(0);
          for (int64_t i = 0; i < K; ++i) {
            const Tp qi = sc * qt[i];
            for (int64_t j = 0; j < V; ++j) ot[j] += qi * S[i * V + j];
          }
        }
        if (fs) std::copy(S.begin(), S.end(), fs + s.state_offset(b, hv));
      }
  });
}

void gated_delta_rule_recurrent_backward(const Tensor& dq, const Tensor& dk, const Tensor& dv, const Tensor& dg,
                                         const Tensor& dbeta, const Tensor& dinitial_state, const Tensor& do_,
                                         const Tensor& dfinal_state, const Tensor& q, const Tensor& k,
                                         const Tensor& v, const Tensor& g, const Tensor& beta,
                                         const Tensor& initial_state, double scale) {
  const DeltaRuleShape s = shape_of(q, v);
  const int64_t K = s.K, V = s.V, T = s.T;
  dispatch_float(q.dtype(), "gated_delta_rule_recurrent_backward", [&](auto tag_) {
    using Tp = decltype(tag_);
    const Tp *qp = q.data<Tp>(), *kp = k.data<Tp>(), *vp = v.data<Tp>(), *gp = g.data<Tp>(), *bp = beta.data<Tp>();
    const Tp* dop = do_.data<Tp>();
    const Tp* s0 = initial_state.defined() ? initial_state.data<Tp>() : nullptr;
    const Tp* dsT = dfinal_state.defined() ? dfinal_state.data<Tp>() : nullptr;
    Tp *dvp = dv.data<Tp>(), *dgp = dg.data<Tp>(), *dbp = dbeta.data<Tp>();
    Tp* ds0 = dinitial_state.defined() ? dinitial_state.data<Tp>() : nullptr;
    KeyGradRows<Tp> dq_rows(dq.data<Tp>(), s), dk_rows(dk.data<Tp>(), s);
    const Tp sc = static_cast<Tp>(scale);
    const bool parallel = s.B * s.Hv * s.T * s.K * s.V >= kParallelGrain;  // small calls: no thread start-up
    const int64_t n_seg = (T + kCheckpoint - 1) / kCheckpoint;
#pragma omp parallel for collapse(2) schedule(dynamic) if (parallel)
    for (int64_t b = 0; b < s.B; ++b)
      for (int64_t hv = 0; hv < s.Hv; ++hv) {
        Tp* dq_bh = dq_rows.rows(b, hv);
        Tp* dk_bh = dk_rows.rows(b, hv);
        const int64_t kstride = dq_rows.time_stride();
        std::vector<Tp> S(K * V, Tp(0)), e(V), u(V), du(V), de(V), dS(K * V, Tp(0));
        std::vector<Tp> checkpoints(n_seg * K * V), prev(kCheckpoint * K * V);

        // Forward sweep: the state at the start of every segment.
        if (s0) std::copy(s0 + s.state_offset(b, hv), s0 + s.state_offset(b, hv) + K * V, S.begin());
        for (int64_t t = 0; t < T; ++t) {
          if (t % kCheckpoint == 0) std::copy(S.begin(), S.end(), checkpoints.begin() + (t / kCheckpoint) * K * V);
          const int64_t gi = s.gate_index(b, t, hv);
          recurrent_step(S.data(), e.data(), u.data(), kp + s.key_row(b, t, hv), vp + s.value_row(b, t, hv),
                         std::exp(gp[gi]), bp[gi], K, V);
        }

        if (dsT) std::copy(dsT + s.state_offset(b, hv), dsT + s.state_offset(b, hv) + K * V, dS.begin());
        for (int64_t seg = n_seg - 1; seg >= 0; --seg) {
          const int64_t t0 = seg * kCheckpoint, t1 = std::min(T, t0 + kCheckpoint);
          // prev[t - t0] = S_{t-1}, the state before token t.
          std::copy(checkpoints.begin() + seg * K * V, checkpoints.begin() + (seg + 1) * K * V, S.begin());
          for (int64_t t = t0; t < t1; ++t) {
            std::copy(S.begin(), S.end(), prev.begin() + (t - t0) * K * V);
            const int64_t gi = s.gate_index(b, t, hv);
            recurrent_step(S.data(), e.data(), u.data(), kp + s.key_row(b, t, hv), vp + s.value_row(b, t, hv),
                           std::exp(gp[gi]), bp[gi], K, V);
          }
          for (int64_t t = t1 - 1; t >= t0; --t) {
            const int64_t gi = s.gate_index(b, t, hv);
            const Tp decay = std::exp(gp[gi]), bt = bp[gi];
            const Tp* qt = qp + s.key_row(b, t, hv);
            const Tp* kt = kp + s.key_row(b, t, hv);
            const Tp* vt = vp + s.value_row(b, t, hv);
            const Tp* dot = dop + s.value_row(b, t, hv);
            Tp* Sp = prev.data() + (t - t0) * K * V;  // becomes S'_t = exp(g_t) S_{t-1} in place
            // e = v - S'^T k, u = beta e
            for (int64_t j = 0; j < V; ++j) e[j] = vt[j];
            for (int64_t i = 0; i < K; ++i)
              for (int64_t j = 0; j < V; ++j) {
                Sp[i * V + j] *= decay;
                e[j] -= kt[i] * Sp[i * V + j];
              }
            Tp u_do = 0;
            for (int64_t j = 0; j < V; ++j) {
              u[j] = bt * e[j];
              u_do += u[j] * dot[j];
              du[j] = 0;
            }
            // dS += scale q do^T; dq = scale S_t do with S_t = S' + k u^T; du = dS^T k; dk = dS u
            Tp* dqt = dq_bh + t * kstride;
            Tp* dkt = dk_bh + t * kstride;
            for (int64_t i = 0; i < K; ++i) {
              Tp* dSi = dS.data() + i * V;
              const Tp* Si = Sp + i * V;
              const Tp qi = sc * qt[i];
              Tp sdo = 0, dsu = 0;
              for (int64_t j = 0; j < V; ++j) {
                dSi[j] += qi * dot[j];
                sdo += Si[j] * dot[j];
                du[j] += kt[i] * dSi[j];
                dsu += dSi[j] * u[j];
              }
              dqt[i] = sc * (sdo + kt[i] * u_do);
              dkt[i] = dsu;
            }
            // dbeta = e . du; de = beta du; dv = de
            Tp db = 0;
            Tp* dvt = dvp + s.value_row(b, t, hv);
            for (int64_t j = 0; j < V; ++j) {
              db += e[j] * du[j];
              de[j] = bt * du[j];
              dvt[j] = de[j];
            }
            dbp[gi] = db;
            // dk -= S' de; dS' = dS - k de^T; dg = <S', dS'>; dS = exp(g) dS'
            Tp dgt = 0;
            for (int64_t i = 0; i < K; ++i) {
              Tp* dSi = dS.data() + i * V;
              const Tp* Si = Sp + i * V;
              Tp sde = 0;
              for (int64_t j = 0; j < V; ++j) {
                sde += Si[j] * de[j];
                dSi[j] -= kt[i] * de[j];
                dgt += Si[j] * dSi[j];
                dSi[j] *= decay;
              }
              dkt[i] -= sde;
            }
            dgp[gi] = dgt;
          }
        }
        if (ds0) std::copy(dS.begin(), dS.end(), ds0 + s.state_offset(b, hv));
      }
    dq_rows.finish();
    dk_rows.finish();
  });
}

}  // namespace

void register_delta_rule_recurrent_kernels(KernelTable& t) {
  t.gated_delta_rule_recurrent_forward = gated_delta_rule_recurrent_forward;
  t.gated_delta_rule_recurrent_backward = gated_delta_rule_recurrent_backward;
}

}  // namespace gdn::cpu
