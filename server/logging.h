// The daemon's log: one line per event on stderr, through spdlog, as text or as JSON, with the
// node and (for a group's events) the group. Events are rare by design (elections, splits,
// refusals, shutdown); nothing is logged per request at the default level, so a call costs a
// level check when it is filtered out.
//
//   text: 2026-12-01T21:40:00.123Z info node=1 group=5 split at index 912; group 6 takes ...
//   json: {"ts":"2026-12-01T21:40:00.123Z","level":"info","node":1,"group":5,"msg":"split ..."}
//
// Configure once at start (before other threads log); every function is thread-safe after that.
#pragma once

#include <cstdint>
#include <string_view>
#include <utility>

#include "absl/status/statusor.h"
#include "fmt/format.h"

namespace kv::logging {

enum class Level { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3 };
enum class Format { kText, kJson };

// "debug", "info", "warning" (or "warn"), "error".
absl::StatusOr<Level> ParseLevel(std::string_view name);
// "text" or "json".
absl::StatusOr<Format> ParseFormat(std::string_view name);

struct Options {
  Level level = Level::kInfo;
  Format format = Format::kText;
  uint64_t node_id = 0;  // 0: not yet known (not printed)
};
void Configure(const Options& options);
// The node id, once known (after the flags are read).
void SetNode(uint64_t node_id);

bool Enabled(Level level);

// The group an event belongs to.
struct Group {
  uint64_t id;
};

// One event, already formatted (`group` null for node-wide events).
void Write(Level level, const Group* group, std::string_view message);
// The line Write prints, without the timestamp and level (tests; JSON: the fields after "level").
std::string FormatFields(Format format, uint64_t node_id, const Group* group,
                         std::string_view message);

template <typename... Args>
void Log(Level level, fmt::format_string<Args...> f, Args&&... args) {
  if (Enabled(level)) Write(level, nullptr, fmt::format(f, std::forward<Args>(args)...));
}
template <typename... Args>
void Log(Level level, Group group, fmt::format_string<Args...> f, Args&&... args) {
  if (Enabled(level)) Write(level, &group, fmt::format(f, std::forward<Args>(args)...));
}

template <typename... Args>
void Debug(fmt::format_string<Args...> f, Args&&... args) {
  Log(Level::kDebug, f, std::forward<Args>(args)...);
}
template <typename... Args>
void Debug(Group g, fmt::format_string<Args...> f, Args&&... args) {
  Log(Level::kDebug, g, f, std::forward<Args>(args)...);
}
template <typename... Args>
void Info(fmt::format_string<Args...> f, Args&&... args) {
  Log(Level::kInfo, f, std::forward<Args>(args)...);
}
template <typename... Args>
void Info(Group g, fmt::format_string<Args...> f, Args&&... args) {
  Log(Level::kInfo, g, f, std::forward<Args>(args)...);
}
template <typename... Args>
void Warning(fmt::format_string<Args...> f, Args&&... args) {
  Log(Level::kWarning, f, std::forward<Args>(args)...);
}
template <typename... Args>
void Warning(Group g, fmt::format_string<Args...> f, Args&&... args) {
  Log(Level::kWarning, g, f, std::forward<Args>(args)...);
}
template <typename... Args>
void Error(fmt::format_string<Args...> f, Args&&... args) {
  Log(Level::kError, f, std::forward<Args>(args)...);
}
template <typename... Args>
void Error(Group g, fmt::format_string<Args...> f, Args&&... args) {
  Log(Level::kError, g, f, std::forward<Args>(args)...);
}

}  // namespace kv::logging
