//! The broker's integration tests, one binary: a file per area (`http_*` through the
//! router of a real in-process node, `raft_conformance`, `example_config`,
//! `module_layers`). Run one area with `cargo test -p broker --test integration http_send::`.

mod common;

mod example_config;
mod group_state_lock;
mod http_add_node_async;
mod http_api_endpoints;
mod http_auth;
mod http_cluster_health;
mod http_connections;
mod http_disk_guard;
mod http_drain;
mod http_fallbacks;
mod http_finalize_upgrade;
mod http_idempotency_eviction;
mod http_internal;
mod http_json_bodies;
mod http_long_poll;
mod http_metrics;
mod http_no_leader;
mod http_offsets;
mod http_openapi;
mod http_pull;
mod http_queries;
mod http_query_utf8;
mod http_queues;
mod http_receive;
mod http_request_caps;
mod http_request_id;
mod http_retry_auto_create;
mod http_send;
mod http_stream;
mod http_timers;
mod http_topic_lifecycle;
mod http_topics;
mod http_transactions;
mod module_layers;
mod raft_conformance;
