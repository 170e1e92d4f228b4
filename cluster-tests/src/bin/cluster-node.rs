//! The broker node, built inside this package so its tests can find it through
//! `CARGO_BIN_EXE_cluster-node` (the same code as the `broker` binary).

use clap::Parser;

/// The same allocator as the `broker` binary, so tests run the same node.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    broker::launch::main(broker::config::CliArgs::parse())
}
