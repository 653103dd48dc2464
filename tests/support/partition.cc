#include "tests/support/partition.h"

#include <unistd.h>

#include "absl/strings/str_cat.h"
#include "tests/support/kvd_process.h"

namespace kv::testing {

Partitioner::Partitioner(std::map<uint64_t, std::pair<int, int>> nodes)
    : nodes_(std::move(nodes)),
      mangle_chain_(absl::StrCat("KVT_M_", getpid())),
      filter_chain_(absl::StrCat("KVT_F_", getpid())) {
  if (geteuid() != 0) {
    error_ = "partition tests need root (iptables)";
    return;
  }
  bool ok = Run("-t mangle -N " + mangle_chain_) &&
            Run("-t mangle -I OUTPUT -j " + mangle_chain_) && Run("-N " + filter_chain_) &&
            Run("-I INPUT -j " + filter_chain_);
  for (const auto& [id, up] : nodes_) {
    ok = ok && Run(absl::StrCat("-t mangle -A ", mangle_chain_, " -o lo -p tcp -m owner ",
                                "--uid-owner ", up.first,
                                " -m conntrack --ctstate NEW -j CONNMARK --set-mark ", up.first));
  }
  if (!ok && error_.empty()) error_ = "iptables failed (is Debian's iptables installed?)";
}

Partitioner::~Partitioner() {
  Run("-D INPUT -j " + filter_chain_);
  Run("-F " + filter_chain_);
  Run("-X " + filter_chain_);
  Run("-t mangle -D OUTPUT -j " + mangle_chain_);
  Run("-t mangle -F " + mangle_chain_);
  Run("-t mangle -X " + mangle_chain_);
}

bool Partitioner::Run(const std::string& args) {
  std::vector<std::string> argv = {"/usr/sbin/iptables", "-w"};
  size_t start = 0;
  while (start < args.size()) {
    size_t end = args.find(' ', start);
    if (end == std::string::npos) end = args.size();
    if (end > start) argv.push_back(args.substr(start, end - start));
    start = end + 1;
  }
  auto r = RunProgram(argv, "", 20000);
  if (r.exit_code != 0 && error_.empty()) error_ = "iptables " + args + ": " + r.err;
  return r.exit_code == 0;
}

void Partitioner::Isolate(uint64_t node) {
  auto [uid, port] = nodes_.at(node);
  for (const auto& [other, up] : nodes_) {
    if (other == node) continue;
    Run(absl::StrCat("-A ", filter_chain_, " -i lo -p tcp -m connmark --mark ", uid,
                     " -m conntrack --ctorigdstport ", up.second, " -j DROP"));
    Run(absl::StrCat("-A ", filter_chain_, " -i lo -p tcp -m connmark --mark ", up.first,
                     " -m conntrack --ctorigdstport ", port, " -j DROP"));
  }
}

void Partitioner::HealAll() { Run("-F " + filter_chain_); }

}  // namespace kv::testing
