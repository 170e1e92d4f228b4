//! The `broker` binary: parse flags and run a node (see [`broker::launch`]).

use clap::Parser;

/// glibc's allocator spent a quarter of the leader's CPU consolidating free lists
/// under the ~1 KiB allocations of message bodies and log entries; mimalloc does not.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    broker::launch::main(broker::config::CliArgs::parse())
}
