#include "tests/support/kvd_process.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <thread>

namespace kv::testing {
namespace {

bool PortIsFree(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return false;
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bool ok = bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  close(fd);
  return ok;
}

bool CanConnect(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return false;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bool ok = connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  close(fd);
  return ok;
}

std::vector<char*> CArgs(const std::vector<std::string>& argv) {
  std::vector<char*> out;
  for (const auto& a : argv) out.push_back(const_cast<char*>(a.c_str()));
  out.push_back(nullptr);
  return out;
}

std::string Slurp(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

}  // namespace

bool CorruptManifest(const std::string& dir) {
  bool corrupted = false;
  for (const auto& f : std::filesystem::directory_iterator(dir)) {
    if (f.path().filename().string().rfind("MANIFEST-", 0) != 0) continue;
    std::fstream out(f.path(), std::ios::in | std::ios::out | std::ios::binary);
    out.seekp(8);
    out.write("\x13\x37garbage-garbage", 17);
    corrupted = true;
  }
  return corrupted;
}

std::string KvdBinary() { return KV_KVD_BINARY; }
std::string KvctlBinary() { return KV_KVCTL_BINARY; }

// ctest runs test processes in parallel, and a port that looks free may belong to another test's
// node that is down for a moment (killed, restarting). Each process therefore reserves the ports
// it picks with a lock file it holds until it exits.
bool ReservePort(int port) {
  std::string dir = std::filesystem::temp_directory_path().string() + "/kvtest-ports";
  std::error_code ignored;
  std::filesystem::create_directories(dir, ignored);
  std::string path = dir + "/" + std::to_string(port);
  int fd = open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0666);
  if (fd < 0) return false;
  if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
    close(fd);
    return false;
  }
  return true;  // fd stays open on purpose: the lock lives as long as this process
}

int PickFreePort() {
  static std::mt19937 rng(static_cast<unsigned>(getpid()) ^
                          static_cast<unsigned>(std::random_device{}()));
  for (int i = 0; i < 1000; ++i) {
    int port = std::uniform_int_distribution<int>(20000, 32000)(rng);
    if (PortIsFree(port) && ReservePort(port)) return port;
  }
  return -1;
}

std::string MakeTempDir(const std::string& name) {
  const char* base = std::getenv("TEST_TMPDIR");
  std::string root = base ? base : std::filesystem::temp_directory_path().string();
  std::string tmpl = root + "/kvtest-" + name + "-XXXXXX";
  std::vector<char> buf(tmpl.begin(), tmpl.end());
  buf.push_back('\0');
  char* made = mkdtemp(buf.data());
  return made ? std::string(made) : std::string();
}

RunResult RunProgram(const std::vector<std::string>& argv, const std::string& stdin_data,
                     int timeout_ms, int interrupt_after_ms) {
  int in_pipe[2], out_pipe[2], err_pipe[2];
  RunResult result;
  if (pipe(in_pipe) || pipe(out_pipe) || pipe(err_pipe)) return result;
  pid_t pid = fork();
  if (pid == 0) {
    dup2(in_pipe[0], 0);
    dup2(out_pipe[1], 1);
    dup2(err_pipe[1], 2);
    for (int fd : {in_pipe[0], in_pipe[1], out_pipe[0], out_pipe[1], err_pipe[0], err_pipe[1]}) {
      close(fd);
    }
    auto args = CArgs(argv);
    execv(args[0], args.data());
    _exit(127);
  }
  close(in_pipe[0]);
  close(out_pipe[1]);
  close(err_pipe[1]);
  // Small inputs fit the pipe buffer; larger ones are written by a helper thread.
  std::thread writer([fd = in_pipe[1], &stdin_data] {
    size_t off = 0;
    while (off < stdin_data.size()) {
      ssize_t n = write(fd, stdin_data.data() + off, stdin_data.size() - off);
      if (n <= 0) break;
      off += static_cast<size_t>(n);
    }
    close(fd);
  });
  auto started = std::chrono::steady_clock::now();
  auto deadline = started + std::chrono::milliseconds(timeout_ms);
  auto interrupt_at = started + std::chrono::milliseconds(interrupt_after_ms);
  bool interrupted = interrupt_after_ms <= 0;
  pollfd fds[2] = {{out_pipe[0], POLLIN, 0}, {err_pipe[0], POLLIN, 0}};
  int open_fds = 2;
  char buf[65536];
  while (open_fds > 0) {
    auto now = std::chrono::steady_clock::now();
    if (!interrupted && now >= interrupt_at) {
      kill(pid, SIGINT);
      interrupted = true;
    }
    auto until = interrupted ? deadline : std::min(deadline, interrupt_at);
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - now).count();
    if (now >= deadline) {
      kill(pid, SIGKILL);
      break;
    }
    if (poll(fds, 2, static_cast<int>(std::max<int64_t>(left, 1))) <= 0) continue;
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP))) continue;
      ssize_t n = read(fds[i].fd, buf, sizeof(buf));
      if (n <= 0) {
        close(fds[i].fd);
        fds[i].fd = -1;
        --open_fds;
      } else {
        (i == 0 ? result.out : result.err).append(buf, static_cast<size_t>(n));
      }
    }
  }
  for (auto& f : fds) {
    if (f.fd >= 0) close(f.fd);
  }
  writer.join();
  int status = 0;
  waitpid(pid, &status, 0);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

KvdProcess::KvdProcess(uint64_t node_id, std::string data_dir, int port)
    : node_id_(node_id),
      data_dir_(std::move(data_dir)),
      port_(port == 0 ? PickFreePort() : port),
      peer_port_(PickFreePort()) {
  log_path_ = data_dir_ + ".log";
}

KvdProcess::~KvdProcess() {
  if (pid_ > 0) {
    kill(pid_, SIGCONT);
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
  }
}

std::string KvdProcess::endpoint() const { return "127.0.0.1:" + std::to_string(port_); }
std::string KvdProcess::peer_endpoint() const { return "127.0.0.1:" + std::to_string(peer_port_); }

std::string KvdProcess::ReadLog() const { return Slurp(log_path_); }

bool KvdProcess::Start(int wait_ms) {
  std::vector<std::string> argv = {KvdBinary(), "--node-id=" + std::to_string(node_id_),
                                   "--data-dir=" + data_dir_, "--listen=" + endpoint(),
                                   "--peer-listen=" + peer_endpoint()};
  argv.insert(argv.end(), extra_flags_.begin(), extra_flags_.end());
  if (uid_ >= 0) {
    std::filesystem::create_directories(data_dir_);
    for (auto& e : std::filesystem::recursive_directory_iterator(data_dir_)) {
      (void)chown(e.path().c_str(), static_cast<uid_t>(uid_), static_cast<gid_t>(uid_));
    }
    (void)chown(data_dir_.c_str(), static_cast<uid_t>(uid_), static_cast<gid_t>(uid_));
  }
  pid_ = fork();
  if (pid_ == 0) {
    int fd = open(log_path_.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) {
      dup2(fd, 1);
      dup2(fd, 2);
      close(fd);
    }
    if (uid_ >= 0 &&
        (setgid(static_cast<gid_t>(uid_)) != 0 || setuid(static_cast<uid_t>(uid_)) != 0)) {
      _exit(126);
    }
    auto args = CArgs(argv);
    execv(args[0], args.data());
    _exit(127);
  }
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(wait_ms);
  while (std::chrono::steady_clock::now() < deadline) {
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return false;
    }
    if (CanConnect(port_)) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  if (!wait_for_leader_) return CanConnect(port_);
  // Serving means a leader exists: a linearizable read answers (found or not found).
  while (std::chrono::steady_clock::now() < deadline) {
    auto r = RunProgram({KvctlBinary(), "--endpoints=" + endpoint(), "--timeout=1s", "get", "~"},
                        "", 3000);
    if (r.exit_code == 0 || r.exit_code == 1) return true;
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return false;
    }
  }
  return false;
}

int KvdProcess::WaitExit(int wait_ms) {
  if (pid_ <= 0) return -1;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(wait_ms);
  while (std::chrono::steady_clock::now() < deadline) {
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return -1;
}

int KvdProcess::Stop(int wait_ms) {
  if (pid_ <= 0) return -1;
  kill(pid_, SIGCONT);
  kill(pid_, SIGTERM);
  int code = WaitExit(wait_ms);
  if (code == -1 && pid_ > 0) Kill9();
  return code;
}

void KvdProcess::Kill9() {
  if (pid_ <= 0) return;
  kill(pid_, SIGKILL);
  waitpid(pid_, nullptr, 0);
  pid_ = -1;
}

void KvdProcess::SignalStop() {
  if (pid_ > 0) kill(pid_, SIGSTOP);
}
void KvdProcess::SignalContinue() {
  if (pid_ > 0) kill(pid_, SIGCONT);
}

}  // namespace kv::testing
