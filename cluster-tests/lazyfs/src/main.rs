//! `lazyfs`: serve a directory through FUSE, keeping unsynced data in memory until
//! fsync, and drop it on a power-loss command. See the library documentation.
//!
//! ```text
//! lazyfs --backing DIR --mount MNT [--control SOCK] [--max-dirty-bytes N] [--threads N]
//! lazyfs ctl SOCK power-loss|stop|sync|stats
//! ```
//!
//! Exit status: 0 after a clean stop or a power loss; 1 when the mount failed;
//! for `ctl`, 0 when the answer starts with `ok`, 1 otherwise.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use fuser::{Config, MountOption, Session, SessionACL};
use lazyfs::fs::{LazyFs, Options, Shared, Sweep};

#[derive(Parser, Debug)]
#[command(
    about = "FUSE pass-through that holds unsynced file data in memory and loses it on a power-loss command",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: Serve,
}

#[derive(Args, Debug)]
struct Serve {
    /// Directory whose files are served (where synced data lives).
    #[arg(long)]
    backing: Option<PathBuf>,
    /// Empty directory to mount on.
    #[arg(long)]
    mount: Option<PathBuf>,
    /// Unix socket for control commands (power-loss, stop, sync, stats).
    #[arg(long)]
    control: Option<PathBuf>,
    /// Unsynced bytes held before the file with the most is written back.
    #[arg(long, default_value_t = Options::default().max_dirty_bytes)]
    max_dirty_bytes: u64,
    /// Threads serving FUSE requests.
    #[arg(long, default_value_t = 2)]
    threads: usize,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Send a control command to a running lazyfs and print its answer.
    Ctl {
        /// The --control socket of the lazyfs.
        socket: PathBuf,
        /// power-loss, stop, sync or stats.
        command: String,
        /// Seconds to wait for the answer.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Ctl {
            socket,
            command,
            timeout,
        }) => match lazyfs::control(&socket, &command, Duration::from_secs(timeout)) {
            Ok(answer) => {
                println!("{answer}");
                if answer.starts_with("ok") {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                }
            }
            Err(e) => {
                eprintln!("lazyfs ctl: {}: {e}", socket.display());
                ExitCode::FAILURE
            }
        },
        None => match serve(cli.serve) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("lazyfs: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

/// What the control socket and the signals act on.
struct Controller {
    shared: Arc<Shared>,
    mount: PathBuf,
    socket: Option<PathBuf>,
    /// Set once unmounted (or detached) by a stop.
    stopping: Mutex<bool>,
    /// Held while a command is carried out and answered: the main thread takes it
    /// before exiting, so a `stop` is answered before the process ends.
    busy: Mutex<()>,
}

/// Unmounts `mount`, retrying for a while when it is busy: a process forked
/// elsewhere holds the mount's files (even mappings) until it execs.
fn unmount(mount: &Path) -> rustix::io::Result<()> {
    let mut tries = 0;
    loop {
        match rustix::mount::unmount(mount, rustix::mount::UnmountFlags::empty()) {
            Err(rustix::io::Errno::BUSY) if tries < 30 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
            result => return result,
        }
    }
}

impl Controller {
    /// Drops every unsynced byte; the caller then calls [`Controller::vanish`].
    fn power_loss(&self) -> Sweep {
        let (sweep, files) = self.shared.power_loss();
        eprintln!(
            "lazyfs: POWER LOSS: dropped {} unsynced bytes of {} files",
            sweep.bytes, sweep.files
        );
        for file in files {
            eprintln!("lazyfs:   {file}");
        }
        sweep
    }

    /// Detaches the mount and exits: the kernel aborts the connection, so nothing
    /// it still caches for this mount reaches the backing directory.
    fn vanish(&self) -> ! {
        let _ = rustix::mount::unmount(&self.mount, rustix::mount::UnmountFlags::DETACH);
        if let Some(socket) = &self.socket {
            let _ = std::fs::remove_file(socket);
        }
        std::process::exit(0);
    }

    /// Clean stop: has the kernel write back what it caches for the mount (dirty
    /// pages of mappings), applies every unsynced byte and unmounts; the main
    /// thread then applies whatever came in meanwhile and exits. With
    /// `detach_if_busy` a busy mount is detached instead of failing.
    fn stop(&self, detach_if_busy: bool) -> Result<Sweep, String> {
        if let Ok(dir) = std::fs::File::open(&self.mount) {
            if let Err(e) = rustix::fs::syncfs(&dir) {
                eprintln!("lazyfs: syncfs {}: {e}", self.mount.display());
            }
        }
        let sweep = self
            .shared
            .sync_all()
            .map_err(|e| format!("applying unsynced data: {e}"))?;
        let mut stopping = self.stopping.lock().unwrap_or_else(PoisonError::into_inner);
        if !*stopping {
            if let Err(e) = unmount(&self.mount) {
                if !detach_if_busy {
                    return Err(format!("unmounting {}: {e}", self.mount.display()));
                }
                eprintln!(
                    "lazyfs: unmounting {}: {e}; detaching it",
                    self.mount.display()
                );
                let _ = rustix::mount::unmount(&self.mount, rustix::mount::UnmountFlags::DETACH);
            }
            *stopping = true;
            // The session ends when the last copy of the mount goes, and a copy in
            // another mount namespace (a process started by `ip netns exec` while
            // mounted, where / is not shared) can outlive this one: do not wait
            // for it longer than a few seconds.
            let shared = self.shared.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_secs(5));
                match shared.sync_all() {
                    Ok(sweep) => eprintln!(
                        "lazyfs: the mount lives on elsewhere; exiting after applying {} more unsynced bytes",
                        sweep.bytes
                    ),
                    Err(e) => eprintln!("lazyfs: applying unsynced data: {e}"),
                }
                std::process::exit(0);
            });
        }
        eprintln!(
            "lazyfs: stopping: applied {} unsynced bytes of {} files",
            sweep.bytes, sweep.files
        );
        Ok(sweep)
    }

    fn serve_connection(&self, stream: UnixStream) {
        let _busy = self.busy.lock().unwrap_or_else(PoisonError::into_inner);
        let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
        let mut line = String::new();
        let Ok(reader) = stream.try_clone() else {
            return;
        };
        if BufReader::new(reader).read_line(&mut line).is_err() {
            return;
        }
        let mut stream = stream;
        let mut answer = |text: String| {
            let _ = writeln!(stream, "{text}");
            let _ = stream.flush();
        };
        match line.trim() {
            "power-loss" => {
                let sweep = self.power_loss();
                answer(format!(
                    "ok dropped {} unsynced bytes in {} files",
                    sweep.bytes, sweep.files
                ));
                self.vanish();
            }
            "stop" => match self.stop(false) {
                Ok(sweep) => answer(format!(
                    "ok unmounted; applied {} unsynced bytes of {} files",
                    sweep.bytes, sweep.files
                )),
                Err(e) => answer(format!("error {e}")),
            },
            "sync" => match self.shared.sync_all() {
                Ok(sweep) => answer(format!(
                    "ok applied {} unsynced bytes of {} files",
                    sweep.bytes, sweep.files
                )),
                Err(e) => answer(format!("error {e}")),
            },
            "stats" => {
                let s = self.shared.stats();
                answer(format!(
                    "ok dirty_bytes={} dirty_files={} synced_bytes={} pressure_writebacks={} inodes={} open_files={} dead={}",
                    s.dirty_bytes, s.dirty_files, s.synced_bytes, s.pressure_writebacks, s.inodes, s.open_files, s.dead
                ));
            }
            other => answer(format!(
                "error unknown command `{other}` (power-loss, stop, sync, stats)"
            )),
        }
    }
}

fn listen(controller: Arc<Controller>, socket: &Path) -> std::io::Result<()> {
    let listener = UnixListener::bind(socket)?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))?;
    std::thread::Builder::new()
        .name("control".into())
        .spawn(move || {
            for stream in listener.incoming().flatten() {
                controller.serve_connection(stream);
            }
        })?;
    Ok(())
}

fn serve(args: Serve) -> Result<(), String> {
    let (Some(backing), Some(mount)) = (args.backing, args.mount) else {
        return Err(
            "--backing DIR and --mount MNT are required (or: lazyfs ctl SOCK COMMAND)".into(),
        );
    };
    // Registered before anything is mounted: a SIGTERM must never kill this process
    // while it holds unsynced data. Served once the controller exists.
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGUSR1,
    ])
    .map_err(|e| format!("installing signal handlers: {e}"))?;
    if let Some(socket) = &args.control {
        match std::fs::remove_file(socket) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("removing the old {}: {e}", socket.display())),
        }
    }
    let options = Options {
        max_dirty_bytes: args.max_dirty_bytes,
        ..Options::default()
    };
    let fs = LazyFs::new(&backing, options)
        .map_err(|e| format!("backing directory {}: {e}", backing.display()))?;
    let shared = fs.shared();
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::FSName(format!("lazyfs:{}", shared.root().display())),
        MountOption::Subtype("lazyfs".into()),
        MountOption::DefaultPermissions,
    ];
    // allow_other: the broker may run as another user than this process.
    config.acl = SessionACL::All;
    config.n_threads = Some(args.threads.max(1));
    let session = Session::new(fs, &mount, &config)
        .map_err(|e| format!("mounting {} on {}: {e}", backing.display(), mount.display()))?;
    let mount = mount.canonicalize().unwrap_or(mount);
    let controller = Arc::new(Controller {
        shared: shared.clone(),
        mount: mount.clone(),
        socket: args.control.clone(),
        stopping: Mutex::new(false),
        busy: Mutex::new(()),
    });
    if let Some(socket) = &args.control {
        // The socket appears once the mount is live: callers wait for it.
        if let Err(e) = listen(controller.clone(), socket) {
            let _ = rustix::mount::unmount(&mount, rustix::mount::UnmountFlags::DETACH);
            return Err(format!("control socket {}: {e}", socket.display()));
        }
    }
    {
        let controller = controller.clone();
        std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                for signal in signals.forever() {
                    if signal == signal_hook::consts::SIGUSR1 {
                        controller.power_loss();
                        controller.vanish();
                    }
                    let _busy = controller
                        .busy
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner);
                    if let Err(e) = controller.stop(true) {
                        eprintln!("lazyfs: stop on signal {signal}: {e}");
                    }
                }
            })
            .map_err(|e| format!("starting the signal thread: {e}"))?;
    }
    eprintln!(
        "lazyfs: serving {} at {} (control: {})",
        shared.root().display(),
        mount.display(),
        args.control
            .as_ref()
            .map_or("signals only".into(), |p| p.display().to_string())
    );
    let ended = session.run();
    if shared.is_dead() {
        std::process::exit(0);
    }
    // A stop command is answered before this process ends.
    let _busy = controller
        .busy
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let applied = shared.sync_all();
    if let Some(socket) = &args.control {
        let _ = std::fs::remove_file(socket);
    }
    if let Err(e) = &ended {
        eprintln!("lazyfs: the session ended with: {e}");
    }
    match applied {
        Ok(sweep) => {
            eprintln!(
                "lazyfs: unmounted; applied {} more unsynced bytes of {} files",
                sweep.bytes, sweep.files
            );
            Ok(())
        }
        Err(e) => Err(format!("applying unsynced data after unmount: {e}")),
    }
}
