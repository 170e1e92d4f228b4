//! The `broker` binary: parse flags and run a node (see [`broker::launch`]).

use clap::Parser;

/// glibc's allocator spent a quarter of the leader's CPU consolidating free lists
/// under the ~1 KiB allocations of message bodies and log entries; mimalloc does not.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    // raft-log's writer hands each flush a fresh buffer as large as the largest batch
    // it has seen; with transparent huge pages the first touch of every such buffer
    // made the kernel zero a whole 2 MiB page (a tenth of the leader's CPU at 512
    // sends in flight, `perf record`). 4 KiB pages zero only what is written. Best
    // effort: a kernel without the flag just keeps THP.
    let _ = rustix::thread::disable_transparent_huge_pages(true);
    broker::launch::main(broker::config::CliArgs::parse())
}
