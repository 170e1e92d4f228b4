//! Each node's resources over a run — resident memory, open file descriptors,
//! bytes under its data dir — sampled every few seconds, so a long run (the
//! one-hour soak) shows whether they stay flat or creep: the report compares
//! the first tenth of the run with the last, and `resources.svg` plots them.
//!
//! The pids come from `DIR/cluster.json` at every sample: a node the nemesis
//! killed and restarted is followed to its new process. A node that is down
//! (or paused, or whose lazyfs mount is gone for a power loss) gives no value
//! for what cannot be read; it is left out, not counted as zero.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How often the nodes are sampled.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(5);

/// Most samples kept per run (a day at [`SAMPLE_EVERY`] for three nodes):
/// a longer run keeps sampling every other one it would have taken.
const MAX_SAMPLES: usize = 3 * 24 * 720;

/// One node at one moment.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Sample {
    /// Seconds since the sampling started.
    pub t_s: f64,
    pub node: u64,
    /// VmRSS of the node's process.
    pub rss_bytes: Option<u64>,
    /// Entries of /proc/PID/fd (files, sockets, pipes).
    pub open_fds: Option<u64>,
    /// Bytes allocated to the files under the node's data dir (what `du` shows).
    pub disk_bytes: Option<u64>,
}

/// What `cluster.json` says of a node, for sampling.
#[derive(Deserialize)]
struct NodeEntry {
    id: u64,
    #[serde(default)]
    pid: Option<u32>,
    data_dir: PathBuf,
}

#[derive(Deserialize)]
struct Layout {
    nodes: Vec<NodeEntry>,
}

/// Samples in the background until [`Sampler::finish`].
pub struct Sampler {
    stop: watch::Sender<bool>,
    task: JoinHandle<Vec<Sample>>,
}

impl Sampler {
    /// Starts sampling the nodes `cluster_json` lists, every `every`.
    pub fn start(cluster_json: PathBuf, every: Duration) -> Self {
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            let started = Instant::now();
            let mut samples = Vec::new();
            let mut ticker = tokio::time::interval(every);
            loop {
                tokio::select! {
                    _ = ticker.tick() => {}
                    _ = stopped.changed() => break,
                }
                let path = cluster_json.clone();
                let t_s = started.elapsed().as_secs_f64();
                // /proc and a directory walk are blocking file system calls.
                let taken = tokio::task::spawn_blocking(move || sample_all(&path, t_s))
                    .await
                    .unwrap_or_default();
                samples.extend(taken);
                if samples.len() > MAX_SAMPLES {
                    samples = thin(samples);
                }
            }
            samples
        });
        Self { stop, task }
    }

    /// Stops sampling and answers every sample taken.
    pub async fn finish(self) -> Vec<Sample> {
        let _ = self.stop.send(true);
        self.task.await.unwrap_or_default()
    }
}

/// Every other sampling round (by time), to keep a long run's samples bounded.
fn thin(samples: Vec<Sample>) -> Vec<Sample> {
    let mut rounds: Vec<f64> = samples.iter().map(|s| s.t_s).collect();
    rounds.dedup();
    let kept: std::collections::BTreeSet<u64> =
        rounds.iter().step_by(2).map(|t| t.to_bits()).collect();
    samples
        .into_iter()
        .filter(|s| kept.contains(&s.t_s.to_bits()))
        .collect()
}

fn sample_all(cluster_json: &Path, t_s: f64) -> Vec<Sample> {
    let Ok(text) = std::fs::read_to_string(cluster_json) else {
        return Vec::new();
    };
    let Ok(layout) = serde_json::from_str::<Layout>(&text) else {
        return Vec::new();
    };
    layout
        .nodes
        .iter()
        .map(|node| Sample {
            t_s,
            node: node.id,
            rss_bytes: node.pid.and_then(rss_bytes),
            open_fds: node.pid.and_then(open_fds),
            disk_bytes: disk_bytes(&node.data_dir),
        })
        .collect()
}

/// VmRSS from /proc/PID/status, in bytes (a zombie or a gone process: none).
fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_vm_rss(&status)
}

fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut words = line.split_whitespace().skip(1);
    let value: u64 = words.next()?.parse().ok()?;
    match words.next() {
        Some("kB") => Some(value * 1024),
        _ => None,
    }
}

fn open_fds(pid: u32) -> Option<u64> {
    let entries = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
    Some(entries.filter(Result::is_ok).count() as u64)
}

/// The bytes allocated to every regular file under `dir`, as `du` counts them
/// (st_blocks): the CommitLog's files are created at full length and filled
/// in place, so their apparent size says nothing of what is written. Files
/// that vanish while it walks (retention, a purge) are skipped.
fn disk_bytes(dir: &Path) -> Option<u64> {
    let mut total = 0u64;
    let mut pending = vec![dir.to_path_buf()];
    let mut read_any = false;
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        read_any = true;
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else {
                continue;
            };
            if meta.is_dir() {
                pending.push(entry.path());
            } else if meta.is_file() {
                total += meta.blocks() * 512;
            }
        }
    }
    read_any.then_some(total)
}

/// One resource of one node: the median of the run's first tenth of samples,
/// of its last tenth, and the largest sample.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Trend {
    pub node: u64,
    pub resource: Resource,
    pub first_tenth: u64,
    pub last_tenth: u64,
    pub max: u64,
    pub samples: usize,
}

/// What is sampled, with how it is read, named and shown.
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Resource {
    Rss,
    OpenFds,
    Disk,
}

const MIB: f64 = 1024.0 * 1024.0;

impl Resource {
    const ALL: [Self; 3] = [Self::Rss, Self::OpenFds, Self::Disk];

    fn of(self, sample: &Sample) -> Option<u64> {
        match self {
            Self::Rss => sample.rss_bytes,
            Self::OpenFds => sample.open_fds,
            Self::Disk => sample.disk_bytes,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Rss => "rss",
            Self::OpenFds => "open_fds",
            Self::Disk => "disk",
        }
    }

    /// The panel's title in `resources.svg`.
    fn title(self) -> &'static str {
        match self {
            Self::Rss => "resident memory (MiB)",
            Self::OpenFds => "open file descriptors",
            Self::Disk => "data dir, allocated (MiB)",
        }
    }

    /// A value in the unit it is shown in (MiB for bytes).
    fn shown(self, value: u64) -> f64 {
        match self {
            Self::OpenFds => value as f64,
            Self::Rss | Self::Disk => value as f64 / MIB,
        }
    }

    /// A value as the report prints it.
    fn show(self, value: u64) -> String {
        match self {
            Self::OpenFds => value.to_string(),
            Self::Rss | Self::Disk => format!("{:.1} MiB", self.shown(value)),
        }
    }
}

fn median(values: &mut [u64]) -> u64 {
    values.sort_unstable();
    values.get(values.len() / 2).copied().unwrap_or(0)
}

/// First tenth against last tenth, per node and resource (by time; a node
/// with fewer than ten values of a resource gets no trend for it).
pub fn trends(samples: &[Sample]) -> Vec<Trend> {
    let end = samples.iter().map(|s| s.t_s).fold(0.0, f64::max);
    let tenth = end / 10.0;
    let mut by_node: BTreeMap<u64, Vec<&Sample>> = BTreeMap::new();
    for sample in samples {
        by_node.entry(sample.node).or_default().push(sample);
    }
    let mut out = Vec::new();
    for (node, node_samples) in by_node {
        for resource in Resource::ALL {
            let values: Vec<(f64, u64)> = node_samples
                .iter()
                .filter_map(|s| resource.of(s).map(|v| (s.t_s, v)))
                .collect();
            if values.len() < 10 {
                continue;
            }
            let mut first: Vec<u64> = values
                .iter()
                .filter(|(t, _)| *t <= tenth)
                .map(|(_, v)| *v)
                .collect();
            let mut last: Vec<u64> = values
                .iter()
                .filter(|(t, _)| *t >= end - tenth)
                .map(|(_, v)| *v)
                .collect();
            if first.is_empty() || last.is_empty() {
                continue;
            }
            out.push(Trend {
                node,
                resource,
                first_tenth: median(&mut first),
                last_tenth: median(&mut last),
                max: values.iter().map(|(_, v)| *v).max().unwrap_or(0),
                samples: values.len(),
            });
        }
    }
    out
}

/// The trends as report lines.
pub fn text(trends: &[Trend]) -> String {
    let mut out = String::new();
    for t in trends {
        let _ = writeln!(
            out,
            "node {} {:<10} first tenth {}, last tenth {} ({:+.0}%), max {} ({} samples)",
            t.node,
            t.resource.name(),
            t.resource.show(t.first_tenth),
            t.resource.show(t.last_tenth),
            if t.first_tenth == 0 {
                0.0
            } else {
                (t.last_tenth as f64 / t.first_tenth as f64 - 1.0) * 100.0
            },
            t.resource.show(t.max),
            t.samples
        );
    }
    out
}

/// Three panels (memory, open files, disk), one line per node, over the run.
pub fn svg(samples: &[Sample]) -> String {
    const W: f64 = 1200.0;
    const LEFT: f64 = 70.0;
    const RIGHT: f64 = 20.0;
    const PANEL: f64 = 180.0;
    const GAP: f64 = 50.0;
    const COLORS: [&str; 6] = [
        "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b",
    ];
    let end = samples.iter().map(|s| s.t_s).fold(1.0, f64::max);
    let x = |t: f64| LEFT + (W - LEFT - RIGHT) * t / end;
    let nodes: Vec<u64> = {
        let mut n: Vec<u64> = samples.iter().map(|s| s.node).collect();
        n.sort_unstable();
        n.dedup();
        n
    };
    let height = GAP + 3.0 * (PANEL + GAP);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{height}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    for (i, node) in nodes.iter().enumerate() {
        let _ = writeln!(
            s,
            r#"<text x="{}" y="20" fill="{}">node {node}</text>"#,
            LEFT + 70.0 * i as f64,
            COLORS[i % COLORS.len()]
        );
    }
    for (panel, resource) in Resource::ALL.into_iter().enumerate() {
        let top = GAP + panel as f64 * (PANEL + GAP);
        let max = samples
            .iter()
            .filter_map(|s| resource.of(s))
            .max()
            .map_or(1.0, |v| resource.shown(v))
            .max(1.0);
        let y = |v: f64| top + PANEL - PANEL * (v / max);
        let _ = writeln!(
            s,
            r##"<rect x="{LEFT}" y="{top}" width="{}" height="{PANEL}" fill="none" stroke="#888"/>"##,
            W - LEFT - RIGHT
        );
        let _ = writeln!(
            s,
            r#"<text x="{LEFT}" y="{}">{}</text>"#,
            top - 6.0,
            resource.title()
        );
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="end">{max:.0}</text><text x="{}" y="{}" text-anchor="end">0</text>"#,
            LEFT - 4.0,
            top + 10.0,
            LEFT - 4.0,
            top + PANEL
        );
        for (i, node) in nodes.iter().enumerate() {
            let points: Vec<String> = samples
                .iter()
                .filter(|s| s.node == *node)
                .filter_map(|s| resource.of(s).map(|v| (s.t_s, resource.shown(v))))
                .map(|(t, v)| format!("{:.1},{:.1}", x(t), y(v)))
                .collect();
            if points.is_empty() {
                continue;
            }
            let _ = writeln!(
                s,
                r#"<polyline fill="none" stroke="{}" stroke-width="1.2" points="{}"/>"#,
                COLORS[i % COLORS.len()],
                points.join(" ")
            );
        }
    }
    let bottom = GAP + 3.0 * (PANEL + GAP) - GAP + 16.0;
    let _ = writeln!(
        s,
        r#"<text x="{LEFT}" y="{bottom}">0 s</text><text x="{}" y="{bottom}" text-anchor="end">{end:.0} s</text>"#,
        W - RIGHT
    );
    let _ = writeln!(s, "</svg>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(t_s: f64, node: u64, rss: u64) -> Sample {
        Sample {
            t_s,
            node,
            rss_bytes: Some(rss),
            open_fds: Some(10),
            disk_bytes: None,
        }
    }

    #[test]
    fn vm_rss_is_read_in_bytes() {
        let status = "Name:\tbroker\nVmPeak:\t  999 kB\nVmRSS:\t  2048 kB\nThreads:\t9\n";
        assert_eq!(parse_vm_rss(status), Some(2048 * 1024));
        assert_eq!(parse_vm_rss("Name:\tzombie\n"), None);
    }

    #[test]
    fn this_process_is_measured() {
        let pid = std::process::id();
        assert!(rss_bytes(pid).is_some_and(|b| b > 0));
        assert!(open_fds(pid).is_some_and(|n| n >= 3));
        let dir = tempfile::tempdir().expect("a temp dir");
        std::fs::create_dir(dir.path().join("sub")).expect("a sub dir");
        std::fs::write(dir.path().join("a"), [1u8; 100]).expect("a file");
        std::fs::write(dir.path().join("sub/b"), [1u8; 23]).expect("a file");
        // A file of 1 MiB apparent size with nothing written allocates nothing.
        std::fs::File::create(dir.path().join("sparse"))
            .and_then(|f| f.set_len(1 << 20))
            .expect("a sparse file");
        let allocated = disk_bytes(dir.path()).expect("the dir is read");
        assert!(
            (123..1 << 20).contains(&allocated),
            "two small files allocate a block or two each, the sparse one none: {allocated}"
        );
        assert_eq!(disk_bytes(&dir.path().join("missing")), None);
    }

    #[test]
    fn a_trend_compares_the_first_and_last_tenth() {
        // Flat at 100 for node 1; node 2 creeps from 100 to 199.
        let mut samples = Vec::new();
        for i in 0..100u64 {
            samples.push(sample(i as f64, 1, 100));
            samples.push(sample(i as f64, 2, 100 + i));
        }
        let trends = trends(&samples);
        let rss = |node| {
            trends
                .iter()
                .find(|t| t.node == node && t.resource == Resource::Rss)
                .cloned()
                .expect("a trend")
        };
        assert_eq!((rss(1).first_tenth, rss(1).last_tenth), (100, 100));
        let creeping = rss(2);
        assert!(creeping.first_tenth <= 110 && creeping.last_tenth >= 189);
        assert_eq!(creeping.max, 199);
        // No disk values: no disk trend.
        assert!(trends.iter().all(|t| t.resource != Resource::Disk));
        assert!(text(&trends).contains("node 2 rss"));
        assert!(svg(&samples).contains("<polyline"));
    }

    #[test]
    fn thinning_keeps_whole_rounds() {
        let samples: Vec<Sample> = (0..10u64)
            .flat_map(|i| [sample(i as f64, 1, 1), sample(i as f64, 2, 1)])
            .collect();
        let thinned = thin(samples);
        assert_eq!(thinned.len(), 10);
        assert!(thinned.chunks(2).all(|pair| pair[0].t_s == pair[1].t_s));
    }
}
