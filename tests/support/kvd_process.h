// Test support: real kvd processes on loopback ports, started and stopped by PID.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

namespace kv::testing {

// A free TCP port on 127.0.0.1 below the ephemeral range (so no outgoing connection takes it).
int PickFreePort();

// A fresh directory under the test's temp dir; removed by the caller (or left for post-mortem).
std::string MakeTempDir(const std::string& name);

struct RunResult {
  int exit_code = -1;
  std::string out;
  std::string err;
};
// Runs a program to completion, feeding `stdin_data`; bounded by timeout_ms (then SIGKILL).
// With interrupt_after_ms > 0 it is sent SIGINT (Ctrl-C) that long after it started.
RunResult RunProgram(const std::vector<std::string>& argv, const std::string& stdin_data = "",
                     int timeout_ms = 60000, int interrupt_after_ms = 0);

class KvdProcess {
 public:
  // Does not start anything yet.
  KvdProcess(uint64_t node_id, std::string data_dir, int port = 0);
  ~KvdProcess();  // SIGKILLs the process if still running

  void AddFlag(std::string flag) { extra_flags_.push_back(std::move(flag)); }
  void RemoveFlag(const std::string& flag) { std::erase(extra_flags_, flag); }
  // Start() normally waits until the node serves reads (a leader exists). Members of a cluster
  // that is not yet complete cannot: let them return once listening.
  void set_wait_for_leader(bool wait) { wait_for_leader_ = wait; }
  // Run kvd as this uid (the test runs as root); its data directory is handed to it.
  void set_uid(int uid) { uid_ = uid; }
  // Starts kvd and waits until it answers (or exits). False if it did not come up.
  bool Start(int wait_ms = 15000);
  // Sends SIGTERM and waits for exit; returns the exit code (-1 on timeout, then SIGKILL).
  int Stop(int wait_ms = 10000);
  void Kill9();
  void SignalStop();      // SIGSTOP
  void SignalContinue();  // SIGCONT
  // Waits for the process to exit by itself; exit code or -1.
  int WaitExit(int wait_ms);
  bool running() const { return pid_ > 0; }
  pid_t pid() const { return pid_; }
  uint64_t node_id() const { return node_id_; }
  int port() const { return port_; }
  // Client address (--listen).
  std::string endpoint() const;
  // Peer address (--peer-listen): what membership and --peers name.
  int peer_port() const { return peer_port_; }
  std::string peer_endpoint() const;
  const std::string& data_dir() const { return data_dir_; }
  const std::string& log_path() const { return log_path_; }
  std::string ReadLog() const;

 private:
  uint64_t node_id_;
  std::string data_dir_;
  int port_;
  int peer_port_;
  std::string log_path_;
  std::vector<std::string> extra_flags_;
  bool wait_for_leader_ = true;
  int uid_ = -1;
  pid_t pid_ = -1;
};

// Overwrites bytes in the middle of every RocksDB MANIFEST in `dir`; false if there was none.
bool CorruptManifest(const std::string& dir);

std::string KvdBinary();
std::string KvctlBinary();

}  // namespace kv::testing
