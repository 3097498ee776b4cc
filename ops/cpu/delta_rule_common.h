// ops/cpu/delta_rule_common.h — index arithmetic shared by the recurrent and chunked delta-rule CPU kernels.
//
// Layouts (all contiguous, glossary of ops/gated_deltanet.h): q, k [B,T,Hk,K]; v, o [B,T,Hv,V]; g, beta [B,T,Hv];
// states [B,Hv,K,V]. Value head hv reads key head hv / (Hv/Hk). Both kernels run one task per (batch, value head);
// when Hv > Hk several tasks produce gradient rows for the same key head, so dq and dk go through
// KeyGradRows: the task's rows directly in the output when Hv == Hk, else a scratch [B,Hv,T,K] summed per key head
// after the parallel loop (no atomics, deterministic).
#pragma once

#include <cstdint>
#include <vector>

namespace gdn::cpu {

struct DeltaRuleShape {
  int64_t B, T, Hk, Hv, K, V;
  int64_t group() const { return Hv / Hk; }
  int64_t key_head(int64_t hv) const { return hv / group(); }
  int64_t key_row(int64_t b, int64_t t, int64_t hv) const { return ((b * T + t) * Hk + key_head(hv)) * K; }
  int64_t value_row(int64_t b, int64_t t, int64_t hv) const { return ((b * T + t) * Hv + hv) * V; }
  int64_t gate_index(int64_t b, int64_t t, int64_t hv) const { return (b * T + t) * Hv + hv; }
  int64_t state_offset(int64_t b, int64_t hv) const { return (b * Hv + hv) * K * V; }
};

// Gradient rows [T,K] of one (batch, value head) for a key-side input (dq or dk); see the file comment.
template <typename Tp> class KeyGradRows {
 public:
  KeyGradRows(Tp* out, const DeltaRuleShape& s) : out_(out), s_(s) {
    if (s.group() > 1) scratch_.assign(s.B * s.Hv * s.T * s.K, Tp(0));
  }
  // First element of row t = 0 of (b, hv); rows are time_stride() apart.
  Tp* rows(int64_t b, int64_t hv) {
    if (scratch_.empty()) return out_ + s_.key_row(b, 0, hv);
    return scratch_.data() + (b * s_.Hv + hv) * s_.T * s_.K;
  }
  int64_t time_stride() const { return scratch_.empty() ? s_.Hk * s_.K : s_.K; }
  // Sums the value heads of each key head into the output (only when Hv > Hk).
  void finish() {
    if (scratch_.empty()) return;
    const int64_t G = s_.group();
#pragma omp parallel for collapse(2) if (s_.B * s_.T * s_.Hv * s_.K >= (1 << 15))
    for (int64_t b = 0; b < s_.B; ++b)
      for (int64_t t = 0; t < s_.T; ++t)
        for (int64_t hk = 0; hk < s_.Hk; ++hk) {
          Tp* dst = out_ + ((b * s_.T + t) * s_.Hk + hk) * s_.K;
          for (int64_t i = 0; i < s_.K; ++i) dst[i] = Tp(0);
          for (int64_t j = 0; j < G; ++j) {
            const Tp* src = scratch_.data() + ((b * s_.Hv + hk * G + j) * s_.T + t) * s_.K;
            for (int64_t i = 0; i < s_.K; ++i) dst[i] += src[i];
          }
        }
  }

 private:
  Tp* out_;
  DeltaRuleShape s_;
  std::vector<Tp> scratch_;
};

}  // namespace gdn::cpu
