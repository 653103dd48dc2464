// Progress (raft/progress.h): the leader's view of one follower, as tables of events and the
// state each leaves behind.
#include "raft/progress.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace kv::raft {
namespace {

using State = Progress::State;
constexpr size_t kWindow = 2;

Progress Make(State state, uint64_t match, uint64_t next) {
  Progress p;
  p.state = state;
  p.match = match;
  p.next = next;
  return p;
}

TEST(ProgressTest, PausedByStateAndWindow) {
  struct Case {
    std::string name;
    Progress p;
    bool paused;
  };
  Progress probe_sent = Make(State::kProbe, 3, 4);
  probe_sent.probe_sent = true;
  Progress full = Make(State::kReplicate, 3, 10);
  full.inflight = {6, 9};
  Progress one_in_flight = full;
  one_in_flight.inflight = {9};
  std::vector<Case> cases = {
      {"probe, nothing outstanding", Make(State::kProbe, 3, 4), false},
      {"probe, an append outstanding", probe_sent, true},
      {"replicate, window full", full, true},
      {"replicate, room in the window", one_in_flight, false},
      {"snapshot", Make(State::kSnapshot, 3, 4), true},
  };
  for (const auto& c : cases) EXPECT_EQ(c.p.IsPaused(kWindow), c.paused) << c.name;
}

TEST(ProgressTest, SendingPipelinesOnlyWhenReplicating) {
  Progress replicate = Make(State::kReplicate, 3, 4);
  replicate.SentAppend(3, 6);
  EXPECT_EQ(replicate.next, 7u) << "next runs ahead of match";
  EXPECT_EQ(replicate.inflight, std::deque<uint64_t>{6});
  replicate.SentAppend(0, 0);  // an empty append (a commit index) takes no slot
  EXPECT_EQ(replicate.inflight.size(), 1u);

  Progress probe = Make(State::kProbe, 3, 4);
  probe.SentAppend(3, 6);
  EXPECT_EQ(probe.next, 4u) << "a probe waits for its answer";
  EXPECT_TRUE(probe.probe_sent);
  EXPECT_TRUE(probe.inflight.empty());
}

TEST(ProgressTest, AcceptedAppendsAdvanceAndFreeTheWindow) {
  struct Case {
    std::string name;
    Progress p;
    uint64_t index;
    uint64_t match, next;
    size_t inflight;
  };
  Progress pipelined = Make(State::kReplicate, 3, 10);
  pipelined.inflight = {6, 9};
  std::vector<Case> cases = {
      {"replicate: the oldest append answered", pipelined, 6, 6, 10, 1},
      {"replicate: both answered", pipelined, 9, 9, 10, 0},
      {"replicate: a stale answer changes nothing", pipelined, 2, 3, 10, 2},
      {"probe: found, replicate from match + 1", Make(State::kProbe, 0, 4), 3, 3, 4, 0},
      {"probe: an older match", Make(State::kProbe, 5, 6), 3, 5, 6, 0},
  };
  for (auto c : cases) {
    c.p.Accepted(c.index);
    EXPECT_EQ(c.p.state, State::kReplicate) << c.name;
    EXPECT_EQ(c.p.match, c.match) << c.name;
    EXPECT_EQ(c.p.next, c.next) << c.name;
    EXPECT_EQ(c.p.inflight.size(), c.inflight) << c.name;
  }
}

TEST(ProgressTest, RejectionsProbeBackUnlessStale) {
  struct Case {
    std::string name;
    Progress p;
    uint64_t rejected, hint;
    bool taken;
    uint64_t next;
  };
  Progress pipelined = Make(State::kReplicate, 3, 10);
  pipelined.inflight = {6, 9};
  Progress probing = Make(State::kProbe, 0, 8);
  probing.probe_sent = true;
  std::vector<Case> cases = {
      {"replicate: back to the follower's hint", pipelined, 6, 4, true, 4},
      {"replicate: never below match + 1", pipelined, 6, 1, true, 4},
      {"replicate: at or below match is stale", pipelined, 3, 1, false, 10},
      {"probe: the probe's own answer", probing, 7, 5, true, 5},
      {"probe: a hint past the rejection", probing, 7, 100, true, 7},
      {"probe: an older probe's answer is stale", probing, 5, 2, false, 8},
      {"probe: never below 1", Make(State::kProbe, 0, 1), 0, 0, true, 1},
      // The follower lost what it acknowledged (re-created under the same id): probing goes
      // back to its hint, below the old match (seen: a learner never caught up).
      {"probe: refused at match, the follower lost it", Make(State::kProbe, 30, 31), 30, 0, true,
       1},
      {"snapshot: ignored", Make(State::kSnapshot, 3, 4), 3, 1, false, 4},
  };
  for (auto c : cases) {
    State before = c.p.state;
    EXPECT_EQ(c.p.Rejected(c.rejected, c.hint), c.taken) << c.name;
    EXPECT_EQ(c.p.next, c.next) << c.name;
    EXPECT_LT(c.p.match, c.p.next) << c.name;
    if (c.taken) {
      EXPECT_EQ(c.p.state, State::kProbe) << c.name;
      EXPECT_FALSE(c.p.probe_sent) << c.name << ": the next probe may go out";
      EXPECT_TRUE(c.p.inflight.empty()) << c.name;
    } else {
      EXPECT_EQ(c.p.state, before) << c.name;
    }
  }
}

TEST(ProgressTest, HeartbeatAnswersUnblockProbesAndFullWindows) {
  Progress probe = Make(State::kProbe, 3, 4);
  probe.probe_sent = true;
  probe.HeartbeatAnswered(kWindow);
  EXPECT_FALSE(probe.probe_sent);

  Progress full = Make(State::kReplicate, 3, 10);
  full.inflight = {6, 9};
  full.HeartbeatAnswered(kWindow);
  EXPECT_EQ(full.inflight, std::deque<uint64_t>{9}) << "the oldest slot is freed";
  full.HeartbeatAnswered(kWindow);
  EXPECT_EQ(full.inflight.size(), 1u) << "a window with room is left alone";
}

TEST(ProgressTest, ASnapshotIsAskedForOnceAndReportedBackToProbe) {
  Progress p = Make(State::kReplicate, 3, 10);
  p.inflight = {6, 9};
  EXPECT_TRUE(p.NeedsSnapshot());
  EXPECT_EQ(p.state, State::kSnapshot);
  EXPECT_TRUE(p.inflight.empty());
  EXPECT_FALSE(p.NeedsSnapshot()) << "one request while one is pending";
  EXPECT_TRUE(p.IsPaused(kWindow));

  Progress sent = p;
  sent.match = 20;  // the follower answered for the snapshot's index
  sent.SnapshotReported(true);
  EXPECT_EQ(sent.state, State::kProbe);
  EXPECT_EQ(sent.next, 21u);
  EXPECT_TRUE(sent.probe_sent) << "after a snapshot, wait for the follower's answer";
  EXPECT_TRUE(sent.NeedsSnapshot()) << "a later need asks again";

  Progress failed = p;
  failed.SnapshotReported(false);
  EXPECT_EQ(failed.state, State::kProbe);
  EXPECT_EQ(failed.next, 4u);
  EXPECT_FALSE(failed.probe_sent) << "after a failure, probe at once";
}

}  // namespace
}  // namespace kv::raft
