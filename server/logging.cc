#include "server/logging.h"

#include <atomic>
#include <memory>
#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "spdlog/logger.h"
#include "spdlog/sinks/stdout_sinks.h"

namespace kv::logging {
namespace {

struct State {
  std::atomic<int> level{static_cast<int>(Level::kInfo)};
  std::atomic<Format> format{Format::kText};
  std::atomic<uint64_t> node_id{0};
  std::shared_ptr<spdlog::logger> logger;
};

// The text and JSON patterns put the timestamp (UTC, milliseconds) and the level around the
// fields FormatFields makes.
constexpr char kTextPattern[] = "%Y-%m-%dT%H:%M:%S.%eZ %l %v";
constexpr char kJsonPattern[] = R"({"ts":"%Y-%m-%dT%H:%M:%S.%eZ","level":"%l",%v})";

std::shared_ptr<spdlog::logger> NewLogger(Format format) {
  auto logger =
      std::make_shared<spdlog::logger>("kvd", std::make_shared<spdlog::sinks::stderr_sink_mt>());
  logger->set_pattern(format == Format::kJson ? kJsonPattern : kTextPattern,
                      spdlog::pattern_time_type::utc);
  logger->set_level(spdlog::level::trace);  // filtered by Enabled() before formatting
  logger->flush_on(spdlog::level::trace);
  return logger;
}

State& state() {
  static State* s = [] {
    auto* created = new State;  // never destroyed: threads may log during static destruction
    created->logger = NewLogger(Format::kText);
    return created;
  }();
  return *s;
}

spdlog::level::level_enum SpdlogLevel(Level level) {
  switch (level) {
    case Level::kDebug:
      return spdlog::level::debug;
    case Level::kInfo:
      return spdlog::level::info;
    case Level::kWarning:
      return spdlog::level::warn;
    case Level::kError:
      return spdlog::level::err;
  }
  return spdlog::level::err;
}

}  // namespace

absl::StatusOr<Level> ParseLevel(std::string_view name) {
  std::string n = absl::AsciiStrToLower(absl::string_view(name.data(), name.size()));
  if (n == "debug") return Level::kDebug;
  if (n == "info") return Level::kInfo;
  if (n == "warning" || n == "warn") return Level::kWarning;
  if (n == "error") return Level::kError;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown log level '", n, "' (debug, info, warning, error)"));
}

absl::StatusOr<Format> ParseFormat(std::string_view name) {
  if (name == "text") return Format::kText;
  if (name == "json") return Format::kJson;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown log format '", std::string(name), "' (text, json)"));
}

void Configure(const Options& options) {
  State& s = state();
  s.level.store(static_cast<int>(options.level));
  s.node_id.store(options.node_id);
  if (options.format != s.format.load()) {
    s.format.store(options.format);
    s.logger = NewLogger(options.format);
  }
}

void SetNode(uint64_t node_id) { state().node_id.store(node_id); }

bool Enabled(Level level) {
  return static_cast<int>(level) >= state().level.load(std::memory_order_relaxed);
}

std::string FormatFields(Format format, uint64_t node_id, const Group* group,
                         std::string_view message) {
  std::string out;
  if (format == Format::kJson) {
    if (node_id != 0) absl::StrAppend(&out, "\"node\":", node_id, ",");
    if (group) absl::StrAppend(&out, "\"group\":", group->id, ",");
    // Messages can quote keys or peers' words: any byte sequence must still make valid JSON.
    out += "\"msg\":";
    out += nlohmann::json(std::string(message))
               .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    return out;
  }
  if (node_id != 0) absl::StrAppend(&out, "node=", node_id, " ");
  if (group) absl::StrAppend(&out, "group=", group->id, " ");
  // One event, one line.
  for (char c : message) out += (c == '\n' || c == '\r') ? ' ' : c;
  return out;
}

void Write(Level level, const Group* group, std::string_view message) {
  State& s = state();
  std::string fields = FormatFields(s.format.load(), s.node_id.load(), group, message);
  s.logger->log(SpdlogLevel(level), "{}", fields);
}

}  // namespace kv::logging
