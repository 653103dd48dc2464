#include "client/kvctl/completion.h"

#include <functional>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace kv::kvctl {
namespace {

std::vector<std::string> LongFlags(const CLI::App& app) {
  std::vector<std::string> flags;
  for (const CLI::Option* o : app.get_options()) {
    for (const auto& name : o->get_lnames()) flags.push_back("--" + name);
  }
  return flags;
}

}  // namespace

std::string BashCompletion(const CLI::App& root) {
  std::vector<std::string> globals;  // every command's own --help comes with it
  for (const auto& f : LongFlags(root)) {
    if (f != "--help") globals.push_back(f);
  }
  std::string paths;  // the case arms: every command path and the words that may follow it
  std::vector<std::string> known;  // every command path, to recognise one while walking words
  std::function<void(const CLI::App&, const std::string&)> walk = [&](const CLI::App& app,
                                                                      const std::string& path) {
    std::vector<std::string> words;
    for (const CLI::App* sub : app.get_subcommands([](const CLI::App*) { return true; })) {
      words.push_back(sub->get_name());
    }
    for (const auto& f : LongFlags(app)) words.push_back(f);
    if (&app != &root) words.insert(words.end(), globals.begin(), globals.end());
    absl::StrAppend(&paths, "    \"", path, "\") words=\"", absl::StrJoin(words, " "), "\" ;;\n");
    for (const CLI::App* sub : app.get_subcommands([](const CLI::App*) { return true; })) {
      std::string next = absl::StrCat(path, " ", sub->get_name());
      known.push_back(absl::StrCat("\"", next, "\""));
      walk(*sub, next);
    }
  };
  walk(root, "");
  return absl::StrCat(
      "# bash completion for kvctl: source <(kvctl completion bash)\n"
      "_kvctl() {\n"
      "  local cur=\"${COMP_WORDS[COMP_CWORD]}\" path=\"\" w i words\n"
      "  for ((i = 1; i < COMP_CWORD; i++)); do\n"
      "    w=\"${COMP_WORDS[i]}\"\n"
      "    case \"$path $w\" in\n"
      "      ",
      absl::StrJoin(known, "|"),
      ") path=\"$path $w\" ;;\n"
      "    esac\n"
      "  done\n"
      "  case \"$path\" in\n",
      paths,
      "  esac\n"
      "  COMPREPLY=($(compgen -W \"$words\" -- \"$cur\"))\n"
      "}\n"
      "complete -F _kvctl kvctl\n");
}

}  // namespace kv::kvctl
