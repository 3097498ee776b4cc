// train/generate.cpp — see generate.h.
#include "train/generate.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "ops/ops.h"

namespace gdn {

int64_t sample_token(const std::vector<double>& logits, const SamplingOptions& opts, Generator& gen) {
  const int64_t V = static_cast<int64_t>(logits.size());
  if (opts.temperature <= 0) return std::max_element(logits.begin(), logits.end()) - logits.begin();
  std::vector<int64_t> order(V);
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return logits[a] > logits[b]; });
  int64_t keep = opts.top_k > 0 ? std::min(opts.top_k, V) : V;
  std::vector<double> p(keep);
  const double m = logits[order[0]];
  double total = 0;
  for (int64_t i = 0; i < keep; ++i) total += p[i] = std::exp((logits[order[i]] - m) / opts.temperature);
  // Nucleus: the smallest prefix whose probability reaches top_p.
  double cum = 0;
  int64_t cut = keep;
  for (int64_t i = 0; i < keep; ++i) {
    cum += p[i] / total;
    if (cum >= opts.top_p) {
      cut = i + 1;
      break;
    }
  }
  double mass = std::accumulate(p.begin(), p.begin() + cut, 0.0);
  double r = gen.uniform() * mass;
  for (int64_t i = 0; i < cut; ++i) {
    r -= p[i];
    if (r <= 0) return order[i];
  }
  return order[cut - 1];
}

namespace {
// Logits of the last position of a [1,T,V] forward, on the host.
std::vector<double> last_logits(const Tensor& logits) {
  const int64_t T = logits.size(1), V = logits.size(2);
  Tensor last = slice(logits, 1, T - 1, T);
  return to_device(contiguous(reshape(last, {V})), kCPU).to_double_vector();
}
}  // namespace

std::vector<int64_t> generate_ids(const GatedDeltaNetLM& model, const std::vector<int64_t>& prompt,
                                  const SamplingOptions& opts, const std::function<void(int64_t)>& on_token) {
  GDN_CHECK(!prompt.empty(), "generate: empty prompt");
  NoGradGuard no_grad;
  Generator gen(opts.seed);
  ModelCache cache;
  const int64_t P = static_cast<int64_t>(prompt.size());
  std::vector<double> logits =
      last_logits(model.forward(Tensor::from_int64(prompt, {1, P}, model.device()), &cache).logits);
  std::vector<int64_t> out;
  for (int64_t i = 0; i < opts.max_tokens; ++i) {
    int64_t next = sample_token(logits, opts, gen);
    if (next == opts.stop_token) break;
    out.push_back(next);
    if (on_token) on_token(next);
    logits = last_logits(model.forward(Tensor::from_int64({next}, {1, 1}, model.device()), &cache).logits);
  }
  return out;
}

std::string generate_text(const GatedDeltaNetLM& model, const BpeTokenizer& tokenizer, const std::string& prompt,
                          const SamplingOptions& opts) {
  std::vector<int32_t> ids32 = tokenizer.encode(prompt);
  std::vector<int64_t> ids(ids32.begin(), ids32.end());
  if (ids.empty()) ids.push_back(tokenizer.eot_id());
  SamplingOptions o = opts;
  if (o.stop_token < 0) o.stop_token = tokenizer.eot_id();
  std::vector<int64_t> cont = generate_ids(model, ids, o);
  std::vector<int32_t> all32(ids32.begin(), ids32.end());
  for (int64_t t : cont) all32.push_back(static_cast<int32_t>(t));
  return tokenizer.decode(all32);
}

}  // namespace gdn
