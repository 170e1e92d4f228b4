//! Shared by the HTTP router tests: [`http`] holds a running single-node broker;
//! here, tracing through libtest's capture and a fast temporary directory.

#![allow(dead_code)] // a shared toolbox: not every helper has a caller at every moment

pub mod http;

use std::path::Path;

/// Installs a tracing subscriber writing through libtest's capture (once per binary),
/// so the narrated phases (`info!("--- …")`) show up for failing tests.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // A second call finds the subscriber installed; that is fine.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// A temporary directory on tmpfs when there is one: tests that do not depend on what
/// `fsync` does (it is a no-op there) reopen stores and create many small files, and
/// each of those syncs costs milliseconds on a real disk.
pub fn fast_tempdir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(dir) = tempfile::Builder::new()
            .prefix("broker-test-")
            .tempdir_in(shm)
        {
            return dir;
        }
    }
    tempfile::tempdir().expect("creating a temporary directory")
}
