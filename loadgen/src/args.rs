//! The flags of `dbaas-loadgen`, checked and resolved into a [`Plan`]: the
//! target and its default per workload, when measuring stops (after a
//! duration or a number of requests), and the `amqp-echo` setup.

use std::time::Duration;

use crate::echo;
use crate::error::{Error, Result};
use crate::procstat::NamedPid;

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

/// The flags of `dbaas-loadgen`.
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
pub(crate) enum Stop {
    After(Duration),
    Requests(u64),
}

/// The flags, checked and resolved.
#[derive(Clone, Debug)]
pub(crate) struct Plan {
    pub(crate) target: String,
    pub(crate) workload: Workload,
    pub(crate) concurrency: usize,
    pub(crate) stop: Stop,
    pub(crate) warmup: Duration,
    pub(crate) keys: u64,
    pub(crate) seed: bool,
    pub(crate) eventual: bool,
    pub(crate) threads: usize,
    pub(crate) timeout: Duration,
    pub(crate) json: bool,
    pub(crate) server_pid: Option<u32>,
    pub(crate) pids: Vec<NamedPid>,
    pub(crate) echo: Option<echo::EchoConfig>,
}

fn seconds(name: &str, secs: f64, allow_zero: bool) -> Result<Duration> {
    if !secs.is_finite() || secs < 0.0 || (!allow_zero && secs == 0.0) || secs > 1e9 {
        return Err(Error::usage(format!(
            "--{name} {secs} is not a usable number of seconds"
        )));
    }
    Ok(Duration::from_secs_f64(secs))
}

impl Plan {
    pub(crate) fn new(args: LoadArgs) -> Result<Plan> {
        let timeout = seconds("timeout", args.timeout, false)?;
        let (target, echo) = if args.workload == Workload::AmqpEcho {
            let Some(url) = args.amqp else {
                return Err(Error::usage("amqp-echo needs --amqp URL"));
            };
            if !url.starts_with("amqp://") && !url.starts_with("amqps://") {
                return Err(Error::usage(format!(
                    "--amqp {:?} is not an amqp:// URL",
                    echo::redact(&url)
                )));
            }
            if args.echo_servers == 0 || args.echo_prefetch == 0 {
                return Err(Error::usage(
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
            if !target.starts_with("http://") || target.len() == "http://".len() {
                return Err(Error::usage(format!(
                    "--target {target:?}: an http:// URL is needed"
                )));
            }
            (target, None)
        };
        if args.concurrency == 0 {
            return Err(Error::usage("--concurrency must be at least 1"));
        }
        if args.threads == 0 {
            return Err(Error::usage("--threads must be at least 1"));
        }
        if args.workload == Workload::Read && args.keys == 0 {
            return Err(Error::usage(
                "--keys must be at least 1 for the read workload",
            ));
        }
        let stop = match (args.requests, args.duration) {
            (Some(0), _) => return Err(Error::usage("--requests must be at least 1")),
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
        let mut all = vec!["dbaas-loadgen"];
        all.extend_from_slice(argv);
        let cli = Cli::try_parse_from(all).map_err(|e| Error::usage(e.to_string()))?;
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
}
