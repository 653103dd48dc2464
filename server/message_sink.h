// MessageSink: where the driver sends Raft messages and snapshots. PeerTransport sends them over
// gRPC; the node simulation delivers them through a simulated network.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "kvstore/v1/raft.pb.h"

namespace kv::server {

class MessageSink {
 public:
  virtual ~MessageSink() = default;
  // Best effort: messages may be lost (Raft retransmits).
  virtual void Send(std::vector<raftpb::Message> messages) = 0;
  // Delivers `data` and then the MSG_SNAPSHOT `message`; `done(ok)` when finished or failed.
  virtual void SendSnapshot(raftpb::Message message, std::string data,
                            std::function<void(bool)> done) = 0;
};

}  // namespace kv::server
