//! `dbaas loadgen`: drives load against a running system and reports
//! throughput and latency.
//!
//! Four workloads:
//! - `read`: `db/read` point lookups (`get` on `users`) against the
//!   orchestrator, over rows `lg-0` .. `lg-<keys-1>` seeded first through
//!   `db/write` batches (idempotent: rows left by an earlier run are
//!   replaced, not refused);
//! - `write`: `db/write` inserts of unique users (a fresh prefix per run, so
//!   reruns never collide; a 409 counts as an error);
//! - `rideshare`: a mix of RideShare calls through the gateway, per virtual
//!   user: add users (10%), create rides (20%), list upcoming rides (40%),
//!   join rides (15%) and show ride details (15%);
//! - `amqp-echo`: no DBaaS at all, but the raw request/reply limit of the
//!   RabbitMQ at `--amqp`: echo servers and clients doing over lapin what
//!   the slaves and the orchestrator do for a read, minus the storage and
//!   the HTTP (see `src/loadgen/echo.rs`).
//!
//! Each of `--concurrency` tasks keeps one request in flight at a time
//! (closed loop) over one shared HTTP client. Every answer's status is
//! checked against the contract; anything else is an error, and the first
//! few are shown. Latencies go into one HDR histogram per task and
//! operation, merged at the end. Requests of the warmup are not measured.
//!
//! The client is kept lean so it does not hide the server's speed: request
//! bodies of `read` are serialized once before the run, URLs are parsed once,
//! and nothing is allocated per request beyond what reqwest needs (and the
//! unique body of a `write` or `rideshare` request). With `--server-pid` the
//! CPU time of both processes (and of each server thread) over the measured
//! window is read from `/proc` and reported, and with `--pid NAME=PID` that
//! of other processes too (workers, the broker).

mod echo;
mod procstat;
mod report;
mod workload;

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use crate::error::{Error, Result};
use procstat::NamedPid;
use report::{Report, TaskStats};
use workload::{Shared, Task};

/// The default orchestrator, for `read` and `write`.
pub const DEFAULT_ORCHESTRATOR: &str = "http://127.0.0.1:8090";
/// The default gateway, for `rideshare`.
pub const DEFAULT_GATEWAY: &str = "http://127.0.0.1:8080";

/// What load to drive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Workload {
    /// `db/read` point lookups against the orchestrator.
    Read,
    /// `db/write` inserts of unique users against the orchestrator.
    Write,
    /// A RideShare mix through the gateway.
    Rideshare,
    /// The raw AMQP request/reply limit: lapin echo servers and clients
    /// over the RabbitMQ at --amqp (no DBaaS involved).
    AmqpEcho,
}

impl Workload {
    pub fn name(self) -> &'static str {
        match self {
            Workload::Read => "read",
            Workload::Write => "write",
            Workload::Rideshare => "rideshare",
            Workload::AmqpEcho => "amqp-echo",
        }
    }
}

/// Flags of `dbaas loadgen`.
#[derive(clap::Args, Debug)]
pub struct LoadArgs {
    /// Base URL of the system: the orchestrator for `read` and `write`
    /// (default http://127.0.0.1:8090), the gateway for `rideshare`
    /// (default http://127.0.0.1:8080).
    #[arg(long, value_name = "URL")]
    pub target: Option<String>,
    /// The workload.
    #[arg(long, value_enum, default_value_t = Workload::Read)]
    pub workload: Workload,
    /// Requests in flight at once (one per virtual user).
    #[arg(long, short = 'c', value_name = "N", default_value_t = 32)]
    pub concurrency: usize,
    /// Seconds to measure after the warmup (default 10 unless --requests).
    #[arg(long, value_name = "SECS", conflicts_with = "requests")]
    pub duration: Option<f64>,
    /// Measure exactly this many requests after the warmup instead.
    #[arg(long, value_name = "N")]
    pub requests: Option<u64>,
    /// Seconds of load before measuring starts.
    #[arg(long, value_name = "SECS", default_value_t = 1.0)]
    pub warmup: f64,
    /// Rows the `read` workload looks up (seeded before the run).
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    pub keys: u64,
    /// Do not seed the rows of `read` (an earlier run left them).
    #[arg(long)]
    pub no_seed: bool,
    /// `read`: ask for eventual consistency (any slave, however far behind).
    #[arg(long)]
    pub eventual: bool,
    /// Worker threads of the load generator's runtime.
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub threads: usize,
    /// Seconds before a request counts as failed.
    #[arg(long, value_name = "SECS", default_value_t = 30.0)]
    pub timeout: f64,
    /// Also print the result as one JSON object (the last line of stdout).
    #[arg(long)]
    pub json: bool,
    /// Also measure this process's CPU (each thread too) over the measured
    /// window, from /proc (Linux); meant for the server's pid.
    #[arg(long, value_name = "PID")]
    pub server_pid: Option<u32>,
    /// Also measure the CPU of this process over the measured window, shown
    /// under NAME (a worker, the broker's VM); may be repeated.
    #[arg(long = "pid", value_name = "NAME=PID")]
    pub pids: Vec<NamedPid>,
    /// `amqp-echo`: the RabbitMQ to measure (amqp://user:pass@host:port/vhost).
    #[arg(long, value_name = "URL")]
    pub amqp: Option<String>,
    /// `amqp-echo`: echo servers, each on a thread and a connection of its
    /// own (like the slaves of `dbaas up --slaves 2`).
    #[arg(long, value_name = "N", default_value_t = echo::DEFAULT_SERVERS)]
    pub echo_servers: usize,
    /// `amqp-echo`: each echo server's prefetch (a slave's on readQ).
    #[arg(long, value_name = "N", default_value_t = echo::SLAVE_PREFETCH)]
    pub echo_prefetch: u16,
    /// `amqp-echo`: bytes per request (and reply).
    #[arg(long, value_name = "N", default_value_t = echo::DEFAULT_BYTES)]
    pub echo_bytes: usize,
    /// `amqp-echo`: persistent requests to a durable queue, as writes go to
    /// writeQ (the default is transient, as reads go to readQ).
    #[arg(long)]
    pub echo_persistent: bool,
}

/// When the measurement ends.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Stop {
    After(Duration),
    Requests(u64),
}

/// The flags, checked and resolved.
#[derive(Clone, Debug)]
struct Plan {
    target: String,
    workload: Workload,
    concurrency: usize,
    stop: Stop,
    warmup: Duration,
    keys: u64,
    seed: bool,
    eventual: bool,
    threads: usize,
    timeout: Duration,
    json: bool,
    server_pid: Option<u32>,
    pids: Vec<NamedPid>,
    echo: Option<echo::EchoConfig>,
}

fn seconds(name: &str, secs: f64, allow_zero: bool) -> Result<Duration> {
    if !secs.is_finite() || secs < 0.0 || (!allow_zero && secs == 0.0) || secs > 1e9 {
        return Err(Error::bad(format!(
            "--{name} {secs} is not a usable number of seconds"
        )));
    }
    Ok(Duration::from_secs_f64(secs))
}

impl Plan {
    fn new(args: LoadArgs) -> Result<Plan> {
        let timeout = seconds("timeout", args.timeout, false)?;
        let (target, echo) = if args.workload == Workload::AmqpEcho {
            let Some(url) = args.amqp else {
                return Err(Error::bad("amqp-echo needs --amqp URL"));
            };
            if !url.starts_with("amqp://") && !url.starts_with("amqps://") {
                return Err(Error::bad(format!(
                    "--amqp {:?} is not an amqp:// URL",
                    echo::redact(&url)
                )));
            }
            if args.echo_servers == 0 || args.echo_prefetch == 0 {
                return Err(Error::bad(
                    "--echo-servers and --echo-prefetch must be at least 1",
                ));
            }
            let config = echo::EchoConfig {
                url: url.clone(),
                servers: args.echo_servers,
                prefetch: args.echo_prefetch,
                bytes: args.echo_bytes,
                persistent: args.echo_persistent,
                timeout,
            };
            (echo::redact(&url), Some(config))
        } else {
            let default = match args.workload {
                Workload::Rideshare => DEFAULT_GATEWAY,
                _ => DEFAULT_ORCHESTRATOR,
            };
            let target = args
                .target
                .as_deref()
                .unwrap_or(default)
                .trim_end_matches('/')
                .to_owned();
            reqwest::Url::parse(&target)
                .map_err(|e| Error::bad(format!("--target {target:?}: {e}")))?;
            (target, None)
        };
        if args.concurrency == 0 {
            return Err(Error::bad("--concurrency must be at least 1"));
        }
        if args.threads == 0 {
            return Err(Error::bad("--threads must be at least 1"));
        }
        if args.workload == Workload::Read && args.keys == 0 {
            return Err(Error::bad(
                "--keys must be at least 1 for the read workload",
            ));
        }
        let stop = match (args.requests, args.duration) {
            (Some(0), _) => return Err(Error::bad("--requests must be at least 1")),
            (Some(n), _) => Stop::Requests(n),
            (None, secs) => Stop::After(seconds("duration", secs.unwrap_or(10.0), false)?),
        };
        Ok(Plan {
            target,
            workload: args.workload,
            concurrency: args.concurrency,
            stop,
            warmup: seconds("warmup", args.warmup, true)?,
            keys: args.keys,
            seed: !args.no_seed,
            eventual: args.eventual,
            threads: args.threads,
            timeout,
            json: args.json,
            server_pid: args.server_pid,
            pids: args.pids,
            echo,
        })
    }
}

/// Runs the load generator on its own runtime and prints the result.
pub fn run(args: LoadArgs) -> Result<()> {
    let plan = Plan::new(args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(plan.threads)
        .thread_name("loadgen")
        .enable_all()
        .build()
        .map_err(|e| Error::Storage(format!("cannot start the runtime: {e}")))?;
    let report = runtime.block_on(drive(&plan))?;
    print!("{}", report.text());
    if plan.json {
        println!("{}", report.json());
    }
    if report.requests > 0 && report.errors == report.requests {
        return Err(Error::Unavailable(format!(
            "every one of the {} measured requests failed",
            report.requests
        )));
    }
    Ok(())
}

/// The first few distinct error messages.
#[derive(Debug, Default)]
pub(crate) struct ErrorLog {
    seen: AtomicUsize,
    first: Mutex<Vec<String>>,
}

impl ErrorLog {
    /// How many distinct messages are kept.
    const KEEP: usize = 5;
    /// How many errors are looked at for them (each costs a message).
    const LOOK: usize = 200;

    /// Notes an error; `msg` is only called for the first few.
    pub(crate) fn note(&self, msg: impl FnOnce() -> String) {
        if self.seen.fetch_add(1, Ordering::Relaxed) < Self::LOOK {
            let msg = msg();
            let mut first = self.first.lock().unwrap_or_else(|e| e.into_inner());
            if first.len() < Self::KEEP && !first.contains(&msg) {
                first.push(msg);
            }
        }
    }

    fn messages(&self) -> Vec<String> {
        self.first.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// What the tasks share: when to measure and stop, the progress count and
/// the error log.
struct Control {
    measure_from: Instant,
    stop: Stop,
    /// Measured requests started so far (claimed, with `Stop::Requests`).
    claimed: AtomicU64,
    /// Requests done, for the progress bar (only kept when it is shown).
    done: Option<AtomicU64>,
    errors: ErrorLog,
}

impl Control {
    /// Whether a measured request may start now.
    fn claim(&self, now: Instant) -> bool {
        match self.stop {
            Stop::After(d) => now < self.measure_from + d,
            Stop::Requests(n) => self.claimed.fetch_add(1, Ordering::Relaxed) < n,
        }
    }
}

/// One virtual user: requests one after the other until told to stop.
async fn virtual_user(mut task: Task, ctl: Arc<Control>) -> TaskStats {
    let mut stats = TaskStats::new(task.op_count());
    loop {
        let start = Instant::now();
        let measured = start >= ctl.measure_from;
        if measured && !ctl.claim(start) {
            break;
        }
        let (op, outcome) = task.step(&ctl.errors).await;
        let end = Instant::now();
        if measured {
            stats.record(op, end - start, outcome);
            stats.last_end = Some(end);
        } else {
            stats.record_warmup(outcome);
        }
        if let Some(done) = &ctl.done {
            done.fetch_add(1, Ordering::Relaxed);
        }
    }
    stats
}

fn client(plan: &Plan) -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(plan.timeout)
        .connect_timeout(Duration::from_secs(5))
        .pool_max_idle_per_host(plan.concurrency.max(64))
        .tcp_nodelay(true)
        .no_proxy()
        .build()
        .map_err(|e| Error::Storage(format!("cannot build the HTTP client: {e}")))
}

fn progress_bar(plan: &Plan) -> Option<ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let (len, template) = match plan.stop {
        Stop::After(d) => (
            (plan.warmup + d).as_millis() as u64,
            "{spinner} {elapsed:>4} [{bar:30}] {msg}",
        ),
        Stop::Requests(n) => (n, "{spinner} {elapsed:>4} [{bar:30}] {pos}/{len} {msg}"),
    };
    let bar = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    Some(bar)
}

async fn drive(plan: &Plan) -> Result<Report> {
    let client = client(plan)?;
    let bar = progress_bar(plan);
    let mut echo = None;
    let shared = match &plan.echo {
        Some(cfg) => {
            let rig = echo::start(cfg, &workload::run_prefix()).await?;
            let shared = Shared::Echo(rig.client.clone());
            echo = Some(rig);
            shared
        }
        None => Shared::new(plan.workload, &plan.target, plan.keys, plan.eventual)?,
    };
    let result = run_tasks(plan, client, bar, &shared).await;
    if let Some(mut rig) = echo {
        rig.stop().await;
    }
    result
}

async fn run_tasks(
    plan: &Plan,
    client: reqwest::Client,
    bar: Option<ProgressBar>,
    shared: &Shared,
) -> Result<Report> {
    let mut seeded = None;
    if plan.workload == Workload::Read && plan.seed {
        if let Some(bar) = &bar {
            bar.set_message(format!("seeding {} rows", plan.keys));
            bar.enable_steady_tick(Duration::from_millis(100));
        }
        workload::seed(&client, &plan.target, plan.keys).await?;
        seeded = Some(plan.keys);
    }

    let ctl = Arc::new(Control {
        measure_from: Instant::now() + plan.warmup,
        stop: plan.stop,
        claimed: AtomicU64::new(0),
        done: bar.as_ref().map(|_| AtomicU64::new(0)),
        errors: ErrorLog::default(),
    });
    let started = Instant::now();
    let tasks: Vec<_> = (0..plan.concurrency)
        .map(|i| {
            let task = Task::new(shared, client.clone(), i);
            tokio::spawn(virtual_user(task, ctl.clone()))
        })
        .collect();

    // CPU use over the measured window, sampled when it opens.
    let pid = plan.server_pid;
    let pids = plan.pids.clone();
    let measure_from = ctl.measure_from;
    let cpu_start = tokio::spawn(async move {
        tokio::time::sleep_until(measure_from.into()).await;
        procstat::Sample::take(pid, &pids)
    });

    let ticker = bar.clone().map(|bar| {
        let ctl = ctl.clone();
        let stop = plan.stop;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(200));
            let mut last = (Instant::now(), 0u64);
            loop {
                tick.tick().await;
                let now = Instant::now();
                let done = ctl.done.as_ref().map_or(0, |d| d.load(Ordering::Relaxed));
                let rate = (done - last.1) as f64 / (now - last.0).as_secs_f64().max(1e-3);
                last = (now, done);
                let phase = if now < ctl.measure_from {
                    "warming up"
                } else {
                    "measuring"
                };
                match stop {
                    Stop::After(_) => bar.set_position((now - started).as_millis() as u64),
                    Stop::Requests(_) => bar.set_position(
                        ctl.claimed
                            .load(Ordering::Relaxed)
                            .min(bar.length().unwrap_or(0)),
                    ),
                }
                bar.set_message(format!("{phase}: {done} requests, {rate:.0} req/s"));
            }
        })
    });

    let mut all = Vec::with_capacity(tasks.len());
    for t in tasks {
        match t.await {
            Ok(stats) => all.push(stats),
            Err(e) => return Err(Error::Storage(format!("a load task failed: {e}"))),
        }
    }
    let cpu_end = procstat::Sample::take(pid, &plan.pids);
    if let Some(t) = ticker {
        t.abort();
    }
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    // Every task stops only once the measured window is open, so the first
    // sample has been taken (or is about to be).
    let cpu = cpu_start
        .await
        .ok()
        .map(|start| procstat::usage(&start, &cpu_end, &plan.pids));

    Ok(Report::build(report::RunInfo {
        workload: plan.workload,
        target: plan.target.clone(),
        concurrency: plan.concurrency,
        threads: plan.threads,
        op_names: shared.op_names(),
        measure_from: ctl.measure_from,
        seeded,
        setup: plan.echo.as_ref().map(|e| e.describe()),
        tasks: all,
        first_errors: ctl.errors.messages(),
        cpu,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: LoadArgs,
    }

    fn plan(argv: &[&str]) -> Result<Plan> {
        let mut all = vec!["loadgen"];
        all.extend_from_slice(argv);
        let cli = Cli::try_parse_from(all).map_err(|e| Error::bad(e.to_string()))?;
        Plan::new(cli.args)
    }

    #[test]
    fn defaults_follow_the_workload() {
        let p = plan(&[]).unwrap();
        assert_eq!(p.workload, Workload::Read);
        assert_eq!(p.target, DEFAULT_ORCHESTRATOR);
        assert_eq!(p.concurrency, 32);
        assert_eq!(p.threads, 2);
        assert_eq!(p.keys, 10_000);
        assert_eq!(p.stop, Stop::After(Duration::from_secs(10)));
        assert_eq!(p.warmup, Duration::from_secs(1));
        let p = plan(&["--workload", "rideshare"]).unwrap();
        assert_eq!(p.target, DEFAULT_GATEWAY);
        let p = plan(&["--workload", "write", "--target", "http://h:1/"]).unwrap();
        assert_eq!(p.target, "http://h:1");
    }

    #[test]
    fn duration_or_requests() {
        let p = plan(&["--requests", "100"]).unwrap();
        assert_eq!(p.stop, Stop::Requests(100));
        let p = plan(&["--duration", "2.5"]).unwrap();
        assert_eq!(p.stop, Stop::After(Duration::from_millis(2500)));
        assert!(plan(&["--requests", "1", "--duration", "1"]).is_err());
        assert!(plan(&["--duration", "0"]).is_err());
        assert!(plan(&["--duration", "-1"]).is_err());
        assert!(plan(&["--requests", "0"]).is_err());
        assert!(plan(&["--concurrency", "0"]).is_err());
        assert!(plan(&["--threads", "0"]).is_err());
        assert!(plan(&["--keys", "0"]).is_err());
        assert!(plan(&["--target", "not a url"]).is_err());
        assert!(plan(&["--warmup", "0"]).is_ok());
    }

    #[test]
    fn amqp_echo_needs_a_broker_url() {
        assert!(plan(&["--workload", "amqp-echo"]).is_err());
        assert!(plan(&["--workload", "amqp-echo", "--amqp", "http://h:1"]).is_err());
        let p = plan(&[
            "--workload",
            "amqp-echo",
            "--amqp",
            "amqp://u:secret@h:5672/v",
            "--echo-servers",
            "3",
        ])
        .unwrap();
        assert_eq!(p.target, "amqp://***@h:5672/v");
        let e = p.echo.unwrap();
        assert_eq!((e.servers, e.prefetch, e.bytes), (3, 32, 60));
        assert!(!e.persistent);
        assert_eq!(e.url, "amqp://u:secret@h:5672/v");
        assert!(plan(&[
            "--workload",
            "amqp-echo",
            "--amqp",
            "amqp://h",
            "--echo-prefetch",
            "0"
        ])
        .is_err());
    }

    #[test]
    fn other_processes_are_named() {
        let p = plan(&["--pid", "rabbitmq=12", "--pid", "slave-2=34"]).unwrap();
        let names: Vec<_> = p.pids.iter().map(|p| (p.name.as_str(), p.pid)).collect();
        assert_eq!(names, [("rabbitmq", 12), ("slave-2", 34)]);
        assert!(plan(&["--pid", "12"]).is_err());
    }

    #[test]
    fn only_the_first_distinct_errors_are_kept() {
        let log = ErrorLog::default();
        let mut made = 0;
        for i in 0..1000 {
            log.note(|| {
                made += 1;
                format!("e{}", i / 2)
            });
        }
        assert_eq!(made, ErrorLog::LOOK);
        assert_eq!(log.messages(), vec!["e0", "e1", "e2", "e3", "e4"]);
    }
}
