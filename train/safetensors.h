// train/safetensors.h — reading and writing tensors in Hugging Face's safetensors format.
//
// Why this format: a PyTorch user can open our weights with `safetensors.torch.load_file(path)` (or numpy, JAX,
// candle, ...) and we can read theirs. It is also the simplest safe format there is: no code, no pickles.
//
// Layout (reference: github.com/huggingface/safetensors, README "Format"):
//   bytes [0, 8)        N, the header length, uint64 little-endian
//   bytes [8, 8+N)      a UTF-8 JSON object, padded at the end with spaces so that 8+N is a multiple of 8:
//                         {"__metadata__": {"key": "string value", ...},
//                          "name": {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}, ...}
//   bytes [8+N, end)    the data section: every tensor's elements, row-major (C order), little-endian, at
//                       [begin, end) counted from the start of the data section.
// dtype strings: F32, F64, BF16, I32, I64 (the types gdn.cpp has; the format has more, which we reject on load).
//
// Order (our choice, written down here):
//   * the header lists "__metadata__" first (only when there is metadata), then the tensors in the order given;
//   * the data section holds the 8-byte types first, then the 4-byte, then the 2-byte (stable: the given order
//     within each group), so every tensor starts at a multiple of its element size — as the reference writer
//     does — and the readers that map the file can view it in place without copies;
//   * loading returns the tensors in header order, so save -> load gives back the given order.
//
// Loading is strict: the reference reader rejects holes and overlaps between tensors and a data section that does
// not end exactly at the last tensor, and so do we; every check that fails is a gdn::UserError with one line naming
// the file ("checkpoint PATH is truncated or corrupt: tensor 'x' needs bytes [a, b) but the file has only c").
// A truncated checkpoint is the common case (a killed copy, a full disk), so it must never load as garbage.
#pragma once

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"

namespace gdn {

// The tensors and metadata of one safetensors file; every tensor is a fresh contiguous CPU tensor.
struct SafetensorsFile {
  std::vector<std::pair<std::string, Tensor>> tensors;  // in header order
  std::map<std::string, std::string> metadata;          // "__metadata__" (empty when absent)
  std::string source;                                   // path or name, for error messages

  bool has(const std::string& name) const;
  // The tensor called `name`; gdn::UserError naming the file when there is none.
  const Tensor& get(const std::string& name) const;
};

// The file as bytes. Tensors may have any strides, any of F32/F64/BF16/I32/I64, and live on any device (copied to
// the CPU). Names must be unique, non-empty and not "__metadata__".
std::string serialize_safetensors(const std::vector<std::pair<std::string, Tensor>>& tensors,
                                  const std::map<std::string, std::string>& metadata = {});

// serialize_safetensors written with write_file_atomic (train/file_util.h): never a half-written file at `path`.
void save_safetensors(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata = {});

// Reads and validates a whole file. gdn::UserError when it is missing, truncated or not valid safetensors.
SafetensorsFile load_safetensors(const std::string& path);

// Same as load_safetensors on bytes already in memory; name_for_errors stands for the path in messages.
SafetensorsFile parse_safetensors(const std::string& bytes, const std::string& name_for_errors);

}  // namespace gdn
