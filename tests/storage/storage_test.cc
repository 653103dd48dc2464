#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "storage/engine.h"
#include "storage/keys.h"
#include "tests/support/kvd_process.h"

namespace kv::storage {
namespace {

TEST(KeysTest, BigEndianRoundTripAndOrder) {
  for (uint64_t v : {0ull, 1ull, 255ull, 256ull, 1ull << 40, ~0ull}) {
    std::string s;
    AppendBigEndian64(&s, v);
    ASSERT_EQ(s.size(), 8u);
    EXPECT_EQ(ReadBigEndian64(s), v);
  }
  // Byte order equals numeric order, which keeps a group's log contiguous and sorted.
  EXPECT_LT(RaftEntryKey(1, 255), RaftEntryKey(1, 256));
  EXPECT_LT(RaftEntryKey(1, ~0ull), RaftEntryKey(2, 0));
  EXPECT_EQ(RaftEntryIndexOf(RaftEntryKey(7, 123456)), 123456u);
}

TEST(KeysTest, ShardsAreContiguousRanges) {
  EXPECT_LE(ShardBegin(3), DataKey(3, ""));
  EXPECT_LT(DataKey(3, std::string(4096, '\xff')), ShardEnd(3));
  EXPECT_EQ(ShardEnd(3), ShardBegin(4));
  EXPECT_EQ(UserKeyOf(DataKey(3, "abc")), "abc");
}

TEST(KeysTest, VersionedValueRoundTripAndRejectsShortBuffers) {
  std::string enc = EncodeVersionedValue(42, std::string("v\0x", 3));
  auto dec = DecodeVersionedValue(enc);
  ASSERT_TRUE(dec.has_value());
  EXPECT_EQ(dec->version, 42u);
  EXPECT_EQ(dec->value, std::string("v\0x", 3));
  EXPECT_FALSE(DecodeVersionedValue("short").has_value());
}

TEST(KeysTest, PrefixSuccessor) {
  EXPECT_EQ(PrefixSuccessor("ab"), "ac");
  EXPECT_EQ(PrefixSuccessor(std::string("a\xff", 2)), "b");
  EXPECT_EQ(PrefixSuccessor(std::string("\xff\xff", 2)), "");
}

TEST(KeysTest, ClientSessionKeyRoundTrip) {
  EXPECT_EQ(ClientOfSessionKey(ClientSessionKey(1, 99)), 99u);
  EXPECT_EQ(ClientSessionKey(1, 99).substr(0, 9), ClientSessionPrefix(1));
  EXPECT_LT(ClientSessionKey(1, 99), ClientSessionKey(1, 100));
}

class EngineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = kv::testing::MakeTempDir("engine");
    ASSERT_FALSE(dir_.empty());
    Reopen();
  }
  void TearDown() override {
    engine_.reset();
    std::filesystem::remove_all(dir_);
  }
  void Reopen() {
    engine_.reset();
    auto e = Engine::Open(EngineOptions{dir_});
    ASSERT_TRUE(e.ok()) << e.status();
    engine_ = *std::move(e);
  }
  std::string dir_;
  std::unique_ptr<Engine> engine_;
};

TEST_F(EngineTest, ColumnFamiliesAreSeparate) {
  WriteBatch b(*engine_);
  b.Put(Column::kData, "k", "data");
  b.Put(Column::kMeta, "k", "meta");
  ASSERT_TRUE(engine_->Write(b, true).ok());
  EXPECT_EQ(**engine_->Get(Column::kData, "k"), "data");
  EXPECT_EQ(**engine_->Get(Column::kMeta, "k"), "meta");
  EXPECT_FALSE(engine_->Get(Column::kRaft, "k")->has_value());
}

TEST_F(EngineTest, SyncedWritesSurviveReopen) {
  WriteBatch b(*engine_);
  for (int i = 0; i < 100; ++i) b.Put(Column::kData, "k" + std::to_string(i), "v");
  EXPECT_EQ(b.Count(), 100u);
  ASSERT_TRUE(engine_->Write(b, true).ok());
  Reopen();
  EXPECT_EQ(**engine_->Get(Column::kData, "k99"), "v");
}

TEST_F(EngineTest, SnapshotIsConsistentPointInTime) {
  WriteBatch b(*engine_);
  b.Put(Column::kData, "a", "1");
  ASSERT_TRUE(engine_->Write(b, true).ok());
  auto snap = engine_->GetSnapshot();
  WriteBatch b2(*engine_);
  b2.Put(Column::kData, "a", "2");
  b2.Put(Column::kData, "b", "2");
  ASSERT_TRUE(engine_->Write(b2, true).ok());
  EXPECT_EQ(**engine_->Get(Column::kData, "a", snap.get()), "1");
  EXPECT_FALSE(engine_->Get(Column::kData, "b", snap.get())->has_value());
  int n = 0;
  for (auto it = engine_->NewIterator(Column::kData, "", "", snap.get()); it->Valid(); it->Next()) {
    ++n;
  }
  EXPECT_EQ(n, 1);
  EXPECT_EQ(**engine_->Get(Column::kData, "a"), "2");
}

TEST_F(EngineTest, IteratorRespectsBounds) {
  WriteBatch b(*engine_);
  for (const char* k : {"a", "b", "c", "d"}) b.Put(Column::kData, k, k);
  ASSERT_TRUE(engine_->Write(b, true).ok());
  std::string seen;
  for (auto it = engine_->NewIterator(Column::kData, "b", "d"); it->Valid(); it->Next()) {
    seen += std::string(it->key());
  }
  EXPECT_EQ(seen, "bc");
  seen.clear();
  for (auto it = engine_->NewIterator(Column::kData, "c", ""); it->Valid(); it->Next()) {
    seen += std::string(it->key());
  }
  EXPECT_EQ(seen, "cd");
}

TEST_F(EngineTest, DeleteRangeAndDelete) {
  WriteBatch b(*engine_);
  for (const char* k : {"a", "b", "c", "d"}) b.Put(Column::kRaft, k, k);
  ASSERT_TRUE(engine_->Write(b, true).ok());
  WriteBatch d(*engine_);
  d.DeleteRange(Column::kRaft, "a", "c");
  d.Delete(Column::kRaft, "d");
  ASSERT_TRUE(engine_->Write(d, true).ok());
  EXPECT_FALSE(engine_->Get(Column::kRaft, "a")->has_value());
  EXPECT_FALSE(engine_->Get(Column::kRaft, "b")->has_value());
  EXPECT_TRUE(engine_->Get(Column::kRaft, "c")->has_value());
  EXPECT_FALSE(engine_->Get(Column::kRaft, "d")->has_value());
}

TEST_F(EngineTest, CorruptedManifestRefusesToOpen) {
  engine_.reset();
  ASSERT_TRUE(kv::testing::CorruptManifest(dir_));
  auto e = Engine::Open(EngineOptions{dir_});
  ASSERT_FALSE(e.ok());
}

}  // namespace
}  // namespace kv::storage
