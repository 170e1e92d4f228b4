//! lazyfs mounted for real: the `lazyfs` binary serves a temporary directory,
//! the test writes through the mount and looks at the backing directory.
//!
//! Needs /dev/fuse and the right to mount (root); without them each test prints
//! why it skipped and passes.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Mounted {
    _dir: tempfile::TempDir,
    backing: PathBuf,
    mount: PathBuf,
    socket: PathBuf,
    child: Option<Child>,
}

/// Why FUSE cannot be used here, if it cannot.
fn unavailable() -> Option<String> {
    match OpenOptions::new().read(true).write(true).open("/dev/fuse") {
        Ok(_) => None,
        Err(e) => Some(format!("cannot open /dev/fuse: {e}")),
    }
}

fn is_mounted(path: &Path) -> bool {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let wanted = path.to_string_lossy().into_owned();
    mountinfo
        .lines()
        .any(|line| line.split(' ').nth(4) == Some(wanted.as_str()))
}

impl Mounted {
    /// Mounts a fresh backing directory; None (after printing why) when FUSE is
    /// unavailable.
    fn start(test: &str) -> Option<Self> {
        if let Some(why) = unavailable() {
            println!("SKIPPED {test}: {why}");
            return None;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let backing = dir.path().join("backing");
        let mount = dir.path().join("mount");
        std::fs::create_dir(&backing).expect("mkdir backing");
        std::fs::create_dir(&mount).expect("mkdir mount");
        let mount = mount.canonicalize().expect("canonical mount");
        let socket = dir.path().join("control.sock");
        let mut mounted = Self {
            _dir: dir,
            backing,
            mount,
            socket,
            child: None,
        };
        if let Err(why) = mounted.mount() {
            println!("SKIPPED {test}: {why}");
            return None;
        }
        Some(mounted)
    }

    /// Starts lazyfs on the backing directory and waits for its control socket.
    fn mount(&mut self) -> Result<(), String> {
        let _ = std::fs::remove_file(&self.socket);
        let child = Command::new(env!("CARGO_BIN_EXE_lazyfs"))
            .arg("--backing")
            .arg(&self.backing)
            .arg("--mount")
            .arg(&self.mount)
            .arg("--control")
            .arg(&self.socket)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn lazyfs");
        // Owned by self from here on, so that a failed assertion still stops it.
        let child = self.child.insert(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.socket.exists() {
            if let Some(status) = child.try_wait().expect("try_wait") {
                let mut stderr = String::new();
                if let Some(mut pipe) = child.stderr.take() {
                    let _ = pipe.read_to_string(&mut stderr);
                }
                self.child = None;
                return Err(format!(
                    "lazyfs could not mount ({status}): {}",
                    stderr.trim()
                ));
            }
            assert!(Instant::now() < deadline, "lazyfs did not come up in 20 s");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(
            is_mounted(&self.mount),
            "the socket exists but nothing is mounted"
        );
        Ok(())
    }

    fn ctl(&self, command: &str) -> String {
        lazyfs::control(&self.socket, command, Duration::from_secs(30)).expect("control command")
    }

    /// Waits for lazyfs to exit after a stop or power loss; asserts it exited 0 and
    /// left no mount behind.
    fn wait_gone(&mut self) {
        let mut child = self.child.take().expect("running");
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                break status;
            }
            assert!(Instant::now() < deadline, "lazyfs did not exit in 20 s");
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(status.success(), "lazyfs exited with {status}");
        assert!(!is_mounted(&self.mount), "still mounted after exit");
    }

    fn at(&self, name: &str) -> PathBuf {
        self.mount.join(name)
    }

    fn backing(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.backing.join(name)).expect("read backing file")
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            let _ = rustix::mount::unmount(&self.mount, rustix::mount::UnmountFlags::DETACH);
        }
    }
}

fn create(path: &Path, data: &[u8]) -> File {
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .expect("create through the mount");
    file.write_all(data).expect("write");
    file
}

#[test]
fn writes_reach_the_backing_file_only_on_fsync() {
    let Some(fs) = Mounted::start("writes_reach_the_backing_file_only_on_fsync") else {
        return;
    };
    let file = create(&fs.at("a"), b"hello world");
    assert_eq!(std::fs::read(fs.at("a")).expect("read"), b"hello world");
    assert_eq!(std::fs::metadata(fs.at("a")).expect("stat").len(), 11);
    assert_eq!(
        fs.backing("a"),
        b"",
        "the name exists (metadata), the data not yet"
    );
    file.sync_data().expect("fdatasync");
    assert_eq!(fs.backing("a"), b"hello world");
    // Appends past the synced end: visible, then durable after fsync.
    let mut append = OpenOptions::new()
        .append(true)
        .open(fs.at("a"))
        .expect("open");
    append.write_all(b"!!").expect("append");
    assert_eq!(std::fs::read(fs.at("a")).expect("read"), b"hello world!!");
    assert_eq!(fs.backing("a"), b"hello world");
    append.sync_all().expect("fsync");
    assert_eq!(fs.backing("a"), b"hello world!!");
    assert!(fs.ctl("stats").starts_with("ok dirty_bytes=0 "));
}

#[test]
fn power_loss_drops_unsynced_data_and_unmounts() {
    let Some(mut fs) = Mounted::start("power_loss_drops_unsynced_data_and_unmounts") else {
        return;
    };
    let synced = create(&fs.at("synced"), b"durable");
    synced.sync_all().expect("fsync");
    let mut log = create(&fs.at("log"), b"first;");
    log.sync_data().expect("fdatasync");
    log.write_all(b"second;").expect("append");
    drop(log); // close() makes nothing durable
    let grown = create(&fs.at("grown"), b"ab");
    grown.set_len(6).expect("extend by truncate");
    std::fs::create_dir(fs.at("dir")).expect("mkdir");
    create(&fs.at("dir/new"), b"never synced");
    assert_eq!(std::fs::read(fs.at("log")).expect("read"), b"first;second;");

    let answer = fs.ctl("power-loss");
    assert!(
        answer.starts_with("ok dropped 21 unsynced bytes in 3 files"),
        "{answer}"
    );
    fs.wait_gone();

    assert_eq!(fs.backing("synced"), b"durable");
    assert_eq!(fs.backing("log"), b"first;");
    assert_eq!(
        fs.backing("grown"),
        b"\0\0\0\0\0\0",
        "size change kept, data lost"
    );
    assert_eq!(fs.backing("dir/new"), b"", "created (metadata), data lost");

    // Mounted again, the survivors are what it serves.
    fs.mount().expect("mount again");
    assert_eq!(std::fs::read(fs.at("log")).expect("read"), b"first;");
    assert_eq!(std::fs::read(fs.at("synced")).expect("read"), b"durable");
}

#[test]
#[allow(unsafe_code)]
fn mmap_and_msync_through_the_mount() {
    let Some(mut fs) = Mounted::start("mmap_and_msync_through_the_mount") else {
        return;
    };
    let file = create(&fs.at("mapped"), b"");
    file.set_len(3 * 4096).expect("set_len");
    file.sync_all().expect("fsync");
    // SAFETY: the file is this test's own, nothing else maps or truncates it while
    // the mapping lives.
    let mut map = unsafe { memmap2::MmapMut::map_mut(&file) }.expect("mmap MAP_SHARED");
    map[..6].copy_from_slice(b"synced");
    map.flush().expect("msync");
    assert_eq!(&fs.backing("mapped")[..6], b"synced");
    map[4096..4100].copy_from_slice(b"lost");
    map[6..8].copy_from_slice(b"!!");
    let mut read_back = vec![0u8; 4100];
    File::open(fs.at("mapped"))
        .expect("open")
        .read_exact(&mut read_back)
        .expect("read through the mount");
    assert_eq!(&read_back[4096..4100], b"lost");
    assert_eq!(&fs.backing("mapped")[4096..4100], b"\0\0\0\0");
    drop(map);
    drop(file);
    let answer = fs.ctl("power-loss");
    assert!(answer.starts_with("ok dropped "), "{answer}");
    fs.wait_gone();
    let backing = fs.backing("mapped");
    assert_eq!(backing.len(), 3 * 4096);
    assert_eq!(&backing[..8], b"synced\0\0");
    assert_eq!(&backing[4096..4100], b"\0\0\0\0");
}

#[test]
#[allow(unsafe_code)]
fn a_clean_stop_applies_everything() {
    let Some(mut fs) = Mounted::start("a_clean_stop_applies_everything") else {
        return;
    };
    let plain = create(&fs.at("plain"), b"written, never synced");
    let file = create(&fs.at("mapped"), b"");
    file.set_len(4096).expect("set_len");
    // SAFETY: the test's own file, not truncated while mapped.
    let mut map = unsafe { memmap2::MmapMut::map_mut(&file) }.expect("mmap");
    map[..5].copy_from_slice(b"dirty");
    drop(map);
    drop(file);
    drop(plain);
    let answer = fs.ctl("stop");
    assert!(answer.starts_with("ok unmounted"), "{answer}");
    fs.wait_gone();
    assert_eq!(fs.backing("plain"), b"written, never synced");
    assert_eq!(&fs.backing("mapped")[..5], b"dirty");
}

#[test]
fn names_sizes_and_renames_apply_at_once() {
    let Some(fs) = Mounted::start("names_sizes_and_renames_apply_at_once") else {
        return;
    };
    std::fs::create_dir_all(fs.at("d/e")).expect("mkdir -p");
    let file = create(&fs.at("d/e/f.tmp"), b"contents");
    std::fs::rename(fs.at("d"), fs.at("moved")).expect("rename a directory");
    file.sync_all().expect("fsync after the rename");
    assert_eq!(fs.backing("moved/e/f.tmp"), b"contents");
    // Replace a file by rename (write_atomically's pattern).
    create(&fs.at("moved/e/f"), b"old")
        .sync_all()
        .expect("fsync");
    std::fs::rename(fs.at("moved/e/f.tmp"), fs.at("moved/e/f")).expect("rename over");
    assert_eq!(
        std::fs::read(fs.at("moved/e/f")).expect("read"),
        b"contents"
    );
    assert_eq!(fs.backing("moved/e/f"), b"contents");
    let mut names: Vec<String> = std::fs::read_dir(fs.at("moved/e"))
        .expect("readdir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["f"]);
    // Truncate interplay: unsynced bytes past a shrink are gone, the shrink is not.
    let mut file = create(&fs.at("t"), b"0123456789");
    file.sync_all().expect("fsync");
    file.write_all(b"abcdef").expect("write at 10");
    file.set_len(12).expect("shrink");
    assert_eq!(std::fs::read(fs.at("t")).expect("read"), b"0123456789ab");
    assert_eq!(fs.backing("t"), b"0123456789\0\0");
    std::fs::remove_file(fs.at("t")).expect("unlink");
    assert!(!fs.backing.join("t").exists());
    std::fs::remove_dir(fs.at("moved/e")).expect_err("not empty");
    std::fs::remove_file(fs.at("moved/e/f")).expect("unlink");
    std::fs::remove_dir(fs.at("moved/e")).expect("rmdir");
    let stat = rustix::fs::statvfs(&fs.mount).expect("statfs");
    assert!(stat.f_blocks > 0);
    assert!(fs.ctl("stats").starts_with("ok "));
}

#[test]
fn seek_data_and_hole_count_unsynced_bytes_as_data() {
    let Some(fs) = Mounted::start("seek_data_and_hole_count_unsynced_bytes_as_data") else {
        return;
    };
    use rustix::fs::{seek, SeekFrom};
    let file = create(&fs.at("sparse"), b"");
    file.set_len(1 << 20).expect("set_len");
    file.sync_all().expect("fsync");
    let at = 512 * 1024;
    std::os::unix::fs::FileExt::write_all_at(&file, b"x", at).expect("write");
    for synced in [false, true] {
        let data = seek(&file, SeekFrom::Data(0)).expect("SEEK_DATA");
        assert!(
            data <= at && at - data < 4096,
            "synced {synced}: data at {data}"
        );
        let hole = seek(&file, SeekFrom::Hole(at)).expect("SEEK_HOLE");
        assert!(hole > at, "synced {synced}: hole at {hole}");
        assert_eq!(
            seek(&file, SeekFrom::Data(1 << 20)).expect_err("past the end"),
            rustix::io::Errno::NXIO
        );
        file.sync_data().expect("fdatasync");
    }
}
