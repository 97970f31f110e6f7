//! # dbaas-loadgen
//!
//! The load generator of the `dbaas` system: it drives load against a
//! running system (or, for `amqp-echo`, against a RabbitMQ alone) and
//! reports throughput, latency and the CPU every process involved used.
//! `scripts/bench` and `scripts/bench-amqp` run it; the figures they
//! produced are in `BENCHMARKS.md`.
//!
//! ```text
//! dbaas-loadgen --workload read --concurrency 32 --duration 10        # orchestrator at 127.0.0.1:8090
//! dbaas-loadgen --workload rideshare --target http://127.0.0.1:8080 --requests 50000
//! dbaas-loadgen --workload amqp-echo --amqp amqp://guest:guest@127.0.0.1:5672/<vhost>
//! dbaas-loadgen --help
//! ```
//!
//! ## Workloads
//!
//! - `read`: `db/read` point lookups (`get` on `users`) against the
//!   orchestrator, over rows `lg-0` .. `lg-<keys-1>` seeded first through
//!   `db/write` batches (idempotent: rows left by an earlier run are
//!   replaced, not refused); each answer must be 200 and hold the row.
//!   `--eventual` asks for eventual consistency.
//! - `write`: `db/write` inserts of unique users (a fresh prefix per run, so
//!   reruns never collide; anything but 200, a 409 too, is an error).
//! - `rideshare`: a mix of RideShare calls through the gateway, per virtual
//!   user: add users (10%), create rides (20%), list upcoming rides (40%),
//!   join rides (15%) and show ride details (15%), each answer checked
//!   against the contract (see `workload.rs`).
//! - `amqp-echo`: no DBaaS at all, but the raw request/reply limit of the
//!   RabbitMQ at `--amqp`: echo servers and clients doing over lapin what
//!   the slaves and the orchestrator do for a read, minus the storage and
//!   the HTTP (see `echo.rs`).
//!
//! ## How it measures
//!
//! Each of `--concurrency` tasks keeps one request in flight at a time
//! (closed loop) over a keep-alive connection of its own, on a runtime of `--threads`
//! threads. Every answer's status is checked against the contract; anything
//! else is an error, and the first few distinct ones are shown. Latency runs
//! from just before a request is sent until its whole body has arrived and
//! goes into one HDR histogram (3 significant digits) per task and
//! operation, merged at the end; failed requests count too. Requests of the
//! `--warmup` are not measured. The measured window ends after
//! `--duration` seconds or `--requests` requests.
//!
//! The client is kept lean so it does not hide the server's speed: request
//! bodies of `read` are serialized once before the run, URLs are parsed
//! once, the HTTP/1.1 client is a few hundred lines of our own (`http1`,
//! a third of reqwest's CPU per request), and nothing is allocated per
//! request but the unique body of a `write` or `rideshare` request.
//!
//! ## What it reports
//!
//! A few lines of text (the run, requests and errors, throughput, latency
//! percentiles, per operation for `rideshare`, errors by kind), and with
//! `--json` the same as one JSON object on the last line of stdout. With
//! `--server-pid` the CPU time of the load generator and of the server (and
//! of each server thread) over the measured window is read from `/proc`
//! (Linux) and reported, with `--pid NAME=PID` that of other processes too
//! (workers, the broker), and what the rest of the machine used besides. A
//! run in which every measured request failed ends with an error.
//!
//! ## Modules
//!
//! - `args`: the flags, checked and resolved into a plan;
//! - `drive`: the virtual users, the measured window, the progress bar;
//! - `http1`: the HTTP/1.1 client of the virtual users;
//! - `workload`: what each workload sends and which answers count (the
//!   RideShare mix in `workload/rideshare.rs`, the seeding of `read` in
//!   `workload/seed.rs`);
//! - `echo`: the `amqp-echo` client, its echo servers in `echo/server.rs`;
//! - `report`: per-task counts merged into the report;
//! - `procstat`: CPU time from `/proc`.
//!
//! It needs of the `dbaas` library only the RideShare areas and timestamps
//! (and, in its tests, the DB schema its request bodies must satisfy); it
//! speaks to the system over HTTP and to RabbitMQ through lapin, as any
//! client would.

mod args;
mod drive;
mod echo;
mod error;
mod http1;
mod procstat;
mod report;
mod workload;

pub use args::{LoadArgs, Workload, DEFAULT_GATEWAY, DEFAULT_ORCHESTRATOR};
pub use error::{Error, Result};
pub use procstat::NamedPid;

use args::Plan;

/// Runs the load generator on its own runtime and prints the result.
pub fn run(args: LoadArgs) -> Result<()> {
    let plan = Plan::new(args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(plan.threads)
        .thread_name("loadgen")
        .enable_all()
        .build()
        .map_err(|e| Error::Internal(format!("cannot start the runtime: {e}")))?;
    let report = runtime.block_on(drive::drive(&plan))?;
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
