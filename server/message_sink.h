// MessageSink: where the driver sends Raft messages and snapshots. PeerTransport sends them over
// gRPC; the node simulation delivers them through a simulated network.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "kvstore/v1/raft.pb.h"
#include "server/snapshot_source.h"

namespace kv::server {

class MessageSink {
 public:
  virtual ~MessageSink() = default;
  // Best effort: messages may be lost (Raft retransmits).
  virtual void Send(std::vector<raftpb::Message> messages) = 0;
  // Streams the snapshot's data from `source`, then the MSG_SNAPSHOT `message`; `done(ok)` when
  // finished or failed.
  virtual void SendSnapshot(raftpb::Message message, std::unique_ptr<SnapshotSource> source,
                            std::function<void(bool)> done) = 0;
};

}  // namespace kv::server
