// Splits a fuzzer's input into records: [length: 2 bytes little-endian][bytes], until the input
// runs out (a short last record takes what is left). Lets one input drive a sequence of
// operations, each a protobuf message or a small opcode.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace kv::fuzz {

class Records {
 public:
  Records(const uint8_t* data, size_t size) : rest_(reinterpret_cast<const char*>(data), size) {}
  bool Next(std::string_view* record) {
    if (rest_.size() < 2) return false;
    size_t n =
        static_cast<uint8_t>(rest_[0]) | (static_cast<size_t>(static_cast<uint8_t>(rest_[1])) << 8);
    rest_.remove_prefix(2);
    n = n < rest_.size() ? n : rest_.size();
    *record = rest_.substr(0, n);
    rest_.remove_prefix(n);
    return true;
  }

 private:
  std::string_view rest_;
};

}  // namespace kv::fuzz
