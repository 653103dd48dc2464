// Test support: real network partitions between kvd processes on 127.0.0.1, with iptables.
//
// Every node runs as its own uid. A mangle rule marks each new loopback TCP connection with the
// uid of the process that opened it; Isolate(n) then drops, in both directions, every connection
// node n opened to another node's port and every connection another node opened to n's port
// (packets vanish; TCP retransmits, as on a real network). Clients of the test (root) still
// reach every node. Rules live in chains named after this process and are removed on
// destruction. Needs root and Debian's iptables (see ../../shared/BUILD-NOTES.md).
#pragma once

#include <cstdint>
#include <map>
#include <string>

namespace kv::testing {

class Partitioner {
 public:
  // node id -> (uid, peer port)
  explicit Partitioner(std::map<uint64_t, std::pair<int, int>> nodes);
  ~Partitioner();
  // Empty when rules were installed; otherwise why not (not root, no iptables, ...).
  const std::string& error() const { return error_; }

  void Isolate(uint64_t node);
  void HealAll();

 private:
  bool Run(const std::string& args);
  std::map<uint64_t, std::pair<int, int>> nodes_;
  std::string mangle_chain_, filter_chain_;
  std::string error_;
};

}  // namespace kv::testing
