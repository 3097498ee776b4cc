// train/hf_tokenizer.cpp — see hf_format.h: our byte-level BPE tokenizer as a transformers tokenizer.json and back.
//
// The byte-level alphabet is GPT-2's bytes_to_unicode; the pre-tokenizer is ByteLevel without its own regex followed
// by one Split on a regex over the byte-level characters that cuts exactly the chunks of our pretokenize()
// (train/tokenizer.h), so that transformers cuts text where gdn.cpp does. The format is described in hf_format.h.
#include <algorithm>
#include <array>
#include <filesystem>
#include <map>

#include "train/file_util.h"
#include "train/hf_format.h"

namespace gdn {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

// GPT-2's bytes_to_unicode: printable Latin-1 bytes map to themselves, the others to 256, 257, ... in byte order.
const std::array<char32_t, 256>& byte_to_codepoint() {
  static const std::array<char32_t, 256> table = [] {
    std::array<char32_t, 256> t{};
    char32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
      t[b] = printable ? static_cast<char32_t>(b) : next++;
    }
    return t;
  }();
  return table;
}

std::string utf8(char32_t cp) {
  std::string s;
  if (cp < 0x80) {
    s += static_cast<char>(cp);
  } else if (cp < 0x800) {
    s += static_cast<char>(0xC0 | (cp >> 6));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    s += static_cast<char>(0xE0 | (cp >> 12));
    s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  }
  return s;
}

std::string byte_level(const std::string& bytes) {
  std::string s;
  for (unsigned char b : bytes) s += byte_level_char(b);
  return s;
}

// The byte classes of train/tokenizer.cpp's pre-tokenizer.
enum class Cls { kLetter, kDigit, kNewline, kSpace, kOther };
Cls byte_class(int c) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c >= 0x80) return Cls::kLetter;
  if (c >= '0' && c <= '9') return Cls::kDigit;
  if (c == '\n' || c == '\r') return Cls::kNewline;
  if (c == ' ' || c == '\t' || c == '\v' || c == '\f') return Cls::kSpace;
  return Cls::kOther;
}

// A bracket expression of the byte-level characters of the bytes in `classes`, valid for Oniguruma and ECMAScript.
std::string char_class(std::initializer_list<Cls> classes) {
  std::string s = "[";
  for (int b = 0; b < 256; ++b) {
    if (std::find(classes.begin(), classes.end(), byte_class(b)) == classes.end()) continue;
    char32_t cp = byte_to_codepoint()[b];
    if (cp == '\\' || cp == ']' || cp == '[' || cp == '^' || cp == '-') s += '\\';
    s += utf8(cp);
  }
  return s + "]";
}

json pre_tokenizer_json() {
  return json{{"type", "Sequence"},
              {"pretokenizers",
               json::array({json{{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true},
                                 {"use_regex", false}},
                            json{{"type", "Split"}, {"pattern", {{"Regex", hf_pretokenize_regex()}}},
                                 {"behavior", "Isolated"}, {"invert", false}}})}};
}

json decoder_json() {
  return json{{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", true}};
}

}  // namespace

std::string byte_level_char(unsigned char byte) { return utf8(byte_to_codepoint()[byte]); }

std::string hf_pretokenize_regex() {
  // One alternative per rule of train/tokenizer.cpp's chunk_end(), in its order (leftmost alternative wins):
  //   ' ' + a run of one word class (letters, digits or other), 255 at most (chunks are capped at 256 bytes);
  //   a run of one class (letters, digits, other, newlines), 256 at most;
  //   a run of spaces that leaves its last ' ' to the word that follows (the lookahead; backtracking finds it);
  //   any other run of spaces.
  const std::string L = char_class({Cls::kLetter}), D = char_class({Cls::kDigit}), O = char_class({Cls::kOther});
  const std::string N = char_class({Cls::kNewline}), S = char_class({Cls::kSpace});
  const std::string W = char_class({Cls::kLetter, Cls::kDigit, Cls::kOther});
  const std::string sp = byte_level_char(' ');
  return sp + L + "{1,255}|" + sp + D + "{1,255}|" + sp + O + "{1,255}|" + L + "{1,256}|" + D + "{1,256}|" + O +
         "{1,256}|" + N + "{1,256}|" + S + "{1,256}(?=" + sp + W + ")|" + S + "{1,256}";
}

json hf_tokenizer_json(const BpeTokenizer& tok) {
  json vocab = json::object();
  std::map<std::string, int32_t> seen;
  for (int32_t id = 0; id < tok.eot_id(); ++id) {
    std::string s = byte_level(tok.token_text(id));
    auto [it, inserted] = seen.emplace(s, id);
    GDN_USER_CHECK(inserted, "tokenizers cannot represent this tokenizer: tokens {} and {} have the same bytes "
                   "({}), and its vocab maps each string to one id", it->second, id, json(s).dump());
    vocab[s] = id;
  }
  vocab[std::string(kEndOfTextText)] = tok.eot_id();
  json merges = json::array();
  for (const auto& [left, right] : tok.merges())
    merges.push_back(byte_level(tok.token_text(left)) + " " + byte_level(tok.token_text(right)));
  return json{
      {"version", "1.0"},
      {"truncation", nullptr},
      {"padding", nullptr},
      {"added_tokens", json::array({json{{"id", tok.eot_id()}, {"content", std::string(kEndOfTextText)},
                                         {"single_word", false}, {"lstrip", false}, {"rstrip", false},
                                         {"normalized", false}, {"special", true}}})},
      {"normalizer", nullptr},
      {"pre_tokenizer", pre_tokenizer_json()},
      {"post_processor", nullptr},
      {"decoder", decoder_json()},
      {"model", {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", nullptr},
                 {"continuing_subword_prefix", nullptr}, {"end_of_word_suffix", nullptr}, {"fuse_unk", false},
                 {"byte_fallback", false}, {"ignore_merges", false}, {"vocab", vocab}, {"merges", merges}}},
  };
}

BpeTokenizer tokenizer_from_hf_json(const json& j, const std::string& source) {
  auto fail = [&](const std::string& what) {
    throw UserError(fmt::format("{}: not a gdn.cpp byte-level BPE tokenizer: {}", source, what));
  };
  if (!j.is_object() || !j.contains("model") || !j["model"].is_object()) fail("no \"model\" object");
  const json& m = j["model"];
  if (m.value("type", "") != "BPE") fail("model.type is not \"BPE\"");
  if (!j.contains("pre_tokenizer") || j["pre_tokenizer"] != pre_tokenizer_json())
    fail("pre_tokenizer differs from gdn.cpp's (ByteLevel without regex, then its Split regex)");
  if (j.contains("normalizer") && !j["normalizer"].is_null()) fail("it has a normalizer");
  if (!m.contains("vocab") || !m["vocab"].is_object() || !m.contains("merges") || !m["merges"].is_array())
    fail("model.vocab or model.merges is missing");
  const json& vocab = m["vocab"];
  auto id_of = [&](const std::string& s) -> int64_t {
    auto it = vocab.find(s);
    if (it == vocab.end() || !it->is_number_integer()) fail("token " + json(s).dump() + " is not in model.vocab");
    return it->get<int64_t>();
  };
  for (int b = 0; b < 256; ++b)
    if (id_of(byte_level_char(static_cast<unsigned char>(b))) != b)
      fail(fmt::format("byte {} must have id {}", b, b));
  std::vector<BpeTokenizer::Merge> merges;
  for (const json& entry : m["merges"]) {
    std::string left, right;
    if (entry.is_string()) {
      const std::string s = entry.get<std::string>();
      const size_t sp = s.find(' ');
      if (sp == std::string::npos) fail("merge " + entry.dump() + " has no space");
      left = s.substr(0, sp);
      right = s.substr(sp + 1);
    } else if (entry.is_array() && entry.size() == 2 && entry[0].is_string() && entry[1].is_string()) {
      left = entry[0].get<std::string>();
      right = entry[1].get<std::string>();
    } else {
      fail("merge " + entry.dump() + " is neither \"a b\" nor [\"a\", \"b\"]");
    }
    const int64_t want = 256 + static_cast<int64_t>(merges.size());
    const int64_t a = id_of(left), b = id_of(right);
    if (a >= want || b >= want) fail("merge " + entry.dump() + " uses a token that is not yet defined");
    if (id_of(left + right) != want)
      fail(fmt::format("merge {} must produce id {} (gdn.cpp numbers merges by rank)", entry.dump(), want));
    merges.emplace_back(static_cast<int32_t>(a), static_cast<int32_t>(b));
  }
  const int64_t eot = 256 + static_cast<int64_t>(merges.size());
  bool has_eot = false;
  if (j.contains("added_tokens") && j["added_tokens"].is_array())
    for (const json& t : j["added_tokens"]) {
      if (t.value("content", "") == kEndOfTextText && t.value("id", int64_t{-1}) == eot)
        has_eot = true;
      else
        fail("added token " + t.dump() + " (gdn.cpp has only <|endoftext|>, id " + std::to_string(eot) + ")");
    }
  if (!has_eot) fail(fmt::format("<|endoftext|> is not an added token with id {}", eot));
  if (static_cast<int64_t>(vocab.size()) > eot + 1) fail("model.vocab has tokens that no merge produces");
  return BpeTokenizer(std::move(merges));
}

std::optional<BpeTokenizer> read_hf_tokenizer(const std::string& dir) {
  const std::string path = (fs::path(dir) / "tokenizer.json").string();
  std::error_code ec;
  if (!fs::exists(path, ec)) return std::nullopt;
  json j;
  try {
    j = json::parse(read_file(path));
  } catch (const json::exception& e) {
    throw UserError(fmt::format("{} is not valid JSON: {}", path, e.what()));
  }
  return tokenizer_from_hf_json(j, path);
}

}  // namespace gdn
