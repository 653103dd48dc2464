// A minimal application on kv::Client: writes a key, reads it back, swaps it atomically.
// Usage: hello_kv HOST:PORT[,HOST:PORT...]
#include <cstdio>
#include <string>

#include "absl/strings/str_split.h"
#include "kv/client.h"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s HOST:PORT[,HOST:PORT...]\n", argv[0]);
    return 2;
  }
  kv::ClientOptions options;
  options.endpoints = absl::StrSplit(argv[1], ',');
  options.timeout = absl::Seconds(5);
  auto client = kv::Client::Connect(options);
  if (!client.ok()) {
    std::fprintf(stderr, "connect: %s\n", client.status().ToString().c_str());
    return 1;
  }
  auto put = (*client)->Put("greeting", "hello");
  if (!put.ok()) {
    std::fprintf(stderr, "put: %s\n", put.status().ToString().c_str());
    return 1;
  }
  auto got = (*client)->Get("greeting");
  if (!got.ok() || got->value != "hello") {
    std::fprintf(stderr, "get: unexpected result\n");
    return 1;
  }
  auto swapped = (*client)->CompareAndSwap("greeting", got->version, "hello, world");
  if (!swapped.ok() || !swapped->succeeded) {
    std::fprintf(stderr, "cas: did not swap\n");
    return 1;
  }
  // A second swap on the old version must fail: someone (we) changed the key meanwhile.
  auto stale = (*client)->CompareAndSwap("greeting", got->version, "lost update");
  if (!stale.ok() || stale->succeeded) {
    std::fprintf(stderr, "cas: stale version was accepted\n");
    return 1;
  }
  std::printf("greeting = %s (version %lu)\n", stale->current->value.c_str(),
              static_cast<unsigned long>(stale->current->version));
  return 0;
}
