//! CPU time from `/proc` (Linux): of the load generator itself (each of its
//! threads too), given its pid of the server and each of its threads, and of
//! any other processes named on the command line (workers, the broker), so
//! that a run shows how the shared cores were split. Elsewhere the figures
//! are simply absent.

use std::collections::HashMap;
use std::fmt;
use std::time::Instant;

use serde::Serialize;

/// Clock ticks per second of `/proc/*/stat` (`USER_HZ`, 100 on Linux).
const TICKS_PER_SEC: f64 = 100.0;

/// The name (`comm`) and user + system ticks of a `/proc/.../stat` file.
fn parse_stat(text: &str) -> Option<(String, u64)> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_owned();
    // After the name: field 3 (state) onwards; utime and stime are 14, 15.
    let mut rest = text.get(close + 1..)?.split_whitespace().skip(11);
    let utime: u64 = rest.next()?.parse().ok()?;
    let stime: u64 = rest.next()?.parse().ok()?;
    Some((comm, utime + stime))
}

fn read_stat(path: &str) -> Option<(String, u64)> {
    parse_stat(&std::fs::read_to_string(path).ok()?)
}

/// A process's CPU ticks, in all and per thread.
struct ProcSample {
    total: u64,
    /// tid -> (name, ticks)
    threads: HashMap<u32, (String, u64)>,
}

impl ProcSample {
    /// `dir` is `/proc/<pid>` or `/proc/self`.
    fn take(dir: &str) -> Option<ProcSample> {
        let (_, total) = read_stat(&format!("{dir}/stat"))?;
        let mut threads = HashMap::new();
        if let Ok(entries) = std::fs::read_dir(format!("{dir}/task")) {
            for entry in entries.flatten() {
                let Some(tid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
                    continue;
                };
                if let Some(stat) = read_stat(&format!("{dir}/task/{tid}/stat")) {
                    threads.insert(tid, stat);
                }
            }
        }
        Some(ProcSample { total, threads })
    }
}

/// A process to watch besides the server, by name (`--pid NAME=PID`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamedPid {
    pub name: String,
    pub pid: u32,
}

impl std::str::FromStr for NamedPid {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (name, pid) = s
            .split_once('=')
            .ok_or_else(|| format!("{s:?} is not NAME=PID"))?;
        let pid = pid
            .trim()
            .parse()
            .map_err(|_| format!("{pid:?} is not a pid"))?;
        if name.is_empty() {
            return Err(format!("{s:?} has no name before the ="));
        }
        Ok(NamedPid {
            name: name.to_owned(),
            pid,
        })
    }
}

/// CPU counters at one moment.
pub(crate) struct Sample {
    at: Instant,
    own: Option<ProcSample>,
    /// Busy ticks of every core of the machine.
    machine: Option<u64>,
    server: Option<ProcSample>,
    /// Of each process of `--pid`, in order.
    others: Vec<Option<ProcSample>>,
}

impl Sample {
    pub(crate) fn take(server: Option<u32>, others: &[NamedPid]) -> Sample {
        Sample {
            at: Instant::now(),
            own: ProcSample::take("/proc/self"),
            machine: std::fs::read_to_string("/proc/stat")
                .ok()
                .and_then(|s| machine_busy(&s)),
            server: server.and_then(|pid| ProcSample::take(&format!("/proc/{pid}"))),
            others: others
                .iter()
                .map(|p| ProcSample::take(&format!("/proc/{}", p.pid)))
                .collect(),
        }
    }
}

/// The server's threads of one name.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ThreadGroup {
    pub name: String,
    pub threads: usize,
    /// CPU cores used by all of them together.
    pub cores: f64,
    /// By the busiest one alone (1.0: a thread that never rested).
    pub busiest: f64,
}

/// One thread of the server.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ThreadUse {
    pub tid: u32,
    pub name: String,
    pub cores: f64,
}

/// Another process watched over the window (`--pid NAME=PID`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ProcessUse {
    pub name: String,
    pub pid: u32,
    /// `None` when it could not be read at both ends of the window (it
    /// ended, or never was).
    pub cores: Option<f64>,
    /// Its threads by name, busiest first.
    pub threads: Vec<ThreadGroup>,
}

/// CPU used over a window, in cores (1.0 = one core all the time).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CpuUsage {
    pub window_s: f64,
    pub loadgen_cores: Option<f64>,
    /// The load generator's threads by name (with `amqp-echo`, its echo
    /// servers run on threads of their own), busiest first.
    pub loadgen_threads: Vec<ThreadGroup>,
    pub server_cores: Option<f64>,
    /// The load generator's part of the CPU both used.
    pub loadgen_share: Option<f64>,
    /// Every process of the machine together.
    pub machine_cores: Option<f64>,
    /// The processes of `--pid`, in order.
    pub processes: Vec<ProcessUse>,
    /// Neither the load generator, the server nor a process of `--pid`:
    /// others disturbing the run.
    pub other_cores: Option<f64>,
    /// Busiest first.
    pub server_threads: Vec<ThreadGroup>,
    /// The busiest single threads of the server (a thread near 1.0 is a
    /// serial bottleneck).
    pub busiest_threads: Vec<ThreadUse>,
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Busy ticks of all cores from `/proc/stat`: everything but idle and
/// iowait.
fn machine_busy(text: &str) -> Option<u64> {
    let line = text.lines().next()?.strip_prefix("cpu ")?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .map(|t| t.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal guest guest_nice; guest
    // time is already counted in user.
    let all: u64 = ticks.iter().take(8).sum();
    Some(all - ticks.get(3)? - ticks.get(4).copied().unwrap_or(0))
}

/// The name of a thread without its number: `sled-io-3` is `sled-io-`, and
/// the Erlang VM's `2_scheduler` is `scheduler`.
fn family(name: &str) -> &str {
    let digit = |c: char| c.is_ascii_digit();
    let name = match name.trim_start_matches(digit).strip_prefix('_') {
        Some(rest) if !rest.is_empty() && name.starts_with(digit) => rest,
        _ => name,
    };
    name.trim_end_matches(digit)
}

/// Per-thread use between two samples of one process: groups by name
/// (busiest first) and single threads (busiest first).
fn thread_use(
    a: &ProcSample,
    b: &ProcSample,
    cores: impl Fn(u64) -> f64,
) -> (Vec<ThreadGroup>, Vec<ThreadUse>) {
    let mut by_name: HashMap<&str, (usize, u64, u64)> = HashMap::new();
    let mut single = Vec::with_capacity(b.threads.len());
    for (tid, (name, ticks)) in &b.threads {
        let before = a.threads.get(tid).map_or(0, |(_, t)| *t);
        let used = ticks.saturating_sub(before);
        single.push(ThreadUse {
            tid: *tid,
            name: name.clone(),
            cores: cores(used),
        });
        let g = by_name.entry(family(name)).or_default();
        g.0 += 1;
        g.1 += used;
        g.2 = g.2.max(used);
    }
    let total = b.total.saturating_sub(a.total);
    let seen: u64 = by_name.values().map(|g| g.1).sum();
    let mut groups: Vec<ThreadGroup> = by_name
        .into_iter()
        .map(|(name, (threads, ticks, busiest))| ThreadGroup {
            name: name.to_owned(),
            threads,
            cores: cores(ticks),
            busiest: cores(busiest),
        })
        .collect();
    // Threads that ended within the window count in the process's total
    // only.
    if total > seen {
        groups.push(ThreadGroup {
            name: "(ended threads)".into(),
            threads: 0,
            cores: cores(total - seen),
            busiest: 0.0,
        });
    }
    groups.sort_by(|x, y| y.cores.total_cmp(&x.cores).then(x.name.cmp(&y.name)));
    single.sort_by(|x, y| y.cores.total_cmp(&x.cores).then(x.tid.cmp(&y.tid)));
    (groups, single)
}

/// The CPU used between two samples; `names` are those of the `--pid`
/// processes, in the order they were sampled.
pub(crate) fn usage(start: &Sample, end: &Sample, names: &[NamedPid]) -> CpuUsage {
    let secs = (end.at - start.at).as_secs_f64().max(1e-3);
    let cores = |ticks: u64| round3(ticks as f64 / TICKS_PER_SEC / secs);
    let ticks = |a: &Option<ProcSample>, b: &Option<ProcSample>| match (a, b) {
        (Some(a), Some(b)) => Some(b.total.saturating_sub(a.total)),
        _ => None,
    };
    let own = ticks(&start.own, &end.own);
    // Only the threads of the load generator and of `--pid` processes that
    // did something: the Erlang VM alone has dozens of idle ones.
    let active = |a: &Option<ProcSample>, b: &Option<ProcSample>| match (a, b) {
        (Some(a), Some(b)) => {
            let mut groups = thread_use(a, b, cores).0;
            groups.retain(|g| g.cores > 0.0);
            groups
        }
        _ => Vec::new(),
    };
    let loadgen_threads = active(&start.own, &end.own);
    let (server, groups, mut busiest) = match (&start.server, &end.server) {
        (Some(a), Some(b)) => {
            let (groups, single) = thread_use(a, b, cores);
            (Some(b.total.saturating_sub(a.total)), groups, single)
        }
        _ => (None, Vec::new(), Vec::new()),
    };
    busiest.truncate(6);
    busiest.retain(|t| t.cores > 0.0);
    let mut others_ticks = 0;
    let processes = names
        .iter()
        .zip(start.others.iter().zip(&end.others))
        .map(|(p, (a, b))| {
            let used = ticks(a, b);
            others_ticks += used.unwrap_or(0);
            ProcessUse {
                name: p.name.clone(),
                pid: p.pid,
                cores: used.map(cores),
                threads: active(a, b),
            }
        })
        .collect();
    let machine = start
        .machine
        .zip(end.machine)
        .map(|(a, b)| b.saturating_sub(a));
    let share = match (own, server) {
        (Some(o), Some(s)) if o + s > 0 => Some(round3(o as f64 / (o + s) as f64)),
        _ => None,
    };
    CpuUsage {
        window_s: round3(secs),
        loadgen_cores: own.map(cores),
        loadgen_threads,
        server_cores: server.map(cores),
        loadgen_share: share,
        machine_cores: machine.map(cores),
        processes,
        other_cores: machine
            .zip(own)
            .map(|(m, o)| cores(m.saturating_sub(o + server.unwrap_or(0) + others_ticks))),
        server_threads: groups,
        busiest_threads: busiest,
    }
}

/// `name x3 0.42 (busiest 0.20)`, or `name 0.42` for one thread.
fn group_text(g: &ThreadGroup) -> String {
    if g.threads > 1 {
        format!(
            "{} x{} {:.2} (busiest {:.2})",
            g.name, g.threads, g.cores, g.busiest
        )
    } else {
        format!("{} {:.2}", g.name, g.cores)
    }
}

/// The groups that used at least 0.01 cores, at most `max` of them.
fn groups_text(groups: &[ThreadGroup], max: usize) -> String {
    groups
        .iter()
        .filter(|g| g.cores >= 0.01)
        .take(max)
        .map(group_text)
        .collect::<Vec<_>>()
        .join(", ")
}

impl fmt::Display for CpuUsage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |x: Option<f64>| x.map_or("?".to_owned(), |c| format!("{c:.2}"));
        write!(f, "cpu         loadgen {} cores", show(self.loadgen_cores))?;
        if let Some(s) = self.server_cores {
            write!(f, ", server {s:.2} cores")?;
        }
        if let Some(s) = self.loadgen_share {
            write!(f, " (loadgen {:.0}% of both)", s * 100.0)?;
        }
        if let Some(o) = self.other_cores {
            write!(f, ", other processes {o:.2} cores")?;
        }
        writeln!(f, " over {:.1} s", self.window_s)?;
        let own = groups_text(&self.loadgen_threads, 6);
        if !own.is_empty() {
            writeln!(f, "loadgen threads (cores): {own}")?;
        }
        let busy = groups_text(&self.server_threads, usize::MAX);
        if !busy.is_empty() {
            writeln!(f, "server threads (cores): {busy}")?;
        }
        for p in &self.processes {
            let threads = groups_text(&p.threads, 4);
            let threads = if threads.is_empty() {
                String::new()
            } else {
                format!("; {threads}")
            };
            writeln!(
                f,
                "process {} (pid {}): {} cores{threads}",
                p.name,
                p.pid,
                show(p.cores)
            )?;
        }
        let top: Vec<String> = self
            .busiest_threads
            .iter()
            .filter(|t| t.cores >= 0.01)
            .map(|t| format!("{} {} {:.2}", t.tid, t.name, t.cores))
            .collect();
        if !top.is_empty() {
            writeln!(
                f,
                "busiest server threads (tid name cores): {}",
                top.join(", ")
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
