#include "server/node.h"

#include <grpcpp/server.h>
#include <grpcpp/server_builder.h>

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "server/kv_service.h"
#include "server/kv_state_machine.h"
#include "server/local_replica.h"
#include "server/node_identity.h"
#include "storage/engine.h"

namespace kv::server {
namespace {

// Until sharding arrives there is one data group; its shard id prefixes every data key.
constexpr uint64_t kDataGroupId = 1;
constexpr uint64_t kDataShardId = 1;

}  // namespace

Node::Node(NodeConfig config) : config_(std::move(config)) {}

Node::~Node() { Shutdown(); }

absl::Status Node::Start() {
  if (auto s = ValidateConfig(config_); !s.ok()) return s;
  std::error_code ec;
  std::filesystem::create_directories(config_.data_dir, ec);
  if (ec) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot create data directory ", config_.data_dir, ": ", ec.message()));
  }
  storage::EngineOptions options;
  options.path = config_.data_dir;
  auto engine = storage::Engine::Open(options);
  if (!engine.ok()) return engine.status();
  engine_ = *std::move(engine);
  if (auto s = CheckOrStampIdentity(engine_.get(), config_.node_id, config_.cluster_id); !s.ok()) {
    return s;
  }
  state_machine_ = std::make_unique<KvStateMachine>(engine_.get(), kDataGroupId, kDataShardId);
  if (auto s = state_machine_->Load(); !s.ok()) return s;
  replica_ = std::make_unique<LocalReplica>(state_machine_.get(), config_.node_id, config_.sync);
  kv_service_ = std::make_unique<KvService>(replica_.get(), config_.limits);

  grpc::ServerBuilder builder;
  builder.AddListeningPort(config_.listen, grpc::InsecureServerCredentials(), &listen_port_);
  builder.RegisterService(kv_service_.get());
  // Room for a maximal value plus protocol overhead.
  builder.SetMaxReceiveMessageSize(static_cast<int>(config_.limits.max_value_bytes +
                                                    config_.limits.max_key_bytes + (64 << 10)));
  server_ = builder.BuildAndStart();
  if (!server_ || listen_port_ == 0) {
    return absl::UnavailableError(absl::StrCat("cannot listen on ", config_.listen,
                                               " (address in use or not local?)"));
  }
  return absl::OkStatus();
}

void Node::Shutdown() {
  if (server_) {
    server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
    server_->Wait();
    server_.reset();
  }
  kv_service_.reset();
  replica_.reset();  // drains the write queue
  state_machine_.reset();
  engine_.reset();
}

}  // namespace kv::server
