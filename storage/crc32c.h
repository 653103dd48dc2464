// CRC-32C (Castagnoli), the checksum of the Raft log's records: with the SSE 4.2 instruction
// where the CPU has it, a table otherwise (both give the same value).
#pragma once

#include <cstdint>
#include <string_view>

namespace kv::storage {

// Extends `crc` (0 to start) over `data`.
uint32_t Crc32c(std::string_view data, uint32_t crc = 0);

}  // namespace kv::storage
