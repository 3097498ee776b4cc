// ops/cpu/gated_deltanet_cpu.cpp — CPU kernels of the small Gated DeltaNet operators: causal depthwise conv1d,
// l2norm, gated RMSNorm and the decay/write-strength gate. The delta rule itself lives in
// delta_rule_recurrent_cpu.cpp (reference, inference) and delta_rule_chunked_cpu.cpp (training); this file's
// register function registers those too.
//
// Math (docs/MATH.md, "Gated DeltaNet layer"), glossary B batch, T time, C channels, W conv width, H heads:
//   conv:  p[t,c] = bias[c] + sum_w weight[c,w] x[t-W+1+w, c], y = silu(p) or p; x before t = 0 comes from the
//          initial state [B,C,W-1] (oldest first) or is 0. Backward recomputes p (W multiply-adds per element,
//          cheaper than saving it): dp = dy * s (1 + p (1 - s)), dx[t] = sum_w weight[c,w] dp[t+W-1-w],
//          dweight[c,w] = sum_{b,t} dp[t] x[t-W+1+w], dbias = sum dp; inputs before t = 0 give dinitial_state.
//   l2norm: y = x r, r = 1/sqrt(sum x^2 + eps): dx = r (dy - (dy . y) y).
//   gated RMSNorm: n = x r, r = 1/sqrt(mean x^2 + eps), y = n w silu(z):
//          dn = dy w silu(z), dx = r (dn - n mean(dn n)), dz = dy n w silu'(z), dw = sum_rows dy n silu(z).
//   gate:  A = exp(min(A_log, kGateALogMax)), g = max(-A softplus(a + dt_bias), kGateMin), beta = sigmoid(b)
//          (the guards of ops/gated_deltanet.h: g is always finite, so no -inf gate reaches the chunked decay):
//          where g is above kGateMin: da = dg (-A) sigmoid(a + dt_bias), dA_log = dg g if A_log < kGateALogMax;
//          where g is clamped: da = 0 and no dA_log; ddt_bias = sum da, dA_log summed, db = dbeta beta (1-beta).
// Rows are split across threads (OpenMP); row reductions and the parameter-gradient sums are kept in double.
// Storage may be bfloat16 with float32 arithmetic (the layer's in_proj outputs under bf16 products, as the CUDA twins
// take them): the conv's x and dx, the gated RMSNorm's z and dz (and y), the gate's a, b, da and db; each stored
// value is rounded once, every other tensor is float32.
#include <algorithm>
#include <cmath>
#include <vector>

#include "ops/cpu/cpu_kernels.h"
#include "ops/cpu/cpu_loops.h"
#include "ops/gated_deltanet.h"

namespace gdn::cpu {

namespace {

template <typename T> T sigmoid_of(T x) {
  if (x >= 0) return T(1) / (T(1) + std::exp(-x));
  const T e = std::exp(x);
  return e / (T(1) + e);
}

template <typename T> T softplus_of(T x) { return x > T(20) ? x : std::log1p(std::exp(x)); }

// -exp(min(A_log, kGateALogMax)) * softplus(x) before the lower clamp, and A itself (gate guards: see the header).
template <typename T> struct RawGate {
  T A, raw;
};
template <typename T> RawGate<T> raw_gate(T a_log, T x) {
  const T A = std::exp(std::min(a_log, static_cast<T>(kGateALogMax)));
  return {A, -A * softplus_of(x)};
}
// The clamp, written so that a NaN raw value stays NaN.
template <typename T> T clamp_gate(T raw) { return raw < static_cast<T>(kGateMin) ? static_cast<T>(kGateMin) : raw; }

// ---------------------------------------------------------------------------------------------------------------
// causal depthwise conv1d

// The geometry of one conv call, and the input at (b, t, c) for any t >= -(W-1) (initial state or 0 before t=0).
// S: x's storage (T, or bfloat16 for T = float: the layer's bf16 in_proj output); x(i) its element i in T.
template <typename T, typename S = T> struct ConvGeometry {
  int64_t B, T_, C, W;
  const S* xs;    // [B,T,C]
  const T* init;  // [B,C,W-1] or null
  T x(int64_t i) const { return in_value<T>(xs[i]); }
  T input(int64_t b, int64_t t, int64_t c) const {
    if (t >= 0) return x((b * T_ + t) * C + c);
    return init ? init[(b * C + c) * (W - 1) + (W - 1 + t)] : T(0);
  }
};

// p [C] = bias + sum_w wt[w] * x[t-W+1+w] for one (b, t); wt is the weight transposed to [W,C].
template <typename T, typename S>
void conv_preactivation_row(T* p, const ConvGeometry<T, S>& geo, const T* wt, const T* bias, int64_t b, int64_t t) {
  const int64_t C = geo.C, W = geo.W;
  for (int64_t c = 0; c < C; ++c) p[c] = bias ? bias[c] : T(0);
  for (int64_t w = 0; w < W; ++w) {
    const int64_t ts = t - (W - 1) + w;
    const T* wr = wt + w * C;
    if (ts >= 0) {
      const S* xr = geo.xs + (b * geo.T_ + ts) * C;
      for (int64_t c = 0; c < C; ++c) p[c] += wr[c] * in_value<T>(xr[c]);
    } else if (geo.init) {
      for (int64_t c = 0; c < C; ++c) p[c] += wr[c] * geo.input(b, ts, c);
    }
  }
}

template <typename T> std::vector<T> transpose_weight(const T* weight, int64_t C, int64_t W) {
  std::vector<T> wt(W * C);
  for (int64_t c = 0; c < C; ++c)
    for (int64_t w = 0; w < W; ++w) wt[w * C + c] = weight[c * W + w];
  return wt;
}

// The channel parts of a [B,T,C] conv output (or its gradient): contiguous [B,T,C_i] tensors of x's arithmetic dtype
// (float32 for bfloat16 x) whose widths add up to C. One part is the whole tensor; several are gathered to /
// scattered from one [B*T, C] buffer.
void check_channel_parts(const std::vector<Tensor>& parts, const Tensor& x, const char* what) {
  int64_t c = 0;
  for (const Tensor& p : parts) {
    GDN_CHECK(p.is_contiguous() && p.dim() == 3 && p.size(0) == x.size(0) && p.size(1) == x.size(1) &&
                  p.dtype() == arithmetic_dtype(x.dtype()),
              "{}: part {} of {} must be contiguous [B,T,C_i] {}", what, shape_str(p.shape()), shape_str(x.shape()),
              arithmetic_dtype(x.dtype()));
    c += p.size(2);
  }
  GDN_CHECK(!parts.empty() && c == x.size(2), "{}: parts of {} channels for C = {}", what, c, x.size(2));
}
template <typename T>
void copy_channel_parts(T* full, const std::vector<Tensor>& parts, int64_t rows, int64_t C, bool to_parts) {
  int64_t c0 = 0;
  for (const Tensor& p : parts) {
    const int64_t w = p.size(2);
    T* pp = p.data<T>();
    for (int64_t r = 0; r < rows; ++r) {
      if (to_parts)
        std::copy(full + r * C + c0, full + r * C + c0 + w, pp + r * w);
      else
        std::copy(pp + r * w, pp + r * w + w, full + r * C + c0);
    }
    c0 += w;
  }
}

void causal_conv1d_forward(const std::vector<Tensor>& ys, const Tensor& final_state, const Tensor& x,
                           const Tensor& weight, const Tensor& bias, const Tensor& initial_state, bool silu) {
  GDN_CHECK(x.is_contiguous() && weight.is_contiguous(), "causal_conv1d: contiguous only");
  check_channel_parts(ys, x, "causal_conv1d");
  const int64_t B = x.size(0), T_ = x.size(1), C = x.size(2), W = weight.size(1);
  dispatch_float(arithmetic_dtype(x.dtype()), "causal_conv1d_forward", [&](auto tag_) {
    using T = decltype(tag_);
    with_storage<T>(x, [&](auto* xp) {  // x may be bfloat16 for float32 arithmetic
      using S = std::remove_pointer_t<decltype(xp)>;
      const ConvGeometry<T, S> geo{B, T_, C, W, xp, initial_state.defined() ? initial_state.data<T>() : nullptr};
      const std::vector<T> wt = transpose_weight(weight.data<T>(), C, W);
      const T* bp = bias.defined() ? bias.data<T>() : nullptr;
      std::vector<T> full(ys.size() > 1 ? B * T_ * C : 0);
      T* yp = ys.size() > 1 ? full.data() : ys[0].data<T>();
#pragma omp parallel for if (B * T_ * C * W >= kParallelGrain)
      for (int64_t bt = 0; bt < B * T_; ++bt) {
        T* yr = yp + bt * C;
        conv_preactivation_row(yr, geo, wt.data(), bp, bt / T_, bt % T_);
        if (silu)
          for (int64_t c = 0; c < C; ++c) yr[c] = yr[c] * sigmoid_of(yr[c]);
      }
      if (ys.size() > 1) copy_channel_parts(yp, ys, B * T_, C, /*to_parts=*/true);
      if (final_state.defined()) {  // the last W-1 inputs, oldest first
        T* fp = final_state.data<T>();
        for (int64_t b = 0; b < B; ++b)
          for (int64_t c = 0; c < C; ++c)
            for (int64_t j = 0; j < W - 1; ++j) fp[(b * C + c) * (W - 1) + j] = geo.input(b, T_ - (W - 1) + j, c);
      }
    });
  });
}

void causal_conv1d_backward(const Tensor& dx, const Tensor& dweight, const Tensor& dbias,
                            const Tensor& dinitial_state, const std::vector<Tensor>& dys, const Tensor& x,
                            const Tensor& weight, const Tensor& bias, const Tensor& initial_state, bool silu) {
  GDN_CHECK(dx.is_contiguous() && x.is_contiguous() && weight.is_contiguous(),
            "causal_conv1d_backward: contiguous only");
  check_channel_parts(dys, x, "causal_conv1d_backward");
  GDN_CHECK(dx.dtype() == x.dtype(), "causal_conv1d_backward: dx is {} for {} x", dx.dtype(), x.dtype());
  const int64_t B = x.size(0), T_ = x.size(1), C = x.size(2), W = weight.size(1);
  dispatch_float(arithmetic_dtype(x.dtype()), "causal_conv1d_backward", [&](auto tag_) {
    using T = decltype(tag_);
    with_storage<T>(x, [&](auto* xp) {  // x and dx may be bfloat16 for float32 arithmetic
      using S = std::remove_pointer_t<decltype(xp)>;
      const ConvGeometry<T, S> geo{B, T_, C, W, xp, initial_state.defined() ? initial_state.data<T>() : nullptr};
      const std::vector<T> wt = transpose_weight(weight.data<T>(), C, W);
      const T* bp = bias.defined() ? bias.data<T>() : nullptr;
      std::vector<T> dy_full(dys.size() > 1 ? B * T_ * C : 0);
      if (dys.size() > 1) copy_channel_parts(dy_full.data(), dys, B * T_, C, /*to_parts=*/false);
      const T* dyp = dys.size() > 1 ? dy_full.data() : dys[0].data<T>();
      const bool parallel = B * T_ * C * W >= kParallelGrain;

      // dp = dy * act'(p), p recomputed.
      std::vector<T> dp(B * T_ * C);
#pragma omp parallel for if (parallel)
      for (int64_t bt = 0; bt < B * T_; ++bt) {
        T* r = dp.data() + bt * C;
        if (!silu) {
          std::copy(dyp + bt * C, dyp + bt * C + C, r);
          continue;
        }
        conv_preactivation_row(r, geo, wt.data(), bp, bt / T_, bt % T_);
        for (int64_t c = 0; c < C; ++c) {
          const T p = r[c], s = sigmoid_of(p);
          r[c] = dyp[bt * C + c] * s * (T(1) + p * (T(1) - s));
        }
      }

      // dx[t] = sum_w weight[w] dp[t+W-1-w] (bfloat16 dx: summed in a T buffer, each element rounded once)
      constexpr bool kStoredT = std::is_same_v<S, T>;
      std::vector<T> dx_sums(kStoredT ? 0 : B * T_ * C);
      T* dxp = kStoredT ? dx.data<T>() : dx_sums.data();
#pragma omp parallel for if (parallel)
      for (int64_t bt = 0; bt < B * T_; ++bt) {
        const int64_t b = bt / T_, t = bt % T_;
        T* r = dxp + bt * C;
        std::fill(r, r + C, T(0));
        for (int64_t w = 0; w < W; ++w) {
          const int64_t to = t + W - 1 - w;
          if (to >= T_) continue;
          const T* dr = dp.data() + (b * T_ + to) * C;
          for (int64_t c = 0; c < C; ++c) r[c] += wt[w * C + c] * dr[c];
        }
      }
      if constexpr (!kStoredT) {
        S* out = static_cast<S*>(dx.raw_data());
        for (int64_t i = 0; i < B * T_ * C; ++i) out[i] = out_value<S>(dxp[i]);
      }
      if (dinitial_state.defined()) {  // inputs at t = j-(W-1) < 0
        T* di = dinitial_state.data<T>();
        for (int64_t b = 0; b < B; ++b)
          for (int64_t c = 0; c < C; ++c)
            for (int64_t j = 0; j < W - 1; ++j) {
              T s = 0;
              for (int64_t w = 0; w < W; ++w) {
                const int64_t to = j - w;  // (j - (W-1)) + W-1-w
                if (to >= 0 && to < T_) s += weight.data<T>()[c * W + w] * dp[(b * T_ + to) * C + c];
              }
              di[(b * C + c) * (W - 1) + j] = s;
            }
      }

      // dweight [C,W] and dbias [C]: per-thread double sums over (b, t), merged at the end.
      std::vector<double> dw_acc(W * C, 0.0), db_acc(C, 0.0);
#pragma omp parallel if (parallel)
      {
        std::vector<double> dw_local(W * C, 0.0), db_local(C, 0.0);
#pragma omp for
        for (int64_t bt = 0; bt < B * T_; ++bt) {
          const int64_t b = bt / T_, t = bt % T_;
          const T* dr = dp.data() + bt * C;
          for (int64_t c = 0; c < C; ++c) db_local[c] += dr[c];
          for (int64_t w = 0; w < W; ++w) {
            const int64_t ts = t - (W - 1) + w;
            double* acc = dw_local.data() + w * C;
            if (ts >= 0) {
              const S* xr = geo.xs + (b * T_ + ts) * C;
              for (int64_t c = 0; c < C; ++c) acc[c] += static_cast<double>(dr[c]) * in_value<T>(xr[c]);
            } else if (geo.init) {
              for (int64_t c = 0; c < C; ++c) acc[c] += static_cast<double>(dr[c]) * geo.input(b, ts, c);
            }
          }
        }
#pragma omp critical
        {
          for (int64_t i = 0; i < W * C; ++i) dw_acc[i] += dw_local[i];
          for (int64_t c = 0; c < C; ++c) db_acc[c] += db_local[c];
        }
      }
      T* dwp = dweight.data<T>();
      for (int64_t c = 0; c < C; ++c)
        for (int64_t w = 0; w < W; ++w) dwp[c * W + w] = static_cast<T>(dw_acc[w * C + c]);
      if (dbias.defined()) {
        T* dbp = dbias.data<T>();
        for (int64_t c = 0; c < C; ++c) dbp[c] = static_cast<T>(db_acc[c]);
      }
    });
  });
}

// ---------------------------------------------------------------------------------------------------------------
// l2norm

void l2norm_forward(const Tensor& y, const Tensor& rstd, const Tensor& x, double eps) {
  GDN_CHECK(y.is_contiguous() && x.is_contiguous(), "l2norm: contiguous only");
  const int64_t D = x.size(-1), N = x.numel() / D;
  dispatch_float(x.dtype(), "l2norm_forward", [&](auto tag_) {
    using T = decltype(tag_);
    const T* xp = x.data<T>();
    T* yp = y.data<T>();
    T* rp = rstd.data<T>();
#pragma omp parallel for if (N * D >= kParallelGrain)
    for (int64_t i = 0; i < N; ++i) {
      double ss = 0;
      for (int64_t d = 0; d < D; ++d) ss += static_cast<double>(xp[i * D + d]) * xp[i * D + d];
      const T r = static_cast<T>(1.0 / std::sqrt(ss + eps));
      rp[i] = r;
      for (int64_t d = 0; d < D; ++d) yp[i * D + d] = xp[i * D + d] * r;
    }
  });
}

void l2norm_backward(const Tensor& dx, const Tensor& dy, const Tensor& y, const Tensor& rstd) {
  GDN_CHECK(dx.is_contiguous() && dy.is_contiguous() && y.is_contiguous(), "l2norm_backward: contiguous only");
  const int64_t D = y.size(-1), N = y.numel() / D;
  dispatch_float(y.dtype(), "l2norm_backward", [&](auto tag_) {
    using T = decltype(tag_);
    const T* yp = y.data<T>();
    const T* gp = dy.data<T>();
    const T* rp = rstd.data<T>();
    T* dxp = dx.data<T>();
#pragma omp parallel for if (N * D >= kParallelGrain)
    for (int64_t i = 0; i < N; ++i) {
      double dot = 0;
      for (int64_t d = 0; d < D; ++d) dot += static_cast<double>(gp[i * D + d]) * yp[i * D + d];
      const T dt = static_cast<T>(dot);
      for (int64_t d = 0; d < D; ++d) dxp[i * D + d] = rp[i] * (gp[i * D + d] - dt * yp[i * D + d]);
    }
  });
}

// ---------------------------------------------------------------------------------------------------------------
// gated RMSNorm

void rms_norm_gated_forward(const Tensor& y, const Tensor& rstd, const Tensor& x, const Tensor& z, const Tensor& w,
                            double eps) {
  GDN_CHECK(y.is_contiguous() && x.is_contiguous() && z.is_contiguous() && w.is_contiguous(),
            "rms_norm_gated: contiguous only");
  const int64_t D = x.size(-1), N = x.numel() / D;
  dispatch_float(x.dtype(), "rms_norm_gated_forward", [&](auto tag_) {
    using T = decltype(tag_);
    const T* xp = x.data<T>();
    const T* wp = w.data<T>();
    T* rp = rstd.data<T>();
    with_storage<T>(y, [&](auto* yp) {    // y may be bfloat16 for float32 x
      with_storage<T>(z, [&](auto* zp) {  // and so may z
        using Y = std::remove_pointer_t<decltype(yp)>;
#pragma omp parallel for if (N * D >= kParallelGrain)
        for (int64_t i = 0; i < N; ++i) {
          double ss = 0;
          for (int64_t d = 0; d < D; ++d) ss += static_cast<double>(xp[i * D + d]) * xp[i * D + d];
          const T r = static_cast<T>(1.0 / std::sqrt(ss / D + eps));
          rp[i] = r;
          for (int64_t d = 0; d < D; ++d) {
            const T zv = in_value<T>(zp[i * D + d]);
            yp[i * D + d] = out_value<Y>(xp[i * D + d] * r * wp[d] * zv * sigmoid_of(zv));
          }
        }
      });
    });
  });
}

void rms_norm_gated_backward(const Tensor& dx, const Tensor& dz, const Tensor& dw, const Tensor& dy, const Tensor& x,
                             const Tensor& z, const Tensor& w, const Tensor& rstd) {
  GDN_CHECK(dx.is_contiguous() && dz.is_contiguous() && dy.is_contiguous() && x.is_contiguous() &&
                z.is_contiguous() && w.is_contiguous(),
            "rms_norm_gated_backward: contiguous only");
  const int64_t D = x.size(-1), N = x.numel() / D;
  GDN_CHECK(dz.dtype() == z.dtype(), "rms_norm_gated_backward: dz is {} for {} z", dz.dtype(), z.dtype());
  dispatch_float(x.dtype(), "rms_norm_gated_backward", [&](auto tag_) {
    using T = decltype(tag_);
    with_storage<T>(z, [&](auto* zp) {  // z and dz may be bfloat16 for float32 x
      using Z = std::remove_pointer_t<decltype(zp)>;
      const T* xp = x.data<T>();
      const T* wp = w.data<T>();
      const T* gp = dy.data<T>();
      const T* rp = rstd.data<T>();
      T* dxp = dx.data<T>();
      Z* dzp = static_cast<Z*>(dz.raw_data());
      std::vector<double> dw_acc(D, 0.0);
#pragma omp parallel if (N * D >= kParallelGrain)
      {
        std::vector<double> dw_local(D, 0.0);
#pragma omp for
        for (int64_t i = 0; i < N; ++i) {
          const T r = rp[i];
          double dot = 0;  // sum dn * n
          for (int64_t d = 0; d < D; ++d) {
            const T zv = in_value<T>(zp[i * D + d]), s = sigmoid_of(zv), n = xp[i * D + d] * r;
            const T gy = gp[i * D + d];
            dot += static_cast<double>(gy * wp[d] * zv * s) * n;
            dzp[i * D + d] = out_value<Z>(gy * n * wp[d] * s * (T(1) + zv * (T(1) - s)));
            dw_local[d] += static_cast<double>(gy * n * zv * s);
          }
          const T mean_dot = static_cast<T>(dot / D);
          for (int64_t d = 0; d < D; ++d) {
            const T zv = in_value<T>(zp[i * D + d]), n = xp[i * D + d] * r;
            const T dn = gp[i * D + d] * wp[d] * zv * sigmoid_of(zv);
            dxp[i * D + d] = r * (dn - n * mean_dot);
          }
        }
#pragma omp critical
        for (int64_t d = 0; d < D; ++d) dw_acc[d] += dw_local[d];
      }
      T* dwp = dw.data<T>();
      for (int64_t d = 0; d < D; ++d) dwp[d] = static_cast<T>(dw_acc[d]);
    });
  });
}

// ---------------------------------------------------------------------------------------------------------------
// gate

void gdn_gate_forward(const Tensor& g, const Tensor& beta, const Tensor& a, const Tensor& b, const Tensor& A_log,
                      const Tensor& dt_bias) {
  GDN_CHECK(g.is_contiguous() && beta.is_contiguous() && A_log.is_contiguous() && dt_bias.is_contiguous(),
            "gdn_gate: g, beta, A_log, dt_bias contiguous only");
  const int64_t H = A_log.numel(), N = a.numel();
  const int64_t sa = a.checked_row_stride("gdn_gate: a"), sb = b.checked_row_stride("gdn_gate: b");
  GDN_CHECK(b.dtype() == a.dtype(), "gdn_gate: a is {}, b {}", a.dtype(), b.dtype());
  dispatch_float(arithmetic_dtype(a.dtype()), "gdn_gate_forward", [&](auto tag_) {
    using T = decltype(tag_);
    with_storage<T>(a, [&](auto* ap) {  // a and b may be bfloat16 for float32 arithmetic
      const auto* bp = static_cast<decltype(ap)>(b.raw_data());
      const T *alp = A_log.data<T>(), *dtp = dt_bias.data<T>();
      T *gp = g.data<T>(), *betap = beta.data<T>();
#pragma omp parallel for if (N >= kParallelGrain)
      for (int64_t i = 0; i < N; ++i) {
        const int64_t r = i / H, h = i - r * H;
        gp[i] = clamp_gate(raw_gate(alp[h], in_value<T>(ap[r * sa + h]) + dtp[h]).raw);
        betap[i] = sigmoid_of(in_value<T>(bp[r * sb + h]));
      }
    });
  });
}

void gdn_gate_backward(const Tensor& da, const Tensor& db, const Tensor& dA_log, const Tensor& ddt_bias,
                       const Tensor& dg, const Tensor& dbeta, const Tensor& a, const Tensor& b, const Tensor& A_log,
                       const Tensor& dt_bias) {
  GDN_CHECK(dg.is_contiguous() && dbeta.is_contiguous(), "gdn_gate_backward: dg, dbeta contiguous only");
  const int64_t H = A_log.numel(), N = a.numel();
  const int64_t sa = a.checked_row_stride("gdn_gate_backward: a"), sb = b.checked_row_stride("gdn_gate_backward: b");
  const int64_t sda = da.checked_row_stride("gdn_gate_backward: da");
  const int64_t sdb = db.checked_row_stride("gdn_gate_backward: db");
  GDN_CHECK(b.dtype() == a.dtype() && da.dtype() == a.dtype() && db.dtype() == a.dtype(),
            "gdn_gate_backward: a, b, da, db must be of one dtype, got {}, {}, {}, {}", a.dtype(), b.dtype(),
            da.dtype(), db.dtype());
  dispatch_float(arithmetic_dtype(a.dtype()), "gdn_gate_backward", [&](auto tag_) {
    using T = decltype(tag_);
    with_storage<T>(a, [&](auto* ap) {  // a, b, da, db may be bfloat16 for float32 arithmetic
      using A = std::remove_pointer_t<decltype(ap)>;
      const A* bp = static_cast<const A*>(b.raw_data());
      const T *alp = A_log.data<T>(), *dtp = dt_bias.data<T>();
      const T *dgp = dg.data<T>(), *dbetap = dbeta.data<T>();
      A *dap = static_cast<A*>(da.raw_data()), *dbp = static_cast<A*>(db.raw_data());
      std::vector<double> dA_acc(H, 0.0), ddt_acc(H, 0.0);
      for (int64_t i = 0; i < N; ++i) {  // serial: the [H] sums collide across rows (N is B*T*H, small)
        const int64_t r = i / H, h = i - r * H;
        const T xa = in_value<T>(ap[r * sa + h]) + dtp[h];
        const RawGate<T> rg = raw_gate(alp[h], xa);
        const bool clamped = rg.raw < static_cast<T>(kGateMin);  // g = kGateMin, constant in a, A_log, dt_bias
        const T dai = clamped ? T(0) : dgp[i] * (-rg.A) * sigmoid_of(xa);
        dap[r * sda + h] = out_value<A>(dai);
        const T s = sigmoid_of(in_value<T>(bp[r * sb + h]));
        dbp[r * sdb + h] = out_value<A>(dbetap[i] * s * (T(1) - s));
        ddt_acc[h] += dai;
        if (!clamped && alp[h] < static_cast<T>(kGateALogMax)) dA_acc[h] += static_cast<double>(dgp[i]) * rg.raw;
      }
      T *dAp = dA_log.data<T>(), *ddtp = ddt_bias.data<T>();
      for (int64_t h = 0; h < H; ++h) {
        dAp[h] = static_cast<T>(dA_acc[h]);
        ddtp[h] = static_cast<T>(ddt_acc[h]);
      }
    });
  });
}

}  // namespace

void register_gated_deltanet_kernels(KernelTable& t) {
  t.causal_conv1d_forward = causal_conv1d_forward;
  t.causal_conv1d_backward = causal_conv1d_backward;
  t.l2norm_forward = l2norm_forward;
  t.l2norm_backward = l2norm_backward;
  t.rms_norm_gated_forward = rms_norm_gated_forward;
  t.rms_norm_gated_backward = rms_norm_gated_backward;
  t.gdn_gate_forward = gdn_gate_forward;
  t.gdn_gate_backward = gdn_gate_backward;
  register_delta_rule_recurrent_kernels(t);
  register_delta_rule_chunked_kernels(t);
}

}  // namespace gdn::cpu
