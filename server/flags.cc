#include "server/flags.h"

#include <CLI/CLI.hpp>

namespace kv::server {
namespace {

FlagsOutcome Exit(int code, std::string message) {
  FlagsOutcome out;
  out.action = FlagsOutcome::kExit;
  out.exit_code = code;
  out.message = std::move(message);
  return out;
}

}  // namespace

FlagsOutcome ParseFlags(int argc, const char* const* argv) {
  NodeConfig config;
  std::string peers;
  bool no_sync = false;
  CLI::App app{"kvd: a Raft-replicated key-value store daemon"};
  app.set_config("--config", "", "Read flags from this INI/TOML file (flag names as keys)");
  app.add_option("--node-id", config.node_id, "This node's id (>= 1), fixed for its data dir")
      ->required();
  app.add_option("--data-dir", config.data_dir, "Directory of this node's RocksDB data")
      ->required();
  app.add_option("--listen", config.listen, "Client gRPC address (kv and admin APIs)")
      ->capture_default_str();
  app.add_option("--peer-listen", config.peer_listen,
                 "Peer gRPC address (Raft, snapshots, forwarded writes); never the client port "
                 "(default: the --listen host, port + 300)");
  app.add_option("--advertise-client-address", config.advertise_client_address,
                 "Address clients reach this node at, as peers tell clients (default --listen)");
  app.add_option("--region", config.region,
                 "Region label of this node (letters, digits, '-', '_'; at most 64)");
  app.add_option("--zone", config.zone,
                 "Zone label of this node within its region (letters, digits, '-', '_')");
  app.add_option("--peers", peers,
                 "Every voter at bootstrap, by peer address: 1=HOST:PORT,2=HOST:PORT,... "
                 "(empty: single node)");
  app.add_option("--cluster-name", config.cluster_name,
                 "Cluster name; nodes of differently named clusters refuse each other")
      ->capture_default_str();
  app.add_flag("--join", config.join,
               "Start empty and wait to be added with 'kvctl member add' (do not bootstrap); "
               "--peers then lists the existing members' addresses");
  app.add_option("--tick-ms", config.tick_ms, "Raft tick length")->capture_default_str();
  app.add_option("--quiesce-after-ticks", config.quiesce_after_ticks,
                 "Ticks without work after which an idle Raft group stops ticking and "
                 "heartbeating (0: never)")
      ->capture_default_str()
      ->check(CLI::Range(0, 1000000));
  app.add_option("--election-ticks", config.election_ticks,
                 "Election timeout in ticks (randomized in [n, 2n))")
      ->capture_default_str();
  app.add_option("--control-listen", config.control_listen,
                 "Control sidecar gRPC address (health, breakers, limits, kill switch)");
  app.add_option("--metrics-listen", config.metrics_listen, "Prometheus /metrics HTTP address");
  app.add_option("--admin-token-file", config.admin_token_file,
                 "File holding the admin token that state-changing control calls must present");
  app.add_option("--tls-cert-file", config.tls.cert_file,
                 "PEM certificate of the client and control listeners (TLS on when set)");
  app.add_option("--tls-key-file", config.tls.key_file, "PEM private key of --tls-cert-file");
  app.add_option("--tls-ca-file", config.tls.ca_file,
                 "PEM CA that signs client certificates (a verified certificate names the caller)");
  app.add_flag("--client-cert-required", config.client_cert_required,
               "Refuse clients without a certificate signed by --tls-ca-file");
  app.add_option("--peer-tls-cert-file", config.peer_tls.cert_file,
                 "PEM certificate of this node for peer traffic; its SAN must name node-ID");
  app.add_option("--peer-tls-key-file", config.peer_tls.key_file,
                 "PEM private key of --peer-tls-cert-file");
  app.add_option("--peer-tls-ca-file", config.peer_tls.ca_file,
                 "PEM cluster CA: peers must present a certificate it signed, naming their id");
  app.add_option("--peer-token-file", config.peer_token_file,
                 "Without peer TLS: a cluster secret every peer must present (same on all nodes)");
  app.add_option("--client-tokens-file", config.client_tokens_file,
                 "Per-client bearer tokens, one `NAME TOKEN` per line: the caller's identity for "
                 "rate limits and audit");
  app.add_flag("--trust-client-identity-header", config.trust_identity_header,
               "Honour the self-declared kv-client-identity header (only behind a trusted proxy)");
  app.add_flag("--force-new-cluster", config.force_new_cluster,
               "Recovery after a permanent loss of quorum: keep this node's data and make it the "
               "only voter of every group; others then join it with --join");
  app.add_option("--log-compact-bytes", config.log_compact_bytes,
                 "Compact the Raft log also once this many bytes of applied entries sit behind it")
      ->capture_default_str();
  app.add_option(
         "--max-uncommitted-bytes", config.max_uncommitted_bytes,
         "A leader refuses writes (RESOURCE_EXHAUSTED) while the entries it has not yet "
         "committed hold this many bytes, so a leader cut off from its quorum stays bounded")
      ->capture_default_str();
  app.add_option("--split-size-bytes", config.split_size_bytes,
                 "Split a keyspace shard this node leads once its data pass this size (0: never)")
      ->capture_default_str();
  app.add_option("--split-load-qps", config.split_load_qps,
                 "Split a keyspace shard this node leads that takes more requests per second "
                 "than this for --split-load-seconds (0: never)")
      ->capture_default_str();
  app.add_option("--split-load-seconds", config.split_load_seconds,
                 "How long a shard must be over --split-load-qps")
      ->capture_default_str();
  app.add_option("--split-min-interval-seconds", config.split_min_interval_seconds,
                 "At most one automatic split per this many seconds on a node")
      ->capture_default_str();
  app.add_option("--merge-size-bytes", config.merge_size_bytes,
                 "Merge two adjacent shards of a range keyspace that this node leads when both "
                 "hold less than this, together less than half of --split-size-bytes, and both "
                 "stayed cold for --merge-after-seconds (0: never automatically)")
      ->capture_default_str();
  app.add_option("--merge-cold-qps", config.merge_cold_qps,
                 "A shard taking more requests per second than this here is not merged")
      ->capture_default_str();
  app.add_option("--merge-after-seconds", config.merge_after_seconds,
                 "Seconds both shards must have stayed cold and unchanged (no split, no merge) "
                 "before they merge automatically")
      ->capture_default_str();
  app.add_option("--dead-node-timeout", config.dead_node_timeout_seconds,
                 "Seconds a node may stay unheard from before its replicas are re-created on "
                 "other nodes (0: never)")
      ->capture_default_str();
  app.add_option("--leader-balance-gap", config.leader_balance_gap,
                 "Hand a leadership to a replica on a node leading this many fewer shards "
                 "(0: do not spread leaders)")
      ->capture_default_str()
      ->check(CLI::Range(0, 1000000))
      ->check([](const std::string& v) -> std::string {
        return v == "1" ? "a gap of 1 would hand leaderships back and forth: 0, or 2 and more" : "";
      });
  app.add_option("--client-session-ttl-seconds", config.client_session_ttl_seconds,
                 "A client silent this long loses its exactly-once records (a later retry of "
                 "its writes applies again)")
      ->capture_default_str();
  app.add_option("--max-snapshot-bytes", config.max_snapshot_bytes,
                 "Largest snapshot accepted from a peer")
      ->capture_default_str();
  app.add_option("--snapshot-idle-seconds", config.snapshot_idle_seconds,
                 "An incoming snapshot stream silent this long is dropped")
      ->capture_default_str();
  app.add_option("--degraded-fsync-ms", config.health.fsync_p99_ms,
                 "DEGRADED when fsync p99 exceeds this")
      ->capture_default_str();
  app.add_option("--degraded-apply-ms", config.health.apply_p99_ms,
                 "DEGRADED when apply p99 exceeds this")
      ->capture_default_str();
  app.add_option("--degraded-apply-lag", config.health.apply_lag,
                 "DEGRADED (and not ready) when this many committed entries are unapplied")
      ->capture_default_str();
  app.add_option("--degraded-heartbeat-ms", config.health.heartbeat_age_ms,
                 "DEGRADED when a follower has not heard from the leader for this long")
      ->capture_default_str();
  app.add_option("--degraded-disk-free-bytes", config.health.disk_free_bytes,
                 "DEGRADED when the data directory's file system has less free space")
      ->capture_default_str();
  app.add_option("--transfer-leadership-when-degraded",
                 config.health.transfer_leadership_when_degraded,
                 "A leader DEGRADED for 2 s hands leadership to the most caught-up reachable "
                 "voter (at most once per 30 s)")
      ->capture_default_str();
  app.add_option("--log-compact-threshold", config.log_compact_threshold,
                 "Compact the Raft log once this many applied entries sit behind it")
      ->capture_default_str();
  app.add_option("--log-retain", config.log_retain,
                 "Applied entries kept after compaction for followers that lag a little")
      ->capture_default_str();
  app.add_option("--delegate-snapshots", config.delegate_snapshots,
                 "A leader has a caught-up replica in the receiver's zone (or region) stream "
                 "the snapshot a replica there needs, when the leader is not there itself")
      ->capture_default_str();
  app.add_option("--max-key-bytes", config.limits.max_key_bytes, "Largest key accepted")
      ->capture_default_str();
  app.add_option("--max-value-bytes", config.limits.max_value_bytes, "Largest value accepted")
      ->capture_default_str();
  app.add_option("--log-level", config.log_level,
                 "Least severe events logged: debug, info, warning, error")
      ->capture_default_str();
  app.add_option("--log-format", config.log_format,
                 "Log lines as `text` or as one JSON object per line (`json`)")
      ->capture_default_str();
  app.add_option("--restore-from", config.restore_from,
                 "At the first start of an empty data dir, seed it from this backup (`kvctl "
                 "snapshot save`); every node of the new cluster restores the same file");
  app.add_flag("--unsafe-no-fsync", no_sync,
               "Do not fsync before acknowledging writes (benchmarks only: loses data on crash)");
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp&) {
    return Exit(0, app.help());
  } catch (const CLI::CallForAllHelp&) {
    return Exit(0, app.help("", CLI::AppFormatMode::All));
  } catch (const CLI::ParseError& e) {
    return Exit(2, e.what());
  } catch (const std::exception& e) {  // a config file CLI11 could not read at all
    return Exit(2, std::string("cannot read the configuration: ") + e.what());
  }
  config.sync = !no_sync;
  auto parsed = ParsePeers(peers);
  if (!parsed.ok()) return Exit(2, std::string(parsed.status().message()));
  config.peers = *parsed;
  FlagsOutcome run;
  run.config = std::move(config);
  return run;
}

}  // namespace kv::server
