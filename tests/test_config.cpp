// tests/test_config.cpp — train/config.h: presets, JSON and --set layering, type errors, every validate() rule,
// to_json round trip, config files, checkpoint model-config comparison.
#include <doctest/doctest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <set>

#include <unistd.h>

#include "core/check.h"
#include "train/config.h"

using namespace gdn;
using nlohmann::json;

namespace {

// A scratch file removed at scope exit.
struct TempFile {
  std::string path;
  explicit TempFile(const std::string& text, const std::string& name = "gdn_test_config.json") {
    path = (std::filesystem::temp_directory_path() / (std::to_string(::getpid()) + "_" + name)).string();
    std::ofstream(path) << text;
  }
  ~TempFile() { std::remove(path.c_str()); }
};

// The UserError message of fn(), or "" when it does not throw one.
template <typename Fn> std::string user_error_of(Fn fn) {
  try {
    fn();
  } catch (const UserError& e) {
    return e.what();
  }
  return "";
}

// validate() on the small preset after one --set override; "" when valid.
std::string invalid_after(const std::string& override_text) {
  TrainConfig c = preset_config("small");
  apply_override(c, override_text);
  return user_error_of([&] { validate(c); });
}

}  // namespace

TEST_CASE("config: presets") {
  TrainConfig s = preset_config("small");
  CHECK(s.model.d_model == 128);
  CHECK(s.model.n_layers == 4);
  CHECK(s.model.ffn_dim == 256);
  CHECK(s.seq_len == 128);
  CHECK(s.batch_size == 2);
  CHECK(s.steps == 1000);
  CHECK(s.warmup_steps == 50);
  CHECK(to_json(s) == to_json(TrainConfig{}));  // the struct defaults are the small preset

  TrainConfig m = preset_config("medium");
  CHECK(m.preset == "medium");
  CHECK(m.model.d_model == 256);
  CHECK(m.model.n_layers == 8);
  CHECK(m.model.ffn_dim == 1024);
  CHECK(m.seq_len == 256);
  CHECK(m.batch_size == 4);
  CHECK(m.steps == 2000);
  CHECK(m.warmup_steps == 100);

  TrainConfig l = preset_config("large");
  CHECK(l.model.d_model == 512);
  CHECK(l.model.n_layers == 12);
  CHECK(l.model.ffn_dim == 2048);
  CHECK(l.seq_len == 512);
  CHECK(l.batch_size == 8);
  CHECK(l.steps == 5000);
  CHECK(l.warmup_steps == 250);

  // The seed-* presets: the same run sizes as small / medium / large, with the seed's ungated DeltaNet, 8 heads of
  // D/8 and FFN 4D.
  TrainConfig sm = preset_config("seed-medium");
  CHECK(sm.preset == "seed-medium");
  CHECK(sm.model.d_model == 256);
  CHECK(sm.model.n_layers == 8);
  CHECK(sm.model.n_k_heads == 8);
  CHECK(sm.model.n_v_heads == 8);
  CHECK(sm.model.head_k_dim == 32);
  CHECK(sm.model.head_v_dim == 32);
  CHECK(sm.model.ffn_dim == 1024);
  CHECK(sm.seq_len == 256);
  CHECK(sm.batch_size == 4);
  CHECK(sm.steps == 2000);
  CHECK_FALSE(sm.model.decay_gate);
  CHECK_FALSE(sm.model.output_gate);
  CHECK_FALSE(sm.model.tie_embeddings);
  CHECK(preset_config("seed-small").model.head_k_dim == 16);
  CHECK(preset_config("seed-small").model.ffn_dim == 512);
  CHECK(preset_config("seed-large").model.head_v_dim == 64);
  CHECK(preset_config("seed-large").model.ffn_dim == 2048);

  for (const std::string& name : preset_names()) {
    CAPTURE(name);
    TrainConfig c = preset_config(name);
    const bool seed = name.rfind("seed-", 0) == 0;
    const TrainConfig base = preset_config(seed ? name.substr(5) : name);
    CHECK(c.model.n_k_heads == (seed ? 8 : 4));
    CHECK(c.model.n_v_heads == (seed ? 8 : 4));
    CHECK(c.model.head_k_dim == (seed ? c.model.d_model / 8 : 64));
    CHECK(c.model.head_v_dim == (seed ? c.model.d_model / 8 : 64));
    CHECK(c.model.decay_gate == !seed);
    CHECK(c.model.output_gate == !seed);
    CHECK(c.model.d_model == base.model.d_model);
    CHECK(c.model.n_layers == base.model.n_layers);
    CHECK((c.seq_len == base.seq_len && c.batch_size == base.batch_size && c.steps == base.steps));
    CHECK(c.model.conv_size == 4);
    CHECK(c.model.vocab_size == (seed ? 49152 : 8192));  // seed: the seed's, an upper bound for the tokenizer
    CHECK(c.lr == 3e-4);
    CHECK(c.beta1 == 0.9);
    CHECK(c.beta2 == 0.95);
    CHECK(c.adam_eps == 1e-8);
    CHECK(c.weight_decay == 0.1);
    CHECK(c.grad_clip == 1.0);
    CHECK(c.eval_every == 100);
    CHECK(c.eval_batches == 50);
    CHECK(c.out_dir == "results");
    CHECK_NOTHROW(validate(c));
  }
  std::string msg = user_error_of([] { preset_config("huge"); });
  CHECK(msg.find("huge") != std::string::npos);
  CHECK(msg.find("small, medium, large, seed-small, seed-medium, seed-large") != std::string::npos);
}

TEST_CASE("config: the table covers every key once") {
  std::set<std::string> names;
  for (const ConfigField& f : config_fields()) CHECK(names.insert(f.name).second);
  for (const char* key : {"vocab_size", "d_model", "n_layers", "n_k_heads", "n_v_heads", "head_k_dim", "head_v_dim",
                          "conv_size", "decay_gate", "output_gate", "ffn_dim", "tie_embeddings", "norm_eps",
                          "init_std", "chunk_size", "n_experts",
                          "moe_top_k", "moe_ffn_dim", "moe_renormalize", "moe_shared_expert", "moe_aux_loss_coef",
                          "preset", "data", "out_dir", "seq_len", "batch_size", "steps", "warmup_steps", "lr",
                          "min_lr_ratio", "lr_schedule", "beta1", "beta2", "adam_eps", "weight_decay", "grad_clip",
                          "eval_every", "eval_batches", "checkpoint_every", "log_every", "seed", "threads",
                          "val_fraction", "device", "dtype", "precision", "cuda_graph", "fused_loss", "dp_bucket_mb", "sample_tokens", "sample_prompt",
                          "no_decay"})
    CHECK_MESSAGE(names.count(key) == 1, key);
  CHECK(names.size() == 52);
  CHECK(model_config_json(ModelConfig{}).size() == 21);
  std::string help = config_help();
  for (const std::string& n : names) CHECK_MESSAGE(help.find(n) != std::string::npos, n);
  CHECK(help.find("learning rate") != std::string::npos);
}

TEST_CASE("config: apply_json sets keys and rejects unknown ones") {
  TrainConfig c;
  apply_json(c, json{{"lr", 1e-3}, {"d_model", 64}, {"tie_embeddings", true}, {"lr_schedule", "cosine"},
                     {"seed", 7}, {"steps", 1e3}},
             "test");
  CHECK(c.lr == 1e-3);
  CHECK(c.model.d_model == 64);
  CHECK(c.model.tie_embeddings);
  CHECK(c.lr_schedule == "cosine");
  CHECK(c.seed == 7);
  CHECK(c.steps == 1000);  // a whole-number float is accepted for an int key

  TrainConfig before = c;
  std::string msg = user_error_of([&] { apply_json(c, json{{"lr", 0.5}, {"foo_bar_baz", 1}}, "my.json"); });
  CHECK(msg.find("unknown config key 'foo_bar_baz'") != std::string::npos);
  CHECK(msg.find("my.json") != std::string::npos);
  CHECK(msg.find("valid keys:") != std::string::npos);
  CHECK(to_json(c) == to_json(before));  // nothing applied

  msg = user_error_of([&] { apply_json(c, json{{"d_modle", 64}}, "my.json"); });
  CHECK(msg.find("did you mean 'd_model'") != std::string::npos);
  msg = user_error_of([&] { apply_json(c, json::array({1, 2}), "my.json"); });
  CHECK(msg.find("JSON object") != std::string::npos);
}

TEST_CASE("config: type errors name the key and the value") {
  TrainConfig c;
  std::string msg = user_error_of([&] { apply_json(c, json{{"lr", "abc"}}, "f.json"); });
  CHECK(msg.find("config key 'lr' must be a finite number, got \"abc\"") != std::string::npos);
  CHECK(msg.find("f.json") != std::string::npos);
  CHECK(user_error_of([&] { apply_json(c, json{{"steps", 1.5}}, "f"); }).find("'steps' must be an integer") !=
        std::string::npos);
  CHECK(user_error_of([&] { apply_json(c, json{{"seed", -1}}, "f"); }).find("non-negative integer") !=
        std::string::npos);
  CHECK(user_error_of([&] { apply_json(c, json{{"tie_embeddings", 1}}, "f"); }).find("true or false") !=
        std::string::npos);
  CHECK(user_error_of([&] { apply_json(c, json{{"data", 3}}, "f"); }).find("must be a string") != std::string::npos);
  CHECK(user_error_of([&] { apply_json(c, json{{"preset", 3}}, "f"); }).find("'preset'") != std::string::npos);
  CHECK(user_error_of([&] { apply_json(c, json{{"preset", "tiny"}}, "f"); }).find("unknown preset 'tiny'") !=
        std::string::npos);
}

TEST_CASE("config: --set overrides parse by type") {
  TrainConfig c;
  apply_override(c, "lr=0.002");
  apply_override(c, "d_model=96");
  apply_override(c, "tie_embeddings=1");
  apply_override(c, "moe_renormalize=false");
  apply_override(c, "sample_prompt=Four score and=seven");
  apply_override(c, "seed=18446744073709551615");
  apply_override(c, "data=");
  CHECK(c.lr == 0.002);
  CHECK(c.model.d_model == 96);
  CHECK(c.model.tie_embeddings);
  CHECK_FALSE(c.model.moe_renormalize);
  CHECK(c.sample_prompt == "Four score and=seven");  // split at the first '='
  CHECK(c.seed == 18446744073709551615ull);
  CHECK(c.data.empty());
  apply_override(c, "tie_embeddings=False");
  CHECK_FALSE(c.model.tie_embeddings);

  std::string msg = user_error_of([&] { apply_override(c, "lr=abc"); });
  CHECK(msg.find("config key 'lr' must be a finite number, got \"abc\"") != std::string::npos);
  CHECK(user_error_of([&] { apply_override(c, "steps=ten"); }).find("'steps' must be an integer") != std::string::npos);
  CHECK(user_error_of([&] { apply_override(c, "tie_embeddings=yes"); }).find("true, false, 1 or 0") !=
        std::string::npos);
  CHECK(user_error_of([&] { apply_override(c, "lr=nan"); }).find("'lr'") != std::string::npos);
  msg = user_error_of([&] { apply_override(c, "learning_rate=0.1"); });
  CHECK(msg.find("unknown config key 'learning_rate'") != std::string::npos);
  CHECK(msg.find("--set") != std::string::npos);
  CHECK(user_error_of([&] { apply_override(c, "lrr=0.1"); }).find("did you mean 'lr'") != std::string::npos);
  CHECK(user_error_of([&] { apply_override(c, "lr"); }).find("key=value") != std::string::npos);
  CHECK(user_error_of([&] { apply_override(c, "=3"); }).find("key=value") != std::string::npos);

  // A preset would reset every key set before it: --set refuses it, and the config is left as it was.
  const nlohmann::json before = to_json(c);
  CHECK(user_error_of([&] { apply_override(c, "preset=medium"); }).find("use --preset") != std::string::npos);
  CHECK(to_json(c) == before);
}

TEST_CASE("config: numbers that do not fit what the key feeds are refused, not truncated") {
  // vocab_size feeds int32 token ids: 2^31 would wrap negative and 2^32 + 300 would silently become 300.
  for (const char* v : {"2147483648", "4294967596", "9223372036854775807"}) {
    TrainConfig c;
    apply_override(c, std::string("vocab_size=") + v);
    CHECK(user_error_of([&] { validate(c); }).find("'vocab_size': must be between 257") != std::string::npos);
  }
  TrainConfig c;
  apply_override(c, "vocab_size=2147483647");
  CHECK_NOTHROW(validate(c));
  CHECK(user_error_of([&] { apply_override(c, "vocab_size=9223372036854775808"); }).find("int64 range") !=
        std::string::npos);
  // threads feeds omp_set_num_threads(int): 2^32 + 1 would silently become 1.
  for (const char* v : {"-1", "4294967297", "1025"}) {
    TrainConfig t;
    apply_override(t, std::string("threads=") + v);
    CHECK(user_error_of([&] { validate(t); }).find("'threads': must be between 0 and 1024") != std::string::npos);
  }
}

TEST_CASE("config: a config file that gives a key twice is refused") {
  TempFile dup("{\"lr\": 0.1, \"steps\": 3, \"lr\": 0.2}", "gdn_test_dup_config.json");
  TrainConfig c;
  const nlohmann::json before = to_json(c);
  std::string msg = user_error_of([&] { load_config_file(c, dup.path); });
  CHECK(msg.find("gives the key 'lr' twice") != std::string::npos);
  CHECK(msg.find(dup.path) != std::string::npos);
  CHECK(to_json(c) == before);
  // A file of distinct keys loads, and load_config_file reports which keys it set.
  TempFile distinct("{\"lr\": 0.1, \"steps\": 3}", "gdn_test_distinct_config.json");
  auto keys = load_config_file(c, distinct.path);
  CHECK(keys == std::vector<std::string>{"lr", "steps"});
}

TEST_CASE("config: validate rules") {
  CHECK(invalid_after("lr=1e-3") == "");
  std::string msg = invalid_after("lr=-0.001");
  CHECK(msg.find("learning rate must be positive, got -0.001") != std::string::npos);
  CHECK(msg.find("'lr'") != std::string::npos);
  CHECK(invalid_after("lr=0") != "");
  // (override, a word the message must contain)
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"steps=0", "steps"},
      {"batch_size=0", "batch_size"},
      {"seq_len=-1", "seq_len"},
      {"warmup_steps=-1", "warmup_steps"},
      {"warmup_steps=1001", "between 0 and steps (1000)"},
      {"min_lr_ratio=-0.1", "min_lr_ratio"},
      {"min_lr_ratio=1.5", "[0, 1]"},
      {"beta1=1", "beta1"},
      {"beta1=-0.1", "beta1"},
      {"beta2=1.0", "beta2"},
      {"adam_eps=0", "adam_eps"},
      {"weight_decay=-0.1", "weight_decay"},
      {"grad_clip=-1", "grad_clip"},
      {"eval_every=0", "eval_every"},
      {"eval_batches=0", "eval_batches"},
      {"checkpoint_every=0", "checkpoint_every"},
      {"log_every=0", "log_every"},
      {"threads=-1", "threads"},
      {"val_fraction=0", "val_fraction"},
      {"val_fraction=1", "(0, 1)"},
      {"lr_schedule=step", "linear, cosine"},
      {"dtype=float16", "float32, float64"},
      {"device=gpu", "device"},
      {"device=cuda:x", "device"},
      {"data=", "data"},
      {"out_dir=", "out_dir"},
      {"sample_tokens=-1", "sample_tokens"},
      {"vocab_size=256", "257"},
      {"d_model=0", "d_model"},
      {"n_layers=0", "n_layers"},
      {"n_k_heads=0", "n_k_heads"},
      {"n_v_heads=6", "multiple of n_k_heads (4)"},
      {"head_k_dim=0", "head_k_dim"},
      {"head_v_dim=-64", "head_v_dim"},
      {"conv_size=0", "conv_size"},
      {"ffn_dim=0", "ffn_dim"},
      {"norm_eps=0", "norm_eps"},
      {"init_std=0", "init_std"},
      {"chunk_size=0", "chunk_size"},
      {"n_experts=-1", "n_experts"},
      {"moe_aux_loss_coef=-1", "moe_aux_loss_coef"},
      {"precision=fp16", "float32, bf16, auto"},
      {"precision=bf16", "GPU only"},  // the default device is the CPU
  };
  for (const auto& [text, word] : cases) {
    std::string m = invalid_after(text);
    CHECK_MESSAGE(m.find(word) != std::string::npos, text, " -> '", m, "'");
    CHECK_MESSAGE(m.find('\n') == std::string::npos, text);  // one line
  }
  // Allowed edge values.
  for (const char* ok : {"warmup_steps=0", "warmup_steps=1000", "min_lr_ratio=0", "min_lr_ratio=1", "beta1=0",
                         "weight_decay=0", "grad_clip=0", "threads=0", "device=cuda", "device=cuda:1",
                         "lr_schedule=cosine", "dtype=float64", "vocab_size=257", "n_v_heads=8", "sample_tokens=0",
                         "threads=1024", "precision=auto", "precision=float32", "cuda_graph=false"})
    CHECK_MESSAGE(invalid_after(ok) == "", ok);
  {
    TrainConfig c;
    c.device = "cuda";
    c.precision = "bf16";
    CHECK_NOTHROW(validate(c));
    CHECK(uses_bf16(c));
    c.dtype = "float64";
    CHECK_THROWS_WITH_AS(validate(c), doctest::Contains("bf16 needs dtype float32"), UserError);
    c.precision = "auto";
    CHECK(!uses_bf16(c));  // auto: float64 stays float64
    c.dtype = "float32";
    CHECK(uses_bf16(c));
    c.device = "cpu";
    CHECK(!uses_bf16(c));
  }
  {  // The default is auto: bf16 products on a GPU, float32 on the CPU.
    TrainConfig c;
    CHECK(c.precision == "auto");
    CHECK(!uses_bf16(c));
    c.device = "cuda:0";
    CHECK(uses_bf16(c));
  }

  // MoE rules apply only when n_experts > 0.
  TrainConfig c;
  c.model.moe_top_k = 0;
  c.model.moe_ffn_dim = 0;
  CHECK_NOTHROW(validate(c));
  c.model.n_experts = 4;
  c.model.moe_ffn_dim = 64;
  CHECK(user_error_of([&] { validate(c); }).find("between 1 and n_experts (4)") != std::string::npos);
  c.model.moe_top_k = 5;
  CHECK(user_error_of([&] { validate(c); }).find("moe_top_k") != std::string::npos);
  c.model.moe_top_k = 4;
  CHECK_NOTHROW(validate(c));
  c.model.moe_ffn_dim = 0;
  CHECK(user_error_of([&] { validate(c); }).find("moe_ffn_dim") != std::string::npos);
}

TEST_CASE("config: to_json and apply_json round-trip exactly") {
  TrainConfig a = preset_config("medium");
  a.lr = 0.1 + 0.2;  // not a short decimal
  a.min_lr_ratio = 1.0 / 3.0;
  a.model.norm_eps = 1e-5;
  a.model.init_std = 0.017;
  a.model.n_experts = 8;
  a.model.moe_shared_expert = true;
  a.seed = 18446744073709551615ull;
  a.sample_prompt = "Mr. Speaker, \"quoted\" \xc3\xa9";
  a.threads = 3;
  json j = to_json(a);
  CHECK(j.size() == config_fields().size());
  // Through text too, as results JSON and checkpoints store it.
  json reread = json::parse(j.dump(2));
  TrainConfig b = preset_config("large");
  apply_json(b, reread, "round trip");
  CHECK(to_json(b) == j);
  CHECK(b.lr == a.lr);
  CHECK(b.min_lr_ratio == a.min_lr_ratio);
  CHECK(b.seed == a.seed);
  CHECK(b.sample_prompt == a.sample_prompt);
  CHECK(b.preset == "medium");
  CHECK(b.model.n_experts == 8);
}

TEST_CASE("config: a config file applies its preset first, then its keys") {
  // Keys sorted alphabetically put "batch_size" and "lr" before "preset": the preset must still come first.
  TempFile file(R"({
    // comments are allowed
    "batch_size": 3,
    "lr": 0.001,
    "preset": "medium",
    "steps": 10
  })");
  TrainConfig c;
  load_config_file(c, file.path);
  CHECK(c.preset == "medium");
  CHECK(c.model.d_model == 256);  // from the preset
  CHECK(c.batch_size == 3);       // overrides the preset's 4
  CHECK(c.lr == 0.001);
  CHECK(c.steps == 10);
  CHECK(c.warmup_steps == 100);
  // Fails validation (warmup 100 > steps 10), which is the caller's next step.
  CHECK(user_error_of([&] { validate(c); }).find("warmup_steps") != std::string::npos);

  // Later --set overrides go on top of the file.
  apply_override(c, "warmup_steps=5");
  CHECK_NOTHROW(validate(c));

  std::string missing = (std::filesystem::temp_directory_path() / "gdn_no_such_config.json").string();
  std::string msg = user_error_of([&] { load_config_file(c, missing); });
  CHECK(msg.find("not found") != std::string::npos);
  CHECK(msg.find(missing) != std::string::npos);

  TempFile bad("{\"lr\": 0.1,}", "gdn_test_bad_config.json");
  msg = user_error_of([&] { load_config_file(c, bad.path); });
  CHECK(msg.find(bad.path) != std::string::npos);
  CHECK(msg.find("not valid JSON") != std::string::npos);
  CHECK(msg.find('\n') == std::string::npos);

  TempFile unknown("{\"lr\": 0.1, \"stepz\": 3}", "gdn_test_unknown_config.json");
  msg = user_error_of([&] { load_config_file(c, unknown.path); });
  CHECK(msg.find("'stepz'") != std::string::npos);
  CHECK(msg.find(unknown.path) != std::string::npos);
  CHECK(msg.find("did you mean 'steps'") != std::string::npos);
}

TEST_CASE("config: model_config_json and describe_model_mismatch") {
  ModelConfig a;
  json ja = model_config_json(a);
  CHECK(ja.contains("d_model"));
  CHECK_FALSE(ja.contains("lr"));
  CHECK(describe_model_mismatch(ja, model_config_json(a)) == "");

  ModelConfig b = a;
  b.d_model = 256;
  CHECK(describe_model_mismatch(ja, model_config_json(b)) == "d_model: checkpoint 128, this run 256");
  b.tie_embeddings = true;
  CHECK(describe_model_mismatch(ja, model_config_json(b)) ==
        "d_model: checkpoint 128, this run 256; tie_embeddings: checkpoint false, this run true");

  // Numbers compare by value whatever their JSON kind; absent keys are reported.
  json jf = ja;
  jf["d_model"] = 128.0;
  CHECK(describe_model_mismatch(jf, ja) == "");
  jf.erase("chunk_size");
  CHECK(describe_model_mismatch(jf, ja) == "chunk_size: checkpoint (absent), this run 64");

  // A checkpoint written before the gate switches existed holds the gated layer: completed, it matches a gated
  // config and not an ungated one.
  json old = ja;
  old.erase("decay_gate");
  old.erase("output_gate");
  CHECK(describe_model_mismatch(old, ja) != "");
  json completed = complete_model_config_json(old);
  CHECK(describe_model_mismatch(completed, ja) == "");
  ModelConfig ungated = a;
  ungated.decay_gate = false;
  CHECK(describe_model_mismatch(completed, model_config_json(ungated)) ==
        "decay_gate: checkpoint true, this run false");
  // Keys that are present are kept.
  json stored = model_config_json(ungated);
  CHECK(complete_model_config_json(stored) == stored);
}
