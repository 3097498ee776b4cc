// tests/test_hf_format.cpp — the Hugging Face form (train/hf_format.h) without Python: export -> import is
// bit-identical (dense, MoE with and without a shared expert, tied embeddings, Hv = 2 Hk), the names and layouts
// of transformers' Qwen3Next (row orders of in_proj_qkvz / in_proj_ba, conv shape, 1 + w norms), the config
// fields, the one-line refusals in both directions, and the tokenizer.json: its structure, the round trip of the
// merges, and its pre-tokenization regex, run with std::wregex on byte-level characters, cutting exactly the chunks
// of our pretokenize().
#include <doctest/doctest.h>

#include <functional>
#include <random>
#include <regex>
#include <set>

#include "tests/test_helpers.h"
#include "train/config.h"
#include "train/hf_format.h"
#include "train/safetensors.h"

namespace gdn {
namespace {

ModelConfig tiny_config() {
  ModelConfig c;
  c.vocab_size = 300;
  c.d_model = 16;
  c.n_layers = 2;
  c.n_k_heads = 2;
  c.n_v_heads = 4;
  c.head_k_dim = 8;
  c.head_v_dim = 4;
  c.conv_size = 4;
  c.ffn_dim = 24;
  c.moe_ffn_dim = 12;
  return c;
}

// Random values everywhere, norms in [0.5, 2] (where w - 1 is exact), so that a wrong row or name shows.
void randomise(GatedDeltaNetLM& m, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-1.f, 1.f), n(0.5f, 2.f);
  for (const auto& p : m.parameters()) {
    float* d = p.value.data<float>();
    const bool norm = p.name.find("norm") != std::string::npos;
    for (int64_t i = 0; i < p.value.numel(); ++i) d[i] = norm ? n(rng) : u(rng);
  }
}

std::map<std::string, Tensor> as_map(const std::vector<std::pair<std::string, Tensor>>& v) {
  return std::map<std::string, Tensor>(v.begin(), v.end());
}

void check_round_trip(const ModelConfig& c) {
  GatedDeltaNetLM a(c, 1);
  randomise(a, 7);
  HfCheckpoint ck = hf_checkpoint_from(hf_config_json(c, c.vocab_size - 1), as_map(hf_tensors(a)), "test");
  CHECK(model_config_json(ck.config) == model_config_json(c));
  GatedDeltaNetLM b(ck.config, 2);
  load_hf_weights(b, ck);
  auto pa = a.parameters(), pb = b.parameters();
  REQUIRE(pa.size() == pb.size());
  for (size_t i = 0; i < pa.size(); ++i) {
    INFO(pa[i].name);
    CHECK(pa[i].value.to_double_vector() == pb[i].value.to_double_vector());
  }
}

std::vector<double> row_ids(const Tensor& t) {  // first element of every row
  std::vector<double> v = t.to_double_vector(), out;
  const int64_t cols = t.numel() / t.size(0);
  for (int64_t r = 0; r < t.size(0); ++r) out.push_back(v[r * cols]);
  return out;
}

}  // namespace

TEST_CASE("hf: export -> import is bit-identical (dense, MoE, shared expert, tied)") {
  ModelConfig c = tiny_config();
  check_round_trip(c);
  c.tie_embeddings = true;
  check_round_trip(c);
  c.tie_embeddings = false;
  c.n_experts = 3;
  c.moe_top_k = 2;
  check_round_trip(c);
  c.moe_shared_expert = true;
  check_round_trip(c);
  c.moe_renormalize = false;
  c.n_v_heads = 2;
  check_round_trip(c);
}

TEST_CASE("hf: transformers' names, row orders, conv shape and 1 + w norms") {
  ModelConfig c = tiny_config();
  c.n_layers = 1;
  c.head_k_dim = 2;
  c.head_v_dim = 1;  // Hk = 2, Hv = 4, K = 2, V = 1: q 0-3, k 4-7, v 8-11, z 12-15 in our row order
  GatedDeltaNetLM m(c, 1);
  for (const auto& p : m.parameters()) {
    if (p.name.find("in_proj") == std::string::npos) continue;
    float* d = p.value.data<float>();
    const int64_t cols = p.value.size(1);
    for (int64_t i = 0; i < p.value.numel(); ++i) d[i] = static_cast<float>(i / cols);
  }
  auto t = as_map(hf_tensors(m));
  std::set<std::string> names;
  for (const auto& [n, v] : t) names.insert(n);
  const std::string L = "model.layers.0.";
  CHECK(names == std::set<std::string>{
                     "model.embed_tokens.weight", L + "input_layernorm.weight", L + "linear_attn.in_proj_qkvz.weight",
                     L + "linear_attn.in_proj_ba.weight", L + "linear_attn.conv1d.weight", L + "linear_attn.A_log",
                     L + "linear_attn.dt_bias", L + "linear_attn.norm.weight", L + "linear_attn.out_proj.weight",
                     L + "post_attention_layernorm.weight", L + "mlp.gate_proj.weight", L + "mlp.up_proj.weight",
                     L + "mlp.down_proj.weight", "model.norm.weight", "lm_head.weight"});
  // Per key head g: q_g, k_g, then its r = 2 value heads of v and of z.
  CHECK(row_ids(t[L + "linear_attn.in_proj_qkvz.weight"]) ==
        std::vector<double>{0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15});
  CHECK(row_ids(t[L + "linear_attn.in_proj_ba.weight"]) == std::vector<double>{0, 1, 4, 5, 2, 3, 6, 7});
  CHECK(t[L + "linear_attn.conv1d.weight"].shape() == Shape({2 * 2 * 2 + 4, 1, 4}));
  CHECK(t[L + "input_layernorm.weight"].to_double_vector() == std::vector<double>(16, 0.0));  // ours 1 -> 0
  CHECK(t[L + "linear_attn.norm.weight"].to_double_vector() == std::vector<double>(1, 1.0));   // plain weight

  c.n_experts = 2;  // MoE without a shared expert: the zero expert of width 1 stands for none
  GatedDeltaNetLM moe(c, 1);
  auto tm = as_map(hf_tensors(moe));
  for (const char* n : {"mlp.gate.weight", "mlp.experts.0.gate_proj.weight", "mlp.experts.1.down_proj.weight",
                        "mlp.shared_expert.up_proj.weight", "mlp.shared_expert_gate.weight"})
    CHECK_MESSAGE(tm.count(L + n), n);
  CHECK(tm[L + "mlp.shared_expert.down_proj.weight"].shape() == Shape({16, 1}));
  CHECK(tm[L + "mlp.shared_expert.gate_proj.weight"].to_double_vector() == std::vector<double>(16, 0.0));
}

TEST_CASE("hf: config.json fields") {
  ModelConfig c = tiny_config();
  c.n_experts = 4;
  c.moe_top_k = 2;
  c.moe_shared_expert = true;
  nlohmann::json j = hf_config_json(c, 299);
  CHECK(j["architectures"] == nlohmann::json::array({"Qwen3NextForCausalLM"}));
  CHECK(j["model_type"] == "qwen3_next");
  CHECK(j["layer_types"] == nlohmann::json::array({"linear_attention", "linear_attention"}));
  CHECK(j["hidden_size"] == 16);
  CHECK(j["linear_num_key_heads"] == 2);
  CHECK(j["linear_num_value_heads"] == 4);
  CHECK(j["linear_key_head_dim"] == 8);
  CHECK(j["linear_value_head_dim"] == 4);
  CHECK(j["linear_conv_kernel_dim"] == 4);
  CHECK(j["num_experts"] == 4);
  CHECK(j["num_experts_per_tok"] == 2);
  CHECK(j["moe_intermediate_size"] == 12);
  CHECK(j["shared_expert_intermediate_size"] == 12);
  CHECK(j["decoder_sparse_step"] == 1);
  CHECK(j["mlp_only_layers"].empty());
  CHECK(j["rms_norm_eps"] == 1e-6);
  CHECK(j["hidden_act"] == "silu");
  CHECK(j["eos_token_id"] == 299);
  for (const char* k : {"num_attention_heads", "num_key_value_heads", "head_dim", "rope_parameters",
                        "max_position_embeddings", "tie_word_embeddings", "norm_topk_prob", "intermediate_size"})
    CHECK_MESSAGE(j.contains(k), k);
  CHECK(hf_config_json(tiny_config(), 299)["num_experts"] == 0);
}

TEST_CASE("hf: what the other side cannot represent is one line naming it") {
  ModelConfig c = tiny_config();
  GatedDeltaNetLM m(c, 1);
  const auto tensors = as_map(hf_tensors(m));
  const nlohmann::json good = hf_config_json(c, 299);
  auto import_error = [&](nlohmann::json j, std::map<std::string, Tensor> t) {
    return test::user_error_of([&] {
      HfCheckpoint ck = hf_checkpoint_from(j, t, "dir");
      GatedDeltaNetLM b(ck.config, 1);
      load_hf_weights(b, ck);
    });
  };
  CHECK(import_error(good, tensors).empty());
  nlohmann::json j = good;
  j["layer_types"][1] = "full_attention";
  CHECK(import_error(j, tensors).find("'layer_types'") != std::string::npos);
  j = good;
  j["model_type"] = "llama";
  CHECK(import_error(j, tensors).find("'model_type'") != std::string::npos);
  j = good;
  j.erase("linear_num_value_heads");
  CHECK(import_error(j, tensors).find("'linear_num_value_heads'") != std::string::npos);
  j = good;
  j["hidden_act"] = "gelu";
  CHECK(import_error(j, tensors).find("'hidden_act'") != std::string::npos);
  auto extra = tensors;
  extra["mtp.fc.weight"] = extra["model.norm.weight"];
  CHECK(import_error(good, extra).find("'mtp.fc.weight'") != std::string::npos);
  auto missing = tensors;
  missing.erase("model.layers.1.linear_attn.A_log");
  CHECK(import_error(good, missing).find("'model.layers.1.linear_attn.A_log'") != std::string::npos);

  ModelConfig mc = c;
  mc.n_experts = 2;
  mc.moe_shared_expert = true;
  GatedDeltaNetLM moe(mc, 1);
  const auto moe_t = as_map(hf_tensors(moe));
  j = hf_config_json(mc, 299);
  CHECK(import_error(j, moe_t).empty());
  j["mlp_only_layers"] = {0};
  CHECK(import_error(j, moe_t).find("'mlp_only_layers'") != std::string::npos);
  j = hf_config_json(mc, 299);
  j["shared_expert_intermediate_size"] = 7;
  CHECK(import_error(j, moe_t).find("'shared_expert_intermediate_size'") != std::string::npos);
  // The fused expert form transformers keeps in memory reads the same.
  auto fused = moe_t;
  for (int l = 0; l < 2; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".mlp.experts.";
    std::vector<double> gu, dn;
    for (int e = 0; e < 2; ++e) {
      for (const char* n : {"gate_proj", "up_proj"}) {
        auto v = fused[p + std::to_string(e) + "." + n + ".weight"].to_double_vector();
        gu.insert(gu.end(), v.begin(), v.end());
      }
      auto v = fused[p + std::to_string(e) + ".down_proj.weight"].to_double_vector();
      dn.insert(dn.end(), v.begin(), v.end());
      for (const char* n : {"gate_proj", "up_proj", "down_proj"})
        fused.erase(p + std::to_string(e) + "." + n + ".weight");
    }
    fused[p + "gate_up_proj"] = Tensor::from_vector(gu, {2, 24, 16});
    fused[p + "down_proj"] = Tensor::from_vector(dn, {2, 16, 12});
  }
  HfCheckpoint a = hf_checkpoint_from(hf_config_json(mc, 299), moe_t, "a");
  HfCheckpoint b = hf_checkpoint_from(hf_config_json(mc, 299), fused, "b");
  for (const auto& [name, t] : a.tensors) {
    INFO(name);
    REQUIRE(b.tensors.count(name));
    CHECK(b.tensors.at(name).to_double_vector() == t.to_double_vector());
  }

  // Export: transformers computes exp(A_log) without our guard.
  for (const auto& p : m.parameters())
    if (p.name == "layers.1.attn.A_log") p.value.data<float>()[0] = 85.f;
  CHECK(test::user_error_of([&] { hf_tensors(m); }).find("layers.1.attn.A_log[0]") != std::string::npos);
}

TEST_CASE("hf: tokenizer.json structure and round trip") {
  std::vector<std::string_view> docs = {"the cat sat on the mat, the cat sat.", "1790 1791 1790 -- the end\n\n the"};
  BpeTokenizer tok = BpeTokenizer::train(docs, 290);
  nlohmann::json j = hf_tokenizer_json(tok);
  CHECK(j["model"]["type"] == "BPE");
  CHECK(static_cast<int>(j["model"]["vocab"].size()) == tok.vocab_size());
  CHECK(static_cast<int>(j["model"]["merges"].size()) == tok.num_merges());
  CHECK(j["model"]["vocab"][byte_level_char(' ') + "the"] == tok.encode(" the")[0]);
  CHECK(j["model"]["vocab"][byte_level_char('A')] == 65);
  CHECK(byte_level_char(' ') == "\u0120");
  CHECK(byte_level_char('\n') == "\u010a");
  REQUIRE(j["added_tokens"].size() == 1);
  CHECK(j["added_tokens"][0]["content"] == "<|endoftext|>");
  CHECK(j["added_tokens"][0]["id"] == tok.eot_id());
  CHECK(j["added_tokens"][0]["special"] == true);
  CHECK(j["pre_tokenizer"]["type"] == "Sequence");
  CHECK(j["pre_tokenizer"]["pretokenizers"][0]["type"] == "ByteLevel");
  CHECK(j["pre_tokenizer"]["pretokenizers"][0]["use_regex"] == false);
  CHECK(j["pre_tokenizer"]["pretokenizers"][1]["type"] == "Split");
  CHECK(j["pre_tokenizer"]["pretokenizers"][1]["behavior"] == "Isolated");
  CHECK(j["decoder"]["type"] == "ByteLevel");
  CHECK(j["normalizer"].is_null());
  BpeTokenizer back = tokenizer_from_hf_json(nlohmann::json::parse(j.dump()), "t");
  CHECK(back.fingerprint() == tok.fingerprint());
  // Merges as pairs (the newer tokenizers form) read the same.
  nlohmann::json pairs = j;
  for (auto& m : pairs["model"]["merges"]) {
    std::string s = m.get<std::string>();
    m = nlohmann::json::array({s.substr(0, s.find(' ')), s.substr(s.find(' ') + 1)});
  }
  CHECK(tokenizer_from_hf_json(pairs, "t").fingerprint() == tok.fingerprint());
  nlohmann::json bad = j;
  bad["pre_tokenizer"]["pretokenizers"][1]["pattern"]["Regex"] = "\\w+";
  CHECK(test::user_error_of([&] { tokenizer_from_hf_json(bad, "t.json"); }).find("pre_tokenizer") != std::string::npos);
}

TEST_CASE("hf: the tokenizer.json regex cuts exactly our pre-tokenizer's chunks") {
  // The regex runs on byte-level characters (one per byte), as tokenizers' Split after ByteLevel(use_regex=false).
  auto widen = [](const std::string& utf8) {
    std::wstring w;
    for (size_t i = 0; i < utf8.size();) {
      unsigned char c = static_cast<unsigned char>(utf8[i]);
      int n = c < 0x80 ? 1 : c < 0xE0 ? 2 : 3;
      wchar_t cp = n == 1 ? c : n == 2 ? (c & 0x1F) : (c & 0x0F);
      for (int k = 1; k < n; ++k) cp = (cp << 6) | (static_cast<unsigned char>(utf8[i + k]) & 0x3F);
      w += cp;
      i += n;
    }
    return w;
  };
  const std::wregex re(widen(hf_pretokenize_regex()), std::regex::ECMAScript);
  auto hf_chunks = [&](const std::string& text) {
    std::wstring w;
    for (unsigned char b : text) w += widen(byte_level_char(b));
    std::vector<size_t> lengths;
    size_t pos = 0;
    for (auto it = std::wsregex_iterator(w.begin(), w.end(), re); it != std::wsregex_iterator(); ++it) {
      CHECK(static_cast<size_t>(it->position()) == pos);  // no gaps
      lengths.push_back(static_cast<size_t>(it->length()));
      pos += static_cast<size_t>(it->length());
    }
    CHECK(pos == w.size());
    return lengths;
  };
  auto ours = [](const std::string& text) {
    std::vector<size_t> lengths;
    for (std::string_view c : pretokenize(text)) lengths.push_back(c.size());
    return lengths;
  };
  std::vector<std::string> texts = {
      "Fellow-Citizens of the Senate and House of Representatives:\n\n  It is 1790; we're here.",
      "  hello", "\t\tword", " \n", "a  b", "a \tb", "x \t b", "caf\xc3\xa9 na\xc3\xafve \xe2\x80\x94 ok", "   ",
      " ", "a ", "$ 100.00!!", "\r\n\r\n", "tab\there", std::string(300, ' ') + "word", std::string(257, ' ') + "w",
      std::string(256, ' ') + "w", std::string(258, ' '), std::string(600, 'a'), std::string(1, ' ').append(300, 'b'),
      std::string(520, '-'), std::string(300, '\n'), std::string(1, '\0') + "\x01 x\x7f\xad"};
  std::mt19937 rng(3);
  const char alphabet[] = {' ', ' ', '\t', 'a', 'Z', '1', '.', '\n', '\r', '\xc3', '\xa9', '\x7f', '-'};
  for (int i = 0; i < 400; ++i) {
    std::string s;
    for (int n = static_cast<int>(rng() % 40); n > 0; --n) s += alphabet[rng() % sizeof(alphabet)];
    texts.push_back(s);
  }
  for (const std::string& t : texts) {
    INFO("text #" << (&t - texts.data()) << " of " << t.size() << " bytes");
    CHECK(hf_chunks(t) == ours(t));
  }
}

}  // namespace gdn
