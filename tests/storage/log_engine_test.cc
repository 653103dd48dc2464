// The Raft log engine on a real directory: what replay recovers after each kind of op, torn and
// corrupted tails, segments rotated and deleted once dead, rewrite requests for groups that pin
// the oldest segment, and (on the crashable file system) that a crash keeps exactly the synced
// records.
#include "storage/log_engine.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "storage/crc32c.h"
#include "tests/support/crashable_file_system.h"
#include "tests/support/kvd_process.h"

namespace kv::storage {
namespace {

std::string Entry(uint64_t group, uint64_t index) {
  return "g" + std::to_string(group) + "-e" + std::to_string(index);
}

std::vector<std::string> Entries(uint64_t group, uint64_t first, uint64_t last) {
  std::vector<std::string> v;
  for (uint64_t i = first; i <= last; ++i) v.push_back(Entry(group, i));
  return v;
}

class LogEngineTest : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = kv::testing::MakeTempDir("log-engine"); }
  void TearDown() override {
    log_.reset();
    std::filesystem::remove_all(dir_);
  }
  absl::Status Open() {
    log_.reset();
    LogEngineOptions o;
    o.dir = dir_;
    o.env = env_;
    o.segment_bytes = segment_bytes_;
    o.max_segments = 3;
    o.before_delete = [this] {
      ++before_delete_calls_;
      return absl::OkStatus();
    };
    auto opened = LogEngine::Open(o);
    if (!opened.ok()) return opened.status();
    log_ = *std::move(opened);
    return absl::OkStatus();
  }
  void Append(uint64_t group, uint64_t first, uint64_t last, bool sync = true) {
    LogBatch b;
    for (uint64_t i = first; i <= last; ++i) b.Append(group, i, Entry(group, i));
    ASSERT_TRUE(log_->Write(b, sync).ok());
  }
  std::vector<std::filesystem::path> Segments() const {
    std::vector<std::filesystem::path> v;
    for (const auto& f : std::filesystem::directory_iterator(dir_)) {
      if (f.path().extension() == ".seg") v.push_back(f.path());
    }
    std::sort(v.begin(), v.end());
    return v;
  }

  std::string dir_;
  rocksdb::Env* env_ = nullptr;
  uint64_t segment_bytes_ = 64 << 20;
  int before_delete_calls_ = 0;
  std::unique_ptr<LogEngine> log_;
};

TEST(Crc32cTest, KnownValues) {
  // RFC 3720's check value and its all-zero vector.
  EXPECT_EQ(Crc32c("123456789"), 0xe3069283u);
  EXPECT_EQ(Crc32c(std::string(32, '\0')), 0x8a9136aau);
  // Extending equals one pass.
  EXPECT_EQ(Crc32c("56789", Crc32c("1234")), Crc32c("123456789"));
}

TEST_F(LogEngineTest, ReplayRecoversEachGroupAfterEveryKindOfOp) {
  ASSERT_TRUE(Open().ok());
  Append(1, 1, 10);
  Append(2, 5, 7);
  {
    LogBatch b;
    b.SetState(1, "term 3");
    b.Truncate(1, 8);         // 1..7 left
    b.Append(1, 8, "new-8");  // a new entry 8
    b.Append(1, 6, "new-6");  // at or below the last: truncates there (1..5, new-6)
    b.SetState(2, "term 9");
    b.DropEntries(2);  // a snapshot: entries go, the state stays
    b.Append(2, 20, "after-snapshot-20");
    b.SetState(3, "gone");
    b.DropGroup(3);
    ASSERT_TRUE(log_->Write(b, true).ok());
  }
  ASSERT_TRUE(Open().ok());
  RecoveredLog one = log_->TakeRecovered(1);
  EXPECT_EQ(one.state, "term 3");
  EXPECT_EQ(one.first_index, 1u);
  std::vector<std::string> want = Entries(1, 1, 5);
  want.push_back("new-6");
  EXPECT_EQ(one.entries, want);
  RecoveredLog two = log_->TakeRecovered(2);
  EXPECT_EQ(two.state, "term 9");
  EXPECT_EQ(two.first_index, 20u);
  EXPECT_EQ(two.entries, std::vector<std::string>{"after-snapshot-20"});
  EXPECT_TRUE(log_->TakeRecovered(3).empty());
  EXPECT_TRUE(log_->TakeRecovered(1).empty()) << "handed out once";
  EXPECT_TRUE(log_->UntakenGroups().empty());
}

TEST_F(LogEngineTest, UntakenGroupsAreTheLeftovers) {
  ASSERT_TRUE(Open().ok());
  Append(1, 1, 2);
  Append(2, 1, 2);
  ASSERT_TRUE(Open().ok());
  (void)log_->TakeRecovered(1);
  EXPECT_EQ(log_->UntakenGroups(), std::vector<uint64_t>{2});
}

TEST_F(LogEngineTest, TornTailIsDroppedAndCutAway) {
  ASSERT_TRUE(Open().ok());
  Append(1, 1, 5);
  log_.reset();
  // A crash in the middle of a write: half a record (a real header and part of its payload)
  // after the last whole one, then garbage.
  std::filesystem::path last = Segments().back();
  {
    std::ifstream in(last, std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::ofstream out(last, std::ios::binary | std::ios::app);
    out << bytes.substr(8, 12) << "\x7f\x01garbage";
  }
  auto size_before = std::filesystem::file_size(last);
  ASSERT_TRUE(Open().ok());
  EXPECT_GT(log_->stats().torn_bytes_dropped, 0u);
  EXPECT_LT(std::filesystem::file_size(last), size_before) << "cut back to its last record";
  EXPECT_EQ(log_->TakeRecovered(1).entries, Entries(1, 1, 5));
  Append(1, 6, 6);
  // The cut file is an older segment now; opening again must not see damage in it.
  ASSERT_TRUE(Open().ok());
  EXPECT_EQ(log_->stats().torn_bytes_dropped, 0u);
  EXPECT_EQ(log_->TakeRecovered(1).entries, Entries(1, 1, 6));
}

TEST_F(LogEngineTest, ACorruptedRecordAtTheEndIsDroppedNotApplied) {
  ASSERT_TRUE(Open().ok());
  Append(1, 1, 3);
  Append(1, 4, 4);
  log_.reset();
  std::filesystem::path last = Segments().back();
  {
    std::fstream f(last, std::ios::binary | std::ios::in | std::ios::out);
    f.seekp(-1, std::ios::end);  // the last byte of entry 4's record
    f.put('X');
  }
  ASSERT_TRUE(Open().ok());
  EXPECT_EQ(log_->TakeRecovered(1).entries, Entries(1, 1, 3));
}

TEST_F(LogEngineTest, DamageInAnOlderSegmentIsDataLoss) {
  ASSERT_TRUE(Open().ok());
  Append(1, 1, 3);
  ASSERT_TRUE(Open().ok());  // a new segment at every open: the first is older now
  Append(1, 4, 4);
  log_.reset();
  std::filesystem::path first = Segments().front();
  {
    std::fstream f(first, std::ios::binary | std::ios::in | std::ios::out);
    f.seekp(20);
    f.put('X');
  }
  auto s = Open();
  EXPECT_TRUE(absl::IsDataLoss(s)) << s;
}

TEST_F(LogEngineTest, SegmentsRotateAndGoOnceCompactedWithTheHookFirst) {
  segment_bytes_ = 4096;
  ASSERT_TRUE(Open().ok());
  LogBatch state;
  state.SetState(1, "hs");
  ASSERT_TRUE(log_->Write(state, true).ok());
  for (uint64_t i = 1; i <= 2000; i += 10) Append(1, i, i + 9);
  size_t before = Segments().size();
  ASSERT_GT(before, 3u);
  EXPECT_EQ(before_delete_calls_, 0) << "nothing is dead yet";
  log_->Compacted(1, 1990);
  Append(1, 2001, 2001);  // the next synced write collects
  EXPECT_GE(before_delete_calls_, 1);
  EXPECT_LE(Segments().size(), 2u);
  EXPECT_GT(log_->stats().segments_deleted, 0u);
  ASSERT_TRUE(Open().ok());
  RecoveredLog one = log_->TakeRecovered(1);
  EXPECT_EQ(one.state, "hs") << "the state was checkpointed into every new segment";
  ASSERT_FALSE(one.entries.empty());
  EXPECT_LE(one.first_index, 1991u);
  EXPECT_EQ(one.first_index + one.entries.size() - 1, 2001u);
  EXPECT_EQ(one.entries.back(), Entry(1, 2001));
}

TEST_F(LogEngineTest, AnIdleGroupPinningTheOldestSegmentIsAskedToRewrite) {
  segment_bytes_ = 4096;
  ASSERT_TRUE(Open().ok());
  Append(7, 1, 2);  // idle from here on, never compacted
  std::vector<uint64_t> asked;
  for (uint64_t i = 1; i <= 3000; i += 10) {
    Append(1, i, i + 9);
    log_->Compacted(1, i + 9);
    for (uint64_t g : log_->TakeRewriteRequests()) asked.push_back(g);
  }
  ASSERT_FALSE(asked.empty());
  EXPECT_EQ(asked.front(), 7u);
  EXPECT_GT(Segments().size(), 3u) << "group 7 holds them";
  LogBatch rewrite;
  rewrite.DropGroup(7);
  rewrite.Append(7, 1, Entry(7, 1));
  rewrite.Append(7, 2, Entry(7, 2));
  ASSERT_TRUE(log_->Write(rewrite, true).ok());
  EXPECT_LE(Segments().size(), 2u);
  ASSERT_TRUE(Open().ok());
  EXPECT_EQ(log_->TakeRecovered(7).entries, Entries(7, 1, 2));
}

TEST_F(LogEngineTest, RestartsAloneAlsoAskIdleGroupsToRewrite) {
  ASSERT_TRUE(Open().ok());
  Append(7, 1, 2);
  std::vector<uint64_t> asked;
  for (int i = 0; i < 5 && asked.empty(); ++i) {
    ASSERT_TRUE(Open().ok());  // every open begins a segment
    (void)log_->TakeRecovered(7);
    asked = log_->TakeRewriteRequests();
  }
  EXPECT_EQ(asked, std::vector<uint64_t>{7});
}

TEST_F(LogEngineTest, ACrashKeepsExactlyTheSyncedRecords) {
  kv::testing::CrashableFileSystem fs;
  env_ = fs.env();
  ASSERT_TRUE(Open().ok());
  Append(1, 1, 3, /*sync=*/true);
  Append(1, 4, 5, /*sync=*/false);
  Append(2, 1, 1, /*sync=*/false);
  fs.Crash();
  log_.reset();
  fs.Restart();
  EXPECT_GT(fs.last_lost_bytes(), 0u);
  ASSERT_TRUE(Open().ok());
  EXPECT_EQ(log_->TakeRecovered(1).entries, Entries(1, 1, 3));
  EXPECT_TRUE(log_->TakeRecovered(2).empty());
  // An unsynced write followed by a synced one: both survive (one file, written in order).
  Append(3, 1, 1, /*sync=*/false);
  Append(3, 2, 2, /*sync=*/true);
  fs.Crash();
  log_.reset();
  fs.Restart();
  ASSERT_TRUE(Open().ok());
  EXPECT_EQ(log_->TakeRecovered(3).entries, Entries(3, 1, 2));
  // Crashes right after opening, before anything was synced: each leaves a segment without even
  // its header, which the next open deletes instead of taking it for damage.
  for (int i = 0; i < 2; ++i) {
    fs.Crash();
    log_.reset();
    fs.Restart();
    ASSERT_TRUE(Open().ok());
  }
  EXPECT_EQ(log_->TakeRecovered(3).entries, Entries(3, 1, 2));
  log_.reset();
}

}  // namespace
}  // namespace kv::storage
