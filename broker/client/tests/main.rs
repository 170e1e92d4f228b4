//! The client library's tests, one binary: a file per area. Run one with
//! `cargo test -p broker-client --test integration client_transactions::`.

mod client_fake_nodes;
mod client_simple_consumer;
mod client_single_node;
mod client_transactions;
