//! lazyfs: a FUSE file system that loses unsynced data on demand, for the
//! Jepsen-style suite's power-loss nemesis (after Jepsen's LazyFS).
//!
//! `lazyfs --backing DIR --mount MNT --control SOCK` serves DIR at MNT. Data written
//! to a regular file is held in memory, per file, as dirty byte ranges over the
//! backing file ([`overlay::Overlay`]), and reaches the backing file only when that
//! file is fsync'd or fdatasync'd (FUSE `fsync`; `msync` of a shared mapping
//! arrives as the kernel's writeback of the dirty pages followed by `fsync`).
//! Reads see the dirty data over the backing file, and a file's size counts its
//! dirty data: an append past the backing file's end makes the file longer at once
//! for readers, and only after an fsync in the backing file. Files opened `O_SYNC`
//! or `O_DSYNC` write through.
//!
//! # The file system this models
//!
//! Metadata is applied to the backing directory at once and survives a power loss:
//! creating a file or directory, a size change by `truncate`/`ftruncate` (extending
//! gives zeros if the data written into the extension is lost), `fallocate`,
//! rename, unlink, rmdir, permissions and times. So this is a file system whose
//! metadata journal commits immediately but whose file data is lost unless synced,
//! like ext4 with `data=writeback`, except that data appended by `write` does not
//! move the file's size on disk before it is synced (the file comes back at its
//! last synced size, not with a zero-filled tail: `torn-tail` in the suite covers
//! that case). `fsync` of a directory is therefore a no-op.
//!
//! # Control
//!
//! One line over the unix socket given with `--control` (`lazyfs ctl SOCK COMMAND`
//! sends one and prints the answer; the answer starts with `ok` or `error`):
//!
//! * `power-loss` — drop every unsynced byte, answer how many, then detach the
//!   mount and exit at once. Everything the kernel still caches for the mount
//!   (dirty pages of mappings included) dies with the connection. SIGUSR1 does the
//!   same.
//! * `stop` — a clean stop: apply every unsynced byte, unmount (the kernel writes
//!   back what it caches, which is applied too), exit. It fails while the mount is
//!   busy. SIGTERM and SIGINT do the same, and detach a busy mount instead of
//!   failing. A clean stop of a machine syncs its disks, and a cluster that is
//!   stopped and started again must not lose data: only `power-loss` loses any.
//! * `sync` — apply every unsynced byte, stay mounted.
//! * `stats` — unsynced bytes and files, bytes synced so far, and so on.
//!
//! The processes using the mount should be gone before a power loss (the suite
//! kills the node with SIGKILL first): a process that kept running would see its
//! files vanish, which no power loss does.
//!
//! # Memory
//!
//! See [`fs`]: every unsynced byte (bounded by `--max-dirty-bytes`), and a few
//! words per inode, open file and open directory.

pub mod fs;
pub mod overlay;

use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

/// Sends one control command to a running lazyfs and returns its answer line.
///
/// # Errors
/// The socket could not be reached, or the answer not read within `timeout`.
pub fn control(socket: &Path, command: &str, timeout: Duration) -> std::io::Result<String> {
    let mut stream = std::os::unix::net::UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    stream.write_all(command.trim().as_bytes())?;
    stream.write_all(b"\n")?;
    stream.shutdown(std::net::Shutdown::Write)?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    Ok(answer.trim().to_string())
}
