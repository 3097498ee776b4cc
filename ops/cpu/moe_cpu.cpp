// ops/cpu/moe_cpu.cpp — CPU kernels of the mixture of experts (ops/moe.h): top-k routing, the dispatch plan, and the
// grouped GEMM of the experts with its weight gradient. The CUDA twins are in cuda/moe.cu.
//
// moe_route: per row n of probs [N,E], k rounds of "the largest entry ranked after the previous pick" in the total
//   order (p desc, id asc), NaN ranking as -inf: ids[n,s] is the s-th largest (lower id first on ties, exactly what
//   a partial sort with that comparator gives), flat[n,s] = n*E + ids[n,s]. The CUDA twin runs the same rounds.
// moe_plan: a counting sort of the M = N*k pairs p = n*k + s by expert ids[p]: counts[e] = #{p : ids[p] = e},
//   offsets = exclusive scan of counts (offsets[E] = M), then order[offsets[e] + j] = the j-th pair of expert e in
//   increasing p (stable), tokens = order / k. Ids outside [0, E) throw.
// grouped_gemm: per group e, out[lo:hi] = a[lo:hi] @ W_e^T (or @ W_e) with Eigen in the element type (the dense
//   gemm's arithmetic); groups run in parallel.
// grouped_gemm_dweight: dW_e = dy[lo:hi]^T a[lo:hi] per group with Eigen in the element type (as the dense
//   linear's weight gradient), 0 for an empty group; the CUDA twin sums the rows in double (agreement to rounding).
// The offsets are read on the host here (they are CPU tensors); the CUDA twin reads them on the device.
#include "ops/cpu/eigen.h"  // first: see that header

#include <cmath>
#include <limits>
#include <vector>

#include "ops/cpu/cpu_kernels.h"
#include "ops/cpu/cpu_loops.h"

namespace gdn::cpu {

namespace {

template <typename T> using RowMat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

void moe_route(const Tensor& ids, const Tensor& flat, const Tensor& probs) {
  GDN_CHECK(ids.is_contiguous() && flat.is_contiguous() && probs.is_contiguous(), "moe_route: contiguous only");
  GDN_CHECK(probs.dim() == 2 && ids.dim() == 2 && ids.shape() == flat.shape() && ids.size(0) == probs.size(0),
            "moe_route: ids {} and flat {} for probs {}", shape_str(ids.shape()), shape_str(flat.shape()),
            shape_str(probs.shape()));
  GDN_CHECK(ids.dtype() == kInt64 && flat.dtype() == kInt64, "moe_route: ids and flat must be int64");
  const int64_t N = probs.size(0), E = probs.size(1), k = ids.size(1);
  GDN_CHECK(k >= 1 && k <= E, "moe_route: k = {} outside [1, E = {}]", k, E);
  dispatch_float(probs.dtype(), "moe_route", [&](auto tag) {
    using T = decltype(tag);
    const T* p = probs.data<T>();
    int64_t* id = ids.data<int64_t>();
    int64_t* fl = flat.data<int64_t>();
    parallel_for(N, std::max<int64_t>(1, kParallelGrain / (E * k)), [&](int64_t begin, int64_t end) {
      for (int64_t n = begin; n < end; ++n) {
        const T* row = p + n * E;
        T prev_v = T(0);
        int64_t prev_e = -1;
        for (int64_t s = 0; s < k; ++s) {
          int64_t best = -1;
          T best_v = T(0);
          for (int64_t e = 0; e < E; ++e) {
            const T v = std::isnan(row[e]) ? -std::numeric_limits<T>::infinity() : row[e];
            const bool after = prev_e < 0 || v < prev_v || (v == prev_v && e > prev_e);
            if (after && (best < 0 || v > best_v)) best = e, best_v = v;
          }
          id[n * k + s] = best;
          fl[n * k + s] = n * E + best;
          prev_v = best_v;
          prev_e = best;
        }
      }
    });
  });
}

void moe_plan(const Tensor& order, const Tensor& tokens, const Tensor& offsets, const Tensor& counts,
              const Tensor& ids) {
  GDN_CHECK(order.is_contiguous() && tokens.is_contiguous() && offsets.is_contiguous() && counts.is_contiguous() &&
                ids.is_contiguous(),
            "moe_plan: contiguous only");
  GDN_CHECK(order.dtype() == kInt64 && tokens.dtype() == kInt64 && offsets.dtype() == kInt64 &&
                counts.dtype() == kInt64 && ids.dtype() == kInt64,
            "moe_plan: every tensor must be int64");
  GDN_CHECK(ids.dim() == 2, "moe_plan: ids must be [N,k], got {}", shape_str(ids.shape()));
  const int64_t M = ids.numel(), k = ids.size(1), E = counts.numel();
  GDN_CHECK(order.numel() == M && tokens.numel() == M && offsets.numel() == E + 1,
            "moe_plan: order {}, tokens {}, offsets {} for {} pairs and {} experts", shape_str(order.shape()),
            shape_str(tokens.shape()), shape_str(offsets.shape()), M, E);
  const int64_t* id = ids.data<int64_t>();
  int64_t* cnt = counts.data<int64_t>();
  int64_t* off = offsets.data<int64_t>();
  for (int64_t e = 0; e < E; ++e) cnt[e] = 0;
  for (int64_t p = 0; p < M; ++p) {
    GDN_CHECK(id[p] >= 0 && id[p] < E, "moe_plan: expert id {} at pair {} is outside [0, {})", id[p], p, E);
    cnt[id[p]]++;
  }
  off[0] = 0;
  for (int64_t e = 0; e < E; ++e) off[e + 1] = off[e] + cnt[e];
  std::vector<int64_t> cursor(off, off + E);
  int64_t* ord = order.data<int64_t>();
  int64_t* tok = tokens.data<int64_t>();
  for (int64_t p = 0; p < M; ++p) {
    const int64_t r = cursor[static_cast<size_t>(id[p])]++;
    ord[r] = p;
    tok[r] = p / k;
  }
}

// The offsets as host values, checked against the contract (0 first, nondecreasing, M last).
std::vector<int64_t> read_offsets(const Tensor& offsets, int64_t E, int64_t M, const char* name) {
  GDN_CHECK(offsets.dtype() == kInt64 && offsets.is_contiguous() && offsets.numel() == E + 1,
            "{}: offsets must be contiguous int64 [{}], got {} {}", name, E + 1, offsets.dtype(),
            shape_str(offsets.shape()));
  const int64_t* o = offsets.data<int64_t>();
  std::vector<int64_t> off(o, o + E + 1);
  GDN_CHECK(off[0] == 0 && off[static_cast<size_t>(E)] == M, "{}: offsets must run from 0 to M = {}, got {} .. {}",
            name, M, off[0], off[static_cast<size_t>(E)]);
  for (int64_t e = 0; e < E; ++e)
    GDN_CHECK(off[static_cast<size_t>(e)] <= off[static_cast<size_t>(e + 1)], "{}: offsets decrease at expert {}",
              name, e);
  return off;
}

void grouped_gemm(const Tensor& out, const Tensor& a, const std::vector<Tensor>& weights, const Tensor& offsets,
                  bool transpose_w) {
  GDN_CHECK(out.is_contiguous() && a.is_contiguous(), "grouped_gemm: contiguous only");
  GDN_CHECK(out.dim() == 2 && a.dim() == 2 && out.size(0) == a.size(0), "grouped_gemm: out {} for a {}",
            shape_str(out.shape()), shape_str(a.shape()));
  const int64_t M = a.size(0), Q = a.size(1), P = out.size(1), E = static_cast<int64_t>(weights.size());
  const Shape wshape = transpose_w ? Shape{P, Q} : Shape{Q, P};
  for (const Tensor& w : weights)
    GDN_CHECK(w.is_contiguous() && w.dtype() == a.dtype() && w.shape() == wshape,
              "grouped_gemm: every weight must be contiguous {} {}, got {} {}", a.dtype(), shape_str(wshape),
              w.dtype(), shape_str(w.shape()));
  GDN_CHECK(out.dtype() == a.dtype(), "grouped_gemm: dtype {} vs {}", out.dtype(), a.dtype());
  const std::vector<int64_t> off = read_offsets(offsets, E, M, "grouped_gemm");
  dispatch_float(a.dtype(), "grouped_gemm", [&](auto tag) {
    using T = decltype(tag);
#pragma omp parallel for schedule(dynamic, 1) if (M * P * Q >= kParallelGrain)
    for (int64_t e = 0; e < E; ++e) {
      const int64_t lo = off[static_cast<size_t>(e)], rows = off[static_cast<size_t>(e + 1)] - lo;
      if (rows == 0) continue;
      Eigen::Map<RowMat<T>> o(out.data<T>() + lo * P, rows, P);
      Eigen::Map<const RowMat<T>> am(a.data<T>() + lo * Q, rows, Q);
      Eigen::Map<const RowMat<T>> w(weights[static_cast<size_t>(e)].data<T>(), wshape[0], wshape[1]);
      if (transpose_w)
        o.noalias() = am * w.transpose();
      else
        o.noalias() = am * w;
    }
  });
}

void grouped_gemm_dweight(const std::vector<Tensor>& dweights, const Tensor& dy, const Tensor& a,
                          const Tensor& offsets) {
  GDN_CHECK(dy.is_contiguous() && a.is_contiguous(), "grouped_gemm_dweight: contiguous only");
  GDN_CHECK(dy.dim() == 2 && a.dim() == 2 && dy.size(0) == a.size(0) && dy.dtype() == a.dtype(),
            "grouped_gemm_dweight: dy {} {} for a {} {}", dy.dtype(), shape_str(dy.shape()), a.dtype(),
            shape_str(a.shape()));
  const int64_t M = a.size(0), Q = a.size(1), P = dy.size(1), E = static_cast<int64_t>(dweights.size());
  for (const Tensor& w : dweights)
    GDN_CHECK(w.is_contiguous() && w.dtype() == a.dtype() && w.shape() == Shape({P, Q}),
              "grouped_gemm_dweight: every dweight must be contiguous {} [{},{}], got {} {}", a.dtype(), P, Q,
              w.dtype(), shape_str(w.shape()));
  const std::vector<int64_t> off = read_offsets(offsets, E, M, "grouped_gemm_dweight");
  dispatch_float(a.dtype(), "grouped_gemm_dweight", [&](auto tag) {
    using T = decltype(tag);
    for (int64_t e = 0; e < E; ++e) {
      const int64_t lo = off[static_cast<size_t>(e)], rows = off[static_cast<size_t>(e + 1)] - lo;
      Eigen::Map<RowMat<T>> dw(dweights[static_cast<size_t>(e)].data<T>(), P, Q);
      if (rows == 0) {
        dw.setZero();
        continue;
      }
      Eigen::Map<const RowMat<T>> dym(dy.data<T>() + lo * P, rows, P);
      Eigen::Map<const RowMat<T>> am(a.data<T>() + lo * Q, rows, Q);
      dw.noalias() = dym.transpose() * am;
    }
  });
}

}  // namespace

void register_moe_kernels(KernelTable& t) {
  t.moe_route = moe_route;
  t.moe_plan = moe_plan;
  t.grouped_gemm = grouped_gemm;
  t.grouped_gemm_dweight = grouped_gemm_dweight;
}

}  // namespace gdn::cpu
