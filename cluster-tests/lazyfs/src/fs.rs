//! The FUSE side: a pass-through of a backing directory whose file data is held
//! in memory ([`Overlay`]) until the file is fsync'd.
//!
//! Inodes: this file system numbers its own inodes (a counter, never reused) and
//! maps each to a path under the backing directory and the backing file's inode
//! number. Reusing the backing inode numbers would be wrong: a backing file system
//! hands a deleted file's number to the next file created, while the kernel may
//! still cache pages of the old one under that number. An inode is forgotten when
//! the kernel drops its last reference and it holds no open handle and no unsynced
//! data; the unsynced data of a file lives under its inode, so a file closed and
//! forgotten before its fsync keeps it.
//!
//! Everything is behind one mutex: the broker's I/O rate through it is modest, and
//! a single lock keeps the order of writes, fsyncs and size changes obvious.
//!
//! Memory held: per known inode a path and a few integers; per open file a backing
//! file descriptor; per open directory a listing; and every unsynced byte (bounded
//! by `max_dirty_bytes`: past it the file with the most unsynced bytes is written
//! to the backing file, as a kernel writes back dirty pages under memory
//! pressure — such data then survives a power loss, which a real disk allows too).

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{File, Metadata, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
    OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};
use rustix::fs::OFlags;

use crate::overlay::Overlay;

/// Tuning of a [`LazyFs`].
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// Unsynced bytes held in memory over all files before the largest dirty file is
    /// written back (see the module documentation).
    pub max_dirty_bytes: u64,
    /// How long the kernel may cache attributes and names. Nothing but this mount
    /// changes the backing directory, so this only bounds staleness after outside
    /// meddling.
    pub ttl: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            max_dirty_bytes: 1 << 30,
            ttl: Duration::from_secs(1),
        }
    }
}

/// What happened to unsynced data in one sweep (power loss, sync).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sweep {
    pub bytes: u64,
    pub files: u64,
}

/// Counters for `stats`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub dirty_bytes: u64,
    pub dirty_files: u64,
    /// Bytes written to backing files by fsync (or a sync/stop command).
    pub synced_bytes: u64,
    /// Files written back because `max_dirty_bytes` was passed.
    pub pressure_writebacks: u64,
    pub inodes: u64,
    pub open_files: u64,
    /// Whether a power loss happened (every operation then fails).
    pub dead: bool,
}

struct Node {
    /// Path relative to the backing root ("" for the root).
    rel: PathBuf,
    backing_ino: u64,
    /// References the kernel holds (lookups minus forgets).
    lookups: u64,
    /// Open handles.
    open: u64,
    /// Unlinked while known: its unsynced data goes with the last handle.
    unlinked: bool,
}

struct Handle {
    ino: u64,
    file: Arc<File>,
    /// Opened O_SYNC or O_DSYNC: every write is applied at once.
    sync_writes: bool,
}

struct Dirty {
    /// A descriptor of the backing file, kept so the data can be applied even after
    /// every handle was closed or the file was renamed.
    file: Arc<File>,
    overlay: Overlay,
}

struct Listing {
    entries: Vec<(u64, FileType, std::ffi::OsString)>,
}

struct State {
    dead: bool,
    nodes: HashMap<u64, Node>,
    /// Backing inode number → our inode, for linked files only.
    by_backing: HashMap<u64, u64>,
    next_ino: u64,
    handles: HashMap<u64, Handle>,
    listings: HashMap<u64, Listing>,
    next_fh: u64,
    dirty: HashMap<u64, Dirty>,
    dirty_total: u64,
    synced_bytes: u64,
    pressure_writebacks: u64,
}

/// Shared between the FUSE threads and the control channel.
pub struct Shared {
    root: PathBuf,
    options: Options,
    state: Mutex<State>,
}

/// The file system handed to fuser.
pub struct LazyFs {
    shared: Arc<Shared>,
}

type Result<T> = std::result::Result<T, Errno>;

fn errno(e: io::Error) -> Errno {
    Errno::from(e)
}

fn rustix_errno(e: rustix::io::Errno) -> Errno {
    Errno::from_i32(e.raw_os_error())
}

fn time(secs: i64, nanos: i64) -> SystemTime {
    let nanos = nanos.clamp(0, 999_999_999) as u32;
    if secs >= 0 {
        UNIX_EPOCH + Duration::new(secs as u64, nanos)
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs()) + Duration::from_nanos(nanos.into())
    }
}

fn kind_of(meta: &Metadata) -> FileType {
    FileType::from_std(meta.file_type()).unwrap_or(FileType::RegularFile)
}

fn attr(ino: u64, meta: &Metadata, size: u64) -> FileAttr {
    FileAttr {
        ino: INodeNo(ino),
        size,
        blocks: meta.blocks(),
        atime: time(meta.atime(), meta.atime_nsec()),
        mtime: time(meta.mtime(), meta.mtime_nsec()),
        ctime: time(meta.ctime(), meta.ctime_nsec()),
        crtime: UNIX_EPOCH,
        kind: kind_of(meta),
        perm: (meta.mode() & 0o7777) as u16,
        nlink: meta.nlink() as u32,
        uid: meta.uid(),
        gid: meta.gid(),
        rdev: meta.rdev() as u32,
        blksize: meta.blksize() as u32,
        flags: 0,
    }
}

/// Reads up to `size` bytes at `offset`, fewer only at the end of the file.
fn read_plain(file: &File, offset: u64, size: usize) -> io::Result<Vec<u8>> {
    let mut buffer = vec![0u8; size];
    let mut filled = 0;
    while filled < size {
        let n = file.read_at(&mut buffer[filled..], offset + filled as u64)?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    buffer.truncate(filled);
    Ok(buffer)
}

impl State {
    /// Our inode for the backing file `backing_ino` at `rel`, one more kernel
    /// reference taken.
    fn intern(&mut self, rel: PathBuf, backing_ino: u64) -> u64 {
        if let Some(ino) = self.by_backing.get(&backing_ino).copied() {
            if let Some(node) = self.nodes.get_mut(&ino) {
                node.rel = rel;
                node.lookups += 1;
                return ino;
            }
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        self.nodes.insert(
            ino,
            Node {
                rel,
                backing_ino,
                lookups: 1,
                open: 0,
                unlinked: false,
            },
        );
        self.by_backing.insert(backing_ino, ino);
        ino
    }

    fn node(&self, ino: u64) -> Result<&Node> {
        self.nodes.get(&ino).ok_or(Errno::ENOENT)
    }

    fn visible_size(&self, ino: u64, backing_len: u64) -> u64 {
        self.dirty
            .get(&ino)
            .map_or(backing_len, |d| d.overlay.size(backing_len))
    }

    /// Drops the node when nothing refers to it any more.
    fn maybe_evict(&mut self, ino: u64) {
        if ino == INodeNo::ROOT.0 || self.dirty.contains_key(&ino) {
            return;
        }
        let Some(node) = self.nodes.get(&ino) else {
            return;
        };
        if node.lookups == 0 && node.open == 0 {
            let backing_ino = node.backing_ino;
            self.nodes.remove(&ino);
            if self.by_backing.get(&backing_ino) == Some(&ino) {
                self.by_backing.remove(&backing_ino);
            }
        }
    }

    /// A backing file's last name is gone: a new file may get its backing inode
    /// number, so it no longer maps to our inode; its unsynced data goes now, or
    /// with its last open handle.
    fn unlinked(&mut self, backing_ino: u64) {
        let Some(ino) = self.by_backing.remove(&backing_ino) else {
            return;
        };
        let open = match self.nodes.get_mut(&ino) {
            Some(node) => {
                node.unlinked = true;
                node.open
            }
            None => 0,
        };
        if open == 0 {
            self.forget_dirty(ino);
            self.maybe_evict(ino);
        }
    }

    fn forget_dirty(&mut self, ino: u64) -> u64 {
        let dropped = self
            .dirty
            .remove(&ino)
            .map_or(0, |mut d| d.overlay.drop_all());
        self.dirty_total -= dropped;
        dropped
    }

    /// Applies the unsynced data of `ino` to its backing file.
    fn apply(&mut self, ino: u64) -> io::Result<u64> {
        let Some(dirty) = self.dirty.get_mut(&ino) else {
            return Ok(0);
        };
        let before = dirty.overlay.dirty_bytes();
        let result = dirty.overlay.apply(&*dirty.file);
        let after = dirty.overlay.dirty_bytes();
        self.dirty_total -= before - after;
        self.synced_bytes += before - after;
        if after == 0 {
            self.dirty.remove(&ino);
            self.maybe_evict(ino);
        }
        result
    }

    /// Some descriptor of the backing file of `ino`: the handle's, another open
    /// one, the unsynced data's, or a new one opened by path.
    fn file_for(&self, root: &Path, ino: u64, fh: Option<u64>) -> Result<Arc<File>> {
        if let Some(handle) = fh.and_then(|fh| self.handles.get(&fh)) {
            if handle.ino == ino {
                return Ok(handle.file.clone());
            }
        }
        if let Some(dirty) = self.dirty.get(&ino) {
            return Ok(dirty.file.clone());
        }
        if let Some(handle) = self.handles.values().find(|h| h.ino == ino) {
            return Ok(handle.file.clone());
        }
        let node = self.node(ino)?;
        let path = root.join(&node.rel);
        let file = open_backing(&path, true).map_err(errno)?;
        let meta = file.metadata().map_err(errno)?;
        if meta.ino() != node.backing_ino {
            return Err(Errno::ENOENT);
        }
        Ok(Arc::new(file))
    }

    /// Metadata of `ino`'s backing file, from an open descriptor where there is one
    /// (right even for an unlinked file), else by path.
    fn metadata(&self, root: &Path, ino: u64, fh: Option<u64>) -> Result<Metadata> {
        let node = self.node(ino)?;
        if let Some(handle) = fh.and_then(|fh| self.handles.get(&fh)) {
            if handle.ino == ino {
                return handle.file.metadata().map_err(errno);
            }
        }
        if let Some(dirty) = self.dirty.get(&ino) {
            return dirty.file.metadata().map_err(errno);
        }
        let meta = std::fs::symlink_metadata(root.join(&node.rel)).map_err(errno)?;
        if meta.ino() != node.backing_ino {
            // The name now belongs to another file.
            return Err(Errno::ENOENT);
        }
        Ok(meta)
    }

    fn attr_of(&self, root: &Path, ino: u64, fh: Option<u64>) -> Result<FileAttr> {
        let meta = self.metadata(root, ino, fh)?;
        let size = self.visible_size(ino, meta.len());
        Ok(attr(ino, &meta, size))
    }
}

/// Opens a backing file for reading and, where allowed, writing: data written
/// through any handle may need applying through it. Directories open read-only.
fn open_backing(path: &Path, write: bool) -> io::Result<File> {
    if write {
        match OpenOptions::new().read(true).write(true).open(path) {
            Ok(file) => return Ok(file),
            Err(e)
                if [
                    rustix::io::Errno::ACCESS,
                    rustix::io::Errno::ROFS,
                    rustix::io::Errno::ISDIR,
                ]
                .iter()
                .any(|errno| e.raw_os_error() == Some(errno.raw_os_error())) => {}
            Err(e) => return Err(e),
        }
    }
    OpenOptions::new().read(true).open(path)
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Power loss: every unsynced byte is dropped and every later operation fails.
    /// Also says, per file, what was dropped ("path: N bytes in [a, b) …").
    pub fn power_loss(&self) -> (Sweep, Vec<String>) {
        let mut state = self.state();
        state.dead = true;
        let mut sweep = Sweep::default();
        let mut files = Vec::new();
        let dirty: Vec<(u64, Dirty)> = state.dirty.drain().collect();
        for (ino, mut dirty) in dirty {
            let path = state
                .nodes
                .get(&ino)
                .map_or_else(|| format!("inode {ino}"), |n| n.rel.display().to_string());
            let ranges: Vec<String> = dirty
                .overlay
                .ranges()
                .take(8)
                .map(|(start, end)| format!("[{start}, {end})"))
                .collect();
            let more = dirty.overlay.extent_count().saturating_sub(ranges.len());
            let bytes = dirty.overlay.drop_all();
            files.push(format!(
                "{path}: {bytes} bytes in {}{}",
                ranges.join(" "),
                if more > 0 {
                    format!(" and {more} more ranges")
                } else {
                    String::new()
                }
            ));
            sweep.bytes += bytes;
            sweep.files += 1;
        }
        files.sort();
        state.dirty_total = 0;
        (sweep, files)
    }

    /// Applies every file's unsynced data (a `sync`, or a clean stop).
    ///
    /// # Errors
    /// A write to a backing file failed (the data not written stays dirty).
    pub fn sync_all(&self) -> io::Result<Sweep> {
        let mut state = self.state();
        if state.dead {
            return Ok(Sweep::default());
        }
        let inos: Vec<u64> = state.dirty.keys().copied().collect();
        let mut sweep = Sweep::default();
        for ino in inos {
            sweep.bytes += state.apply(ino)?;
            sweep.files += 1;
        }
        Ok(sweep)
    }

    pub fn is_dead(&self) -> bool {
        self.state().dead
    }

    pub fn stats(&self) -> Stats {
        let state = self.state();
        Stats {
            dirty_bytes: state.dirty_total,
            dirty_files: state.dirty.len() as u64,
            synced_bytes: state.synced_bytes,
            pressure_writebacks: state.pressure_writebacks,
            inodes: state.nodes.len() as u64,
            open_files: state.handles.len() as u64,
            dead: state.dead,
        }
    }
}

impl LazyFs {
    /// A file system over the backing directory `root`.
    ///
    /// # Errors
    /// `root` is not a readable directory.
    pub fn new(root: &Path, options: Options) -> io::Result<Self> {
        let root = root.canonicalize()?;
        let meta = std::fs::metadata(&root)?;
        if !meta.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not a directory", root.display()),
            ));
        }
        let mut nodes = HashMap::new();
        nodes.insert(
            INodeNo::ROOT.0,
            Node {
                rel: PathBuf::new(),
                backing_ino: meta.ino(),
                lookups: 1,
                open: 0,
                unlinked: false,
            },
        );
        let state = State {
            dead: false,
            nodes,
            by_backing: HashMap::from([(meta.ino(), INodeNo::ROOT.0)]),
            next_ino: INodeNo::ROOT.0 + 1,
            handles: HashMap::new(),
            listings: HashMap::new(),
            next_fh: 1,
            dirty: HashMap::new(),
            dirty_total: 0,
            synced_bytes: 0,
            pressure_writebacks: 0,
        };
        Ok(Self {
            shared: Arc::new(Shared {
                root,
                options,
                state: Mutex::new(state),
            }),
        })
    }

    /// The state the control channel works on.
    pub fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    fn root(&self) -> &Path {
        &self.shared.root
    }

    fn ttl(&self) -> Duration {
        self.shared.options.ttl
    }

    /// The live state, or EIO after a power loss.
    fn live(&self) -> Result<MutexGuard<'_, State>> {
        let state = self.shared.state();
        if state.dead {
            return Err(Errno::EIO);
        }
        Ok(state)
    }

    fn child(&self, state: &State, parent: INodeNo, name: &OsStr) -> Result<PathBuf> {
        Ok(state.node(parent.0)?.rel.join(name))
    }

    /// A new entry under `rel`, already created in the backing directory.
    fn entry(&self, state: &mut State, rel: PathBuf, meta: &Metadata) -> FileAttr {
        let ino = state.intern(rel, meta.ino());
        let size = state.visible_size(ino, meta.len());
        attr(ino, meta, size)
    }

    fn do_lookup(&self, parent: INodeNo, name: &OsStr) -> Result<FileAttr> {
        let mut state = self.live()?;
        let rel = self.child(&state, parent, name)?;
        let meta = std::fs::symlink_metadata(self.root().join(&rel)).map_err(errno)?;
        Ok(self.entry(&mut state, rel, &meta))
    }

    #[allow(clippy::too_many_arguments)]
    fn do_setattr(
        &self,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        fh: Option<FileHandle>,
    ) -> Result<FileAttr> {
        let mut state = self.live()?;
        let fh = fh.map(|f| f.0);
        let file = state.file_for(self.root(), ino.0, fh)?;
        if let Some(mode) = mode {
            file.set_permissions(std::fs::Permissions::from_mode(mode & 0o7777))
                .map_err(errno)?;
        }
        if uid.is_some() || gid.is_some() {
            std::os::unix::fs::fchown(&*file, uid, gid).map_err(errno)?;
        }
        if let Some(size) = size {
            match state.dirty.get_mut(&ino.0) {
                Some(dirty) => {
                    let before = dirty.overlay.dirty_bytes();
                    dirty.overlay.truncate(&*file, size).map_err(errno)?;
                    let after = dirty.overlay.dirty_bytes();
                    state.dirty_total -= before - after;
                    if after == 0 {
                        state.dirty.remove(&ino.0);
                    }
                }
                None => file.set_len(size).map_err(errno)?,
            }
        }
        if atime.is_some() || mtime.is_some() {
            let resolve = |t: TimeOrNow| match t {
                TimeOrNow::SpecificTime(t) => t,
                TimeOrNow::Now => SystemTime::now(),
            };
            let mut times = std::fs::FileTimes::new();
            if let Some(t) = atime {
                times = times.set_accessed(resolve(t));
            }
            if let Some(t) = mtime {
                times = times.set_modified(resolve(t));
            }
            file.set_times(times).map_err(errno)?;
        }
        let meta = file.metadata().map_err(errno)?;
        let size = state.visible_size(ino.0, meta.len());
        Ok(attr(ino.0, &meta, size))
    }

    fn open_handle(&self, state: &mut State, ino: u64, file: File, flags: i32) -> u64 {
        let fh = state.next_fh;
        state.next_fh += 1;
        let sync = (OFlags::SYNC | OFlags::DSYNC).bits() as i32;
        state.handles.insert(
            fh,
            Handle {
                ino,
                file: Arc::new(file),
                sync_writes: flags & sync != 0,
            },
        );
        if let Some(node) = state.nodes.get_mut(&ino) {
            node.open += 1;
        }
        fh
    }

    fn do_open(&self, ino: INodeNo, flags: OpenFlags) -> Result<u64> {
        let mut state = self.live()?;
        let node = state.node(ino.0)?;
        let path = self.root().join(&node.rel);
        let backing_ino = node.backing_ino;
        let file = open_backing(&path, true).map_err(errno)?;
        if file.metadata().map_err(errno)?.ino() != backing_ino {
            return Err(Errno::ENOENT);
        }
        Ok(self.open_handle(&mut state, ino.0, file, flags.0))
    }

    fn do_create(
        &self,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
    ) -> Result<(FileAttr, u64)> {
        let mut state = self.live()?;
        let rel = self.child(&state, parent, name)?;
        let exclusive = flags & OFlags::EXCL.bits() as i32 != 0;
        let mut options = OpenOptions::new();
        options.read(true).write(true).mode(mode & !umask & 0o7777);
        if exclusive {
            options.create_new(true);
        } else {
            options.create(true);
        }
        let file = options.open(self.root().join(&rel)).map_err(errno)?;
        let meta = file.metadata().map_err(errno)?;
        let attr = self.entry(&mut state, rel, &meta);
        let ino = attr.ino.0;
        if flags & OFlags::TRUNC.bits() as i32 != 0 {
            file.set_len(0).map_err(errno)?;
            state.forget_dirty(ino);
        }
        let fh = self.open_handle(&mut state, ino, file, flags);
        let attr = state.attr_of(self.root(), ino, Some(fh))?;
        Ok((attr, fh))
    }

    fn do_mknod(&self, parent: INodeNo, name: &OsStr, mode: u32, umask: u32) -> Result<FileAttr> {
        if mode & S_IFMT != S_IFREG {
            return Err(Errno::EPERM);
        }
        let mut state = self.live()?;
        let rel = self.child(&state, parent, name)?;
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode & !umask & 0o7777)
            .open(self.root().join(&rel))
            .map_err(errno)?;
        let meta = file.metadata().map_err(errno)?;
        Ok(self.entry(&mut state, rel, &meta))
    }

    fn do_mkdir(&self, parent: INodeNo, name: &OsStr, mode: u32, umask: u32) -> Result<FileAttr> {
        let mut state = self.live()?;
        let rel = self.child(&state, parent, name)?;
        let path = self.root().join(&rel);
        std::fs::DirBuilder::new()
            .mode(mode & !umask & 0o7777)
            .create(&path)
            .map_err(errno)?;
        let meta = std::fs::symlink_metadata(&path).map_err(errno)?;
        Ok(self.entry(&mut state, rel, &meta))
    }

    fn do_unlink(&self, parent: INodeNo, name: &OsStr, dir: bool) -> Result<()> {
        let mut state = self.live()?;
        let rel = self.child(&state, parent, name)?;
        let path = self.root().join(&rel);
        let meta = std::fs::symlink_metadata(&path).map_err(errno)?;
        if dir {
            std::fs::remove_dir(&path).map_err(errno)?;
        } else {
            std::fs::remove_file(&path).map_err(errno)?;
        }
        if dir || meta.nlink() <= 1 {
            state.unlinked(meta.ino());
        }
        Ok(())
    }

    fn do_rename(
        &self,
        parent: INodeNo,
        name: &OsStr,
        new_parent: INodeNo,
        new_name: &OsStr,
        flags: RenameFlags,
    ) -> Result<()> {
        let mut state = self.live()?;
        let from = self.child(&state, parent, name)?;
        let to = self.child(&state, new_parent, new_name)?;
        let from_path = self.root().join(&from);
        let to_path = self.root().join(&to);
        let replaced = std::fs::symlink_metadata(&to_path).ok();
        let exchange = flags.contains(RenameFlags::RENAME_EXCHANGE);
        if flags.is_empty() {
            std::fs::rename(&from_path, &to_path).map_err(errno)?;
        } else {
            rustix::fs::renameat_with(
                rustix::fs::CWD,
                &from_path,
                rustix::fs::CWD,
                &to_path,
                rustix::fs::RenameFlags::from_bits_retain(flags.bits()),
            )
            .map_err(rustix_errno)?;
        }
        if let Some(replaced) = replaced.filter(|_| !exchange) {
            let moved = std::fs::symlink_metadata(&to_path).map_err(errno)?;
            if replaced.ino() != moved.ino() && (replaced.is_dir() || replaced.nlink() <= 1) {
                state.unlinked(replaced.ino());
            }
        }
        // Paths of the moved entry and everything under it (both ways for an exchange).
        let moved = |base: &Path, rest: &Path| {
            if rest.as_os_str().is_empty() {
                base.to_path_buf()
            } else {
                base.join(rest)
            }
        };
        for node in state.nodes.values_mut() {
            if node.unlinked {
                continue;
            }
            if let Ok(rest) = node.rel.strip_prefix(&from) {
                node.rel = moved(&to, rest);
            } else if exchange {
                if let Ok(rest) = node.rel.strip_prefix(&to) {
                    node.rel = moved(&from, rest);
                }
            }
        }
        Ok(())
    }

    fn do_read(&self, ino: INodeNo, fh: FileHandle, offset: u64, size: u32) -> Result<Vec<u8>> {
        let state = self.live()?;
        let file = state.file_for(self.root(), ino.0, Some(fh.0))?;
        match state.dirty.get(&ino.0) {
            Some(dirty) => dirty.overlay.read(&*file, offset, size as usize),
            None => read_plain(&file, offset, size as usize),
        }
        .map_err(errno)
    }

    fn do_write(
        &self,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        flags: OpenFlags,
    ) -> Result<u32> {
        let mut state = self.live()?;
        let file = state.file_for(self.root(), ino.0, Some(fh.0))?;
        let sync_flags = (OFlags::SYNC | OFlags::DSYNC).bits() as i32;
        let sync =
            flags.0 & sync_flags != 0 || state.handles.get(&fh.0).is_some_and(|h| h.sync_writes);
        let dirty = state.dirty.entry(ino.0).or_insert_with(|| Dirty {
            file,
            overlay: Overlay::new(),
        });
        let before = dirty.overlay.dirty_bytes();
        dirty.overlay.write(offset, data);
        let after = dirty.overlay.dirty_bytes();
        state.dirty_total = state.dirty_total + after - before;
        if sync {
            state.apply(ino.0).map_err(errno)?;
        }
        while state.dirty_total > self.shared.options.max_dirty_bytes {
            let Some(largest) = state
                .dirty
                .iter()
                .max_by_key(|(_, d)| d.overlay.dirty_bytes())
                .map(|(ino, _)| *ino)
            else {
                break;
            };
            state.apply(largest).map_err(errno)?;
            state.pressure_writebacks += 1;
        }
        Ok(data.len() as u32)
    }

    fn do_release(&self, ino: INodeNo, fh: FileHandle) {
        let mut state = self.shared.state();
        state.handles.remove(&fh.0);
        let unlinked_and_closed = match state.nodes.get_mut(&ino.0) {
            Some(node) => {
                node.open = node.open.saturating_sub(1);
                node.unlinked && node.open == 0
            }
            None => false,
        };
        if unlinked_and_closed {
            state.forget_dirty(ino.0);
        }
        state.maybe_evict(ino.0);
    }

    fn do_opendir(&self, ino: INodeNo) -> Result<u64> {
        let mut state = self.live()?;
        let node = state.node(ino.0)?;
        let path = self.root().join(&node.rel);
        let mut entries = vec![
            (ino.0, FileType::Directory, ".".into()),
            (INodeNo::ROOT.0, FileType::Directory, "..".into()),
        ];
        for entry in std::fs::read_dir(&path).map_err(errno)? {
            let entry = entry.map_err(errno)?;
            let kind = entry
                .file_type()
                .ok()
                .and_then(FileType::from_std)
                .unwrap_or(FileType::RegularFile);
            let backing_ino = std::os::unix::fs::DirEntryExt::ino(&entry);
            // Known inodes by their number; others by the backing number, which
            // only shows in getdents (lookups give the real one).
            let ino = state
                .by_backing
                .get(&backing_ino)
                .copied()
                .unwrap_or(backing_ino);
            entries.push((ino, kind, entry.file_name()));
        }
        let fh = state.next_fh;
        state.next_fh += 1;
        state.listings.insert(fh, Listing { entries });
        Ok(fh)
    }

    fn do_fsync(&self, ino: INodeNo) -> Result<()> {
        let mut state = self.live()?;
        state.apply(ino.0).map_err(errno)?;
        Ok(())
    }

    /// `SEEK_DATA` and `SEEK_HOLE` (the kernel answers the other whences itself):
    /// the backing file's data regions and the dirty ranges are data; the broker's
    /// recovery reads only data regions, so a dirty tail must count.
    fn do_lseek(&self, ino: INodeNo, fh: FileHandle, offset: i64, whence: i32) -> Result<i64> {
        const SEEK_DATA: i32 = 3;
        const SEEK_HOLE: i32 = 4;
        let state = self.live()?;
        let file = state.file_for(self.root(), ino.0, Some(fh.0))?;
        let backing_len = file.metadata().map_err(errno)?.len();
        let overlay = state.dirty.get(&ino.0).map(|d| &d.overlay);
        let size = overlay.map_or(backing_len, |o| o.size(backing_len));
        let offset = u64::try_from(offset).map_err(|_| Errno::EINVAL)?;
        let enxio = Errno::ENXIO;
        if offset >= size {
            return Err(enxio);
        }
        let found = match whence {
            SEEK_DATA => {
                let in_backing = if offset < backing_len {
                    match rustix::fs::seek(&*file, rustix::fs::SeekFrom::Data(offset)) {
                        Ok(at) => Some(at),
                        Err(rustix::io::Errno::NXIO) => None,
                        Err(e) => return Err(rustix_errno(e)),
                    }
                } else {
                    None
                };
                let in_overlay = overlay.and_then(|o| o.next_data(offset));
                match (in_backing, in_overlay) {
                    (Some(a), Some(b)) => a.min(b),
                    (Some(a), None) | (None, Some(a)) => a,
                    (None, None) => return Err(enxio),
                }
            }
            SEEK_HOLE => {
                let mut at = offset;
                loop {
                    if at >= size {
                        break size;
                    }
                    if let Some(end) = overlay.and_then(|o| o.covering_end(at)) {
                        at = end;
                        continue;
                    }
                    if at < backing_len {
                        let hole = rustix::fs::seek(&*file, rustix::fs::SeekFrom::Hole(at))
                            .map_err(rustix_errno)?;
                        if hole > at {
                            at = hole;
                            continue;
                        }
                    }
                    break at;
                }
            }
            _ => return Err(Errno::EINVAL),
        };
        i64::try_from(found).map_err(|_| Errno::EOVERFLOW)
    }

    fn do_fallocate(
        &self,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
    ) -> Result<()> {
        let state = self.live()?;
        let keep_size = rustix::fs::FallocateFlags::KEEP_SIZE;
        let flags = rustix::fs::FallocateFlags::from_bits_retain(mode as u32);
        // Allocation changes no byte a reader sees: pass it through. Punching or
        // zeroing ranges would change data; the broker does not use them.
        if !(flags.is_empty() || flags == keep_size) {
            return Err(Errno::from_i32(rustix::io::Errno::OPNOTSUPP.raw_os_error()));
        }
        let file = state.file_for(self.root(), ino.0, Some(fh.0))?;
        rustix::fs::fallocate(&*file, flags, offset, length).map_err(rustix_errno)
    }
}

const S_IFMT: u32 = 0o170000;
const S_IFREG: u32 = 0o100000;

fn reply_entry(reply: ReplyEntry, ttl: Duration, result: Result<FileAttr>) {
    match result {
        Ok(attr) => reply.entry(&ttl, &attr, Generation(0)),
        Err(e) => reply.error(e),
    }
}

fn reply_empty(reply: ReplyEmpty, result: Result<()>) {
    match result {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(e),
    }
}

impl Filesystem for LazyFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        reply_entry(reply, self.ttl(), self.do_lookup(parent, name));
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        let mut state = self.shared.state();
        if let Some(node) = state.nodes.get_mut(&ino.0) {
            node.lookups = node.lookups.saturating_sub(nlookup);
        }
        state.maybe_evict(ino.0);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        let result = self
            .live()
            .and_then(|state| state.attr_of(self.root(), ino.0, fh.map(|f| f.0)));
        match result {
            Ok(attr) => reply.attr(&self.ttl(), &attr),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        match self.do_setattr(ino, mode, uid, gid, size, atime, mtime, fh) {
            Ok(attr) => reply.attr(&self.ttl(), &attr),
            Err(e) => reply.error(e),
        }
    }

    fn mknod(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        reply_entry(reply, self.ttl(), self.do_mknod(parent, name, mode, umask));
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        reply_entry(reply, self.ttl(), self.do_mkdir(parent, name, mode, umask));
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply_empty(reply, self.do_unlink(parent, name, false));
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply_empty(reply, self.do_unlink(parent, name, true));
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        reply_empty(
            reply,
            self.do_rename(parent, name, newparent, newname, flags),
        );
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        match self.do_create(parent, name, mode, umask, flags) {
            Ok((attr, fh)) => reply.created(
                &self.ttl(),
                &attr,
                Generation(0),
                FileHandle(fh),
                FopenFlags::FOPEN_KEEP_CACHE,
            ),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        match self.do_open(ino, flags) {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::FOPEN_KEEP_CACHE),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.do_read(ino, fh, offset, size) {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        match self.do_write(ino, fh, offset, data, flags) {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(e),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // close() makes nothing durable.
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.do_release(ino, fh);
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply_empty(reply, self.do_fsync(ino));
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.do_opendir(ino) {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let state = self.shared.state();
        let Some(listing) = state.listings.get(&fh.0) else {
            reply.error(Errno::EBADF);
            return;
        };
        for (i, (ino, kind, name)) in listing.entries.iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(*ino), i as u64 + 1, *kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.shared.state().listings.remove(&fh.0);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        // Names and sizes are applied at once (see the crate documentation).
        reply_empty(reply, self.live().map(|_| ()));
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match rustix::fs::statvfs(self.root()) {
            Ok(s) => reply.statfs(
                s.f_blocks,
                s.f_bfree,
                s.f_bavail,
                s.f_files,
                s.f_ffree,
                s.f_bsize as u32,
                s.f_namemax as u32,
                s.f_frsize as u32,
            ),
            Err(e) => reply.error(rustix_errno(e)),
        }
    }

    fn lseek(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: fuser::ReplyLseek,
    ) {
        match self.do_lseek(ino, fh, offset, whence) {
            Ok(at) => reply.offset(at),
            Err(e) => reply.error(e),
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        reply_empty(reply, self.do_fallocate(ino, fh, offset, length, mode));
    }
}
