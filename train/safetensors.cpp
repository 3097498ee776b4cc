// train/safetensors.cpp — see safetensors.h for the format and the ordering rules.
//
// The header is built and parsed with nlohmann::ordered_json (keeps key order, so the header reads in the order we
// wrote it). Raw bytes are copied with memcpy: the format is little-endian and so is every host we support (checked
// at compile time), so no byte swapping is needed.
//
// Load checks, in order (each a one-line gdn::UserError naming the file):
//   1. at least 8 bytes; header length N <= 100 MB (the reference limit) and 8+N <= file size;
//   2. the header is a JSON object; "__metadata__", if present, maps strings to strings;
//   3. every tensor entry has a known dtype, a shape of non-negative integers, and data_offsets [begin, end] with
//      begin <= end and end - begin == numel * element size (overflow-checked);
//   4. every range lies inside the data section (the truncated-file message);
//   5. sorted by begin, the ranges tile the data section exactly: no overlap, no hole, no trailing bytes.
#include "train/safetensors.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>

#include "ops/creation.h"
#include "train/file_util.h"

namespace gdn {

static_assert(std::endian::native == std::endian::little,
              "safetensors data is little-endian; a big-endian host would need byte swapping here");

namespace {

using ordered_json = nlohmann::ordered_json;

constexpr uint64_t kMaxHeaderBytes = 100ull << 20;  // the reference implementation's limit

std::string safetensors_dtype_name(DType t) {
  switch (t) {
    case DType::Float32: return "F32";
    case DType::Float64: return "F64";
    case DType::BFloat16: return "BF16";
    case DType::Int32: return "I32";
    case DType::Int64: return "I64";
  }
  GDN_THROW("safetensors: no name for dtype {}", t);
}

bool parse_dtype_name(const std::string& s, DType* out) {
  static const std::pair<const char*, DType> kNames[] = {
      {"F32", kFloat32}, {"F64", kFloat64}, {"BF16", kBFloat16}, {"I32", kInt32}, {"I64", kInt64}};
  for (const auto& [name, dtype] : kNames) {
    if (s == name) {
      *out = dtype;
      return true;
    }
  }
  return false;
}

// Errors name the file and stay on one line (nlohmann's parse messages are one line; this makes sure).
[[noreturn]] void throw_corrupt(const std::string& source, const std::string& detail) {
  std::string msg = "checkpoint " + source + " is truncated or corrupt: " + detail;
  std::replace(msg.begin(), msg.end(), '\n', ' ');
  throw UserError(msg);
}

uint64_t read_u64_le(const std::string& bytes) {
  uint64_t v = 0;
  std::memcpy(&v, bytes.data(), 8);
  return v;
}

std::string u64_le_bytes(uint64_t v) {
  std::string out(8, '\0');
  std::memcpy(out.data(), &v, 8);
  return out;
}

// One tensor entry of the header after validation of its own fields (checks 3).
struct Entry {
  std::string name;
  DType dtype = kFloat32;
  Shape shape;
  uint64_t begin = 0, end = 0;
};

Entry parse_entry(const std::string& source, const std::string& name, const ordered_json& info) {
  auto bad = [&](const std::string& what) { throw_corrupt(source, "tensor '" + name + "' " + what); };
  if (!info.is_object()) bad("is not a JSON object");
  Entry e;
  e.name = name;

  auto dtype_it = info.find("dtype");
  if (dtype_it == info.end() || !dtype_it->is_string()) bad("has no \"dtype\" string");
  const std::string dtype_str = dtype_it->get<std::string>();
  if (!parse_dtype_name(dtype_str, &e.dtype)) {
    throw UserError("checkpoint " + source + ": tensor '" + name + "' has dtype '" + dtype_str +
                    "', which gdn.cpp cannot load (it reads F32, F64, BF16, I32, I64)");
  }

  auto shape_it = info.find("shape");
  if (shape_it == info.end() || !shape_it->is_array()) bad("has no \"shape\" array");
  uint64_t numel = 1;
  for (const auto& d : *shape_it) {
    if (!d.is_number_unsigned()) bad("has a shape entry that is not a non-negative integer");
    uint64_t n = d.get<uint64_t>();
    if (n > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) bad("has an impossibly large shape");
    e.shape.push_back(static_cast<int64_t>(n));
    if (n != 0 && numel > std::numeric_limits<uint64_t>::max() / 8 / n) bad("has an impossibly large shape");
    numel *= n;
  }

  auto off_it = info.find("data_offsets");
  if (off_it == info.end() || !off_it->is_array() || off_it->size() != 2 || !(*off_it)[0].is_number_unsigned() ||
      !(*off_it)[1].is_number_unsigned()) {
    bad("has no \"data_offsets\" pair of non-negative integers");
  }
  e.begin = (*off_it)[0].get<uint64_t>();
  e.end = (*off_it)[1].get<uint64_t>();
  if (e.begin > e.end) bad(fmt::format("has data_offsets [{}, {}] that run backwards", e.begin, e.end));
  const uint64_t need = numel * element_size(e.dtype);
  if (e.end - e.begin != need) {
    bad(fmt::format("has data_offsets [{}, {}] ({} bytes) but shape {} of {} needs {} bytes", e.begin, e.end,
                    e.end - e.begin, shape_str(e.shape), dtype_str, need));
  }
  return e;
}

}  // namespace

bool SafetensorsFile::has(const std::string& name) const {
  for (const auto& [n, t] : tensors) {
    if (n == name) return true;
  }
  return false;
}

const Tensor& SafetensorsFile::get(const std::string& name) const {
  for (const auto& [n, t] : tensors) {
    if (n == name) return t;
  }
  throw UserError("checkpoint " + source + " has no tensor '" + name + "'");
}

std::string serialize_safetensors(const std::vector<std::pair<std::string, Tensor>>& tensors,
                                  const std::map<std::string, std::string>& metadata) {
  // Host copies, contiguous, cut off from autograd.
  std::vector<Tensor> host(tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    const auto& [name, t] = tensors[i];
    GDN_CHECK(!name.empty() && name != "__metadata__", "safetensors: invalid tensor name '{}'", name);
    for (size_t j = 0; j < i; ++j) GDN_CHECK(tensors[j].first != name, "safetensors: duplicate tensor name '{}'", name);
    GDN_CHECK(t.defined(), "safetensors: tensor '{}' is undefined", name);
    Tensor h = t.detach();
    if (h.device() != kCPU) h = to_device(h, kCPU);
    host[i] = contiguous(h);
  }

  // Data layout: 8-byte types, then 4-byte, then 2-byte; stable within each group (see the header comment).
  std::vector<size_t> data_order(tensors.size());
  for (size_t i = 0; i < data_order.size(); ++i) data_order[i] = i;
  std::stable_sort(data_order.begin(), data_order.end(),
                   [&](size_t a, size_t b) { return element_size(host[a].dtype()) > element_size(host[b].dtype()); });
  std::vector<uint64_t> begin(tensors.size()), end(tensors.size());
  uint64_t cursor = 0;
  for (size_t i : data_order) {
    begin[i] = cursor;
    cursor += static_cast<uint64_t>(host[i].numel()) * element_size(host[i].dtype());
    end[i] = cursor;
  }

  ordered_json header = ordered_json::object();
  if (!metadata.empty()) {
    ordered_json meta = ordered_json::object();
    for (const auto& [k, v] : metadata) meta[k] = v;
    header["__metadata__"] = meta;
  }
  for (size_t i = 0; i < tensors.size(); ++i) {
    ordered_json entry = ordered_json::object();
    entry["dtype"] = safetensors_dtype_name(host[i].dtype());
    ordered_json shape = ordered_json::array();
    for (int64_t d : host[i].shape()) shape.push_back(d);
    entry["shape"] = shape;
    entry["data_offsets"] = ordered_json::array({begin[i], end[i]});
    header[tensors[i].first] = entry;
  }
  std::string header_text = header.dump();
  header_text.append((8 - header_text.size() % 8) % 8, ' ');  // 8 + N is then a multiple of 8

  std::string out = u64_le_bytes(header_text.size());
  out.reserve(8 + header_text.size() + cursor);
  out += header_text;
  for (size_t i : data_order) {
    size_t nbytes = static_cast<size_t>(end[i] - begin[i]);
    if (nbytes > 0) out.append(static_cast<const char*>(host[i].raw_data()), nbytes);
  }
  return out;
}

void save_safetensors(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  write_file_atomic(path, serialize_safetensors(tensors, metadata));
}

SafetensorsFile parse_safetensors(const std::string& bytes, const std::string& name_for_errors) {
  const std::string& source = name_for_errors;
  // 1. Header length.
  if (bytes.size() < 8) {
    throw_corrupt(source, fmt::format("it has {} bytes, fewer than the 8-byte header length", bytes.size()));
  }
  const uint64_t header_len = read_u64_le(bytes);
  const uint64_t after_len = bytes.size() - 8;
  if (header_len > kMaxHeaderBytes) {
    throw_corrupt(source, fmt::format("the header length {} is over the 100 MB limit", header_len));
  }
  if (header_len > after_len) {
    throw_corrupt(source, fmt::format("the header needs {} bytes but the file has only {} after the length field",
                                      header_len, after_len));
  }

  // 2. JSON.
  ordered_json header;
  try {
    header = ordered_json::parse(bytes.begin() + 8, bytes.begin() + 8 + static_cast<std::ptrdiff_t>(header_len));
  } catch (const nlohmann::json::exception& e) {
    throw_corrupt(source, std::string("the header is not valid JSON (") + e.what() + ")");
  }
  if (!header.is_object()) throw_corrupt(source, "the header is not a JSON object");

  SafetensorsFile file;
  file.source = source;
  std::vector<Entry> entries;
  for (auto it = header.begin(); it != header.end(); ++it) {
    if (it.key() == "__metadata__") {
      if (!it->is_object()) throw_corrupt(source, "\"__metadata__\" is not a JSON object");
      for (auto m = it->begin(); m != it->end(); ++m) {
        if (!m->is_string()) throw_corrupt(source, "metadata value '" + m.key() + "' is not a string");
        file.metadata[m.key()] = m->get<std::string>();
      }
      continue;
    }
    entries.push_back(parse_entry(source, it.key(), *it));  // 3.
  }

  // 4. Every range inside the data section.
  const uint64_t data_start = 8 + header_len;
  const uint64_t data_len = bytes.size() - data_start;
  for (const Entry& e : entries) {
    if (e.end > data_len) {
      throw_corrupt(source, fmt::format("tensor '{}' needs bytes [{}, {}) but the file has only {}", e.name, e.begin,
                                        e.end, data_len));
    }
  }

  // 5. The ranges tile [0, data_len): sorted by begin, each starts where the previous ended.
  std::vector<const Entry*> by_offset;
  for (const Entry& e : entries) by_offset.push_back(&e);
  std::stable_sort(by_offset.begin(), by_offset.end(), [](const Entry* a, const Entry* b) {
    return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
  });
  uint64_t expected = 0;
  const Entry* prev = nullptr;
  for (const Entry* e : by_offset) {
    if (e->begin < expected) {
      throw_corrupt(source, fmt::format("tensors '{}' and '{}' overlap (bytes [{}, {}) and [{}, {}))", prev->name,
                                        e->name, prev->begin, prev->end, e->begin, e->end));
    }
    if (e->begin > expected) {
      throw_corrupt(source, fmt::format("bytes [{}, {}) of the data section belong to no tensor (before '{}')",
                                        expected, e->begin, e->name));
    }
    expected = e->end;
    prev = e;
  }
  if (expected != data_len) {
    throw_corrupt(
        source, fmt::format("the tensors end at byte {} of the data section but it has {} bytes", expected, data_len));
  }

  // Copy each tensor out into its own aligned CPU storage.
  for (const Entry& e : entries) {
    Tensor t = Tensor::empty(e.shape, e.dtype, kCPU);
    size_t nbytes = static_cast<size_t>(e.end - e.begin);
    if (nbytes > 0) std::memcpy(t.raw_data(), bytes.data() + data_start + e.begin, nbytes);
    file.tensors.emplace_back(e.name, std::move(t));
  }
  return file;
}

SafetensorsFile load_safetensors(const std::string& path) { return parse_safetensors(read_file(path), path); }

}  // namespace gdn
