#include "storage/backup_archive.h"

#include <openssl/evp.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <filesystem>

#include "absl/strings/str_cat.h"

namespace kv::storage {
namespace {

constexpr size_t kBlock = 512;
constexpr size_t kPiece = 1 << 20;

absl::Status Errno(std::string_view what, const std::string& path) {
  return absl::InternalError(
      absl::StrCat(std::string(what), " ", path, ": ", std::strerror(errno)));
}

// Writes `value` as `width - 1` octal digits and a NUL (ustar's numeric fields).
void PutOctal(char* field, size_t width, uint64_t value) {
  for (size_t i = width - 1; i-- > 0;) {
    field[i] = static_cast<char>('0' + (value & 7));
    value >>= 3;
  }
  field[width - 1] = '\0';
}

std::optional<uint64_t> GetOctal(const char* field, size_t width) {
  uint64_t v = 0;
  size_t i = 0;
  while (i < width && field[i] == ' ') ++i;
  bool any = false;
  for (; i < width && field[i] >= '0' && field[i] <= '7'; ++i) {
    v = (v << 3) | static_cast<uint64_t>(field[i] - '0');
    any = true;
  }
  for (; i < width; ++i) {
    if (field[i] != '\0' && field[i] != ' ') return std::nullopt;
  }
  if (!any) return std::nullopt;
  return v;
}

uint64_t HeaderChecksum(const std::array<char, kBlock>& h) {
  uint64_t sum = 0;
  for (size_t i = 0; i < kBlock; ++i) {
    bool in_field = i >= 148 && i < 156;  // the checksum field counts as spaces
    sum += in_field ? ' ' : static_cast<unsigned char>(h[i]);
  }
  return sum;
}

size_t Padding(uint64_t size) { return static_cast<size_t>((kBlock - size % kBlock) % kBlock); }

}  // namespace

std::string ShardFileName(uint64_t shard_id) { return absl::StrCat("shard-", shard_id, ".sst"); }

struct Sha256::Ctx {
  EVP_MD_CTX* md = EVP_MD_CTX_new();
  ~Ctx() { EVP_MD_CTX_free(md); }
};

Sha256::Sha256() : ctx_(std::make_unique<Ctx>()) {
  EVP_DigestInit_ex(ctx_->md, EVP_sha256(), nullptr);
}
Sha256::~Sha256() = default;

void Sha256::Update(std::string_view data) { EVP_DigestUpdate(ctx_->md, data.data(), data.size()); }

std::string Sha256::HexDigest() {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  EVP_DigestFinal_ex(ctx_->md, digest, &n);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (unsigned int i = 0; i < n; ++i) {
    out += kHex[digest[i] >> 4];
    out += kHex[digest[i] & 15];
  }
  return out;
}

absl::StatusOr<std::string> Sha256OfFile(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) return Errno("cannot open", path);
  Sha256 sha;
  std::string buf(kPiece, '\0');
  size_t n;
  while ((n = std::fread(buf.data(), 1, buf.size(), f)) > 0) sha.Update({buf.data(), n});
  bool failed = std::ferror(f);
  std::fclose(f);
  if (failed) return Errno("cannot read", path);
  return sha.HexDigest();
}

absl::StatusOr<std::unique_ptr<ArchiveWriter>> ArchiveWriter::Create(const std::string& path) {
  std::string partial = path + ".partial";
  std::FILE* f = std::fopen(partial.c_str(), "wb");
  if (!f) return Errno("cannot create", partial);
  return std::unique_ptr<ArchiveWriter>(new ArchiveWriter(path, f));
}

ArchiveWriter::~ArchiveWriter() {
  if (file_) std::fclose(file_);
  if (!finished_) std::filesystem::remove(path_ + ".partial");
}

absl::Status ArchiveWriter::Write(std::string_view data) {
  if (data.empty()) return absl::OkStatus();
  if (std::fwrite(data.data(), 1, data.size(), file_) != data.size()) {
    return Errno("cannot write", path_ + ".partial");
  }
  file_sha_.Update(data);
  offset_ += data.size();
  return absl::OkStatus();
}

absl::Status ArchiveWriter::BeginMember(std::string_view name, uint64_t size) {
  if (member_sha_) return absl::FailedPreconditionError("the previous member is not ended");
  if (name.empty() || name.size() >= 100) {
    return absl::InvalidArgumentError(
        absl::StrCat("bad archive member name '", std::string(name), "'"));
  }
  if (size > kMaxArchiveMemberBytes) {
    return absl::InvalidArgumentError(absl::StrCat("archive member ", std::string(name),
                                                   " is larger than ", kMaxArchiveMemberBytes));
  }
  std::array<char, kBlock> h{};
  std::memcpy(h.data(), name.data(), name.size());
  PutOctal(&h[100], 8, 0644);
  PutOctal(&h[108], 8, 0);
  PutOctal(&h[116], 8, 0);
  PutOctal(&h[124], 12, size);
  PutOctal(&h[136], 12, static_cast<uint64_t>(std::time(nullptr)));
  h[156] = '0';  // a regular file
  std::memcpy(&h[257], "ustar", 6);
  std::memcpy(&h[263], "00", 2);
  PutOctal(&h[148], 7, HeaderChecksum(h));
  h[155] = ' ';
  if (auto s = Write({h.data(), h.size()}); !s.ok()) return s;
  member_sha_ = std::make_unique<Sha256>();
  member_left_ = member_size_ = size;
  return absl::OkStatus();
}

absl::Status ArchiveWriter::Append(std::string_view data) {
  if (!member_sha_) return absl::FailedPreconditionError("no archive member begun");
  if (data.size() > member_left_) {
    return absl::OutOfRangeError("more bytes than the archive member's declared size");
  }
  member_sha_->Update(data);
  member_left_ -= data.size();
  return Write(data);
}

absl::StatusOr<std::string> ArchiveWriter::EndMember() {
  if (!member_sha_) return absl::FailedPreconditionError("no archive member begun");
  if (member_left_ != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("archive member short by ", member_left_, " bytes"));
  }
  std::string zeros(Padding(member_size_), '\0');
  if (auto s = Write(zeros); !s.ok()) return s;
  std::string digest = member_sha_->HexDigest();
  member_sha_.reset();
  return digest;
}

absl::StatusOr<std::string> ArchiveWriter::Finish() {
  if (member_sha_) return absl::FailedPreconditionError("the last member is not ended");
  if (auto s = Write(std::string(2 * kBlock, '\0')); !s.ok()) return s;
  std::string partial = path_ + ".partial";
  if (std::fflush(file_) != 0 || ::fsync(fileno(file_)) != 0) return Errno("cannot sync", partial);
  std::fclose(file_);
  file_ = nullptr;
  std::error_code ec;
  std::filesystem::rename(partial, path_, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot rename ", partial, ": ", ec.message()));
  finished_ = true;
  return file_sha_.HexDigest();
}

absl::StatusOr<std::unique_ptr<ArchiveReader>> ArchiveReader::Open(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) return Errno("cannot open", path);
  return std::unique_ptr<ArchiveReader>(new ArchiveReader(path, f));
}

ArchiveReader::~ArchiveReader() { std::fclose(file_); }

absl::Status ArchiveReader::ReadExactly(size_t n, std::string* out) {
  out->resize(n);
  size_t got = n == 0 ? 0 : std::fread(out->data(), 1, n, file_);
  if (got != n) {
    if (std::ferror(file_)) return Errno("cannot read", path_);
    return absl::DataLossError(absl::StrCat(path_,
                                            " is not an intact kvstore backup: it is truncated "
                                            "(it ends inside ",
                                            current_ ? current_->name : "the archive", ")"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::optional<ArchiveReader::Member>> ArchiveReader::Next() {
  if (current_ && !current_read_) {
    auto skipped = Read([](std::string_view) { return absl::OkStatus(); });
    if (!skipped.ok()) return skipped.status();
  }
  current_.reset();
  std::string block;
  if (auto s = ReadExactly(kBlock, &block); !s.ok()) return s;
  if (block == std::string(kBlock, '\0')) return std::nullopt;  // the end marker
  std::array<char, kBlock> h;
  std::memcpy(h.data(), block.data(), kBlock);
  auto checksum = GetOctal(&h[148], 8);
  if (!checksum || *checksum != HeaderChecksum(h) || std::memcmp(&h[257], "ustar", 5) != 0) {
    return absl::DataLossError(
        absl::StrCat(path_, " is not an intact kvstore backup: a damaged or foreign tar header"));
  }
  auto size = GetOctal(&h[124], 12);
  if (!size || (h[156] != '0' && h[156] != '\0')) {
    return absl::DataLossError(
        absl::StrCat(path_, " is not an intact kvstore backup: a member that is not a file"));
  }
  Member m;
  m.name.assign(h.data(), strnlen(h.data(), 100));
  m.size = *size;
  current_ = m;
  current_read_ = false;
  return current_;
}

absl::StatusOr<std::string> ArchiveReader::Read(
    const std::function<absl::Status(std::string_view)>& sink) {
  if (!current_ || current_read_) return absl::FailedPreconditionError("no member to read");
  current_read_ = true;
  Sha256 sha;
  uint64_t left = current_->size;
  std::string piece;
  while (left > 0) {
    size_t n = static_cast<size_t>(std::min<uint64_t>(left, kPiece));
    if (auto s = ReadExactly(n, &piece); !s.ok()) return s;
    sha.Update(piece);
    if (auto s = sink(piece); !s.ok()) return s;
    left -= n;
  }
  if (auto s = ReadExactly(Padding(current_->size), &piece); !s.ok()) return s;
  return sha.HexDigest();
}

}  // namespace kv::storage
