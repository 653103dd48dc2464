#include "server/logging.h"

#include <string>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace kv::logging {
namespace {

TEST(LoggingTest, ParsesLevelsAndFormatsAndRefusesOthers) {
  EXPECT_EQ(*ParseLevel("debug"), Level::kDebug);
  EXPECT_EQ(*ParseLevel("INFO"), Level::kInfo);
  EXPECT_EQ(*ParseLevel("warn"), Level::kWarning);
  EXPECT_EQ(*ParseLevel("warning"), Level::kWarning);
  EXPECT_EQ(*ParseLevel("error"), Level::kError);
  auto bad = ParseLevel("verbose");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("debug, info, warning, error"), absl::string_view::npos);
  EXPECT_EQ(*ParseFormat("json"), Format::kJson);
  EXPECT_EQ(*ParseFormat("text"), Format::kText);
  EXPECT_FALSE(ParseFormat("xml").ok());
}

TEST(LoggingTest, TextFieldsNameNodeAndGroupOnOneLine) {
  Group g{7};
  EXPECT_EQ(FormatFields(Format::kText, 3, &g, "split\nat 5"), "node=3 group=7 split at 5");
  EXPECT_EQ(FormatFields(Format::kText, 3, nullptr, "stopped"), "node=3 stopped");
  EXPECT_EQ(FormatFields(Format::kText, 0, nullptr, "early"), "early");
}

TEST(LoggingTest, JsonFieldsAreValidJsonForAnyBytes) {
  Group g{9};
  std::string nasty = "quote\" backslash\\ newline\n nul";
  nasty.push_back('\0');
  nasty += "\xff\xfe invalid utf-8";
  std::string line = "{\"level\":\"info\"," + FormatFields(Format::kJson, 2, &g, nasty) + "}";
  auto parsed = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
  ASSERT_FALSE(parsed.is_discarded()) << line;
  EXPECT_EQ(parsed["node"], 2);
  EXPECT_EQ(parsed["group"], 9);
  std::string msg = parsed["msg"];
  EXPECT_EQ(msg.rfind("quote\" backslash\\ newline\n nul", 0), 0u) << msg;
  EXPECT_NE(msg.find("invalid utf-8"), std::string::npos);
  auto no_group = nlohmann::json::parse("{" + FormatFields(Format::kJson, 2, nullptr, "x") + "}");
  EXPECT_FALSE(no_group.contains("group"));
}

TEST(LoggingTest, LevelFiltersBelowItAndIsRestored) {
  Configure({.level = Level::kWarning, .format = Format::kText, .node_id = 1});
  EXPECT_FALSE(Enabled(Level::kInfo));
  EXPECT_TRUE(Enabled(Level::kWarning));
  EXPECT_TRUE(Enabled(Level::kError));
  Configure({.level = Level::kDebug, .format = Format::kText, .node_id = 1});
  EXPECT_TRUE(Enabled(Level::kDebug));
  Configure({});
  EXPECT_FALSE(Enabled(Level::kDebug));
  EXPECT_TRUE(Enabled(Level::kInfo));
}

}  // namespace
}  // namespace kv::logging
