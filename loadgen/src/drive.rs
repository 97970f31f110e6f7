//! Driving a run: one task per virtual user in a closed loop (one request
//! in flight each), the warmup and the measured window, the progress bar,
//! the CPU samples at both ends of the window, and the merge of what every
//! task saw into one [`Report`].

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use crate::args::{Plan, Stop, Workload};
use crate::error::{Error, Result};
use crate::http1::{Conn, Origin};
use crate::report::{self, Report, TaskStats};
use crate::workload::{self, Shared, Task};
use crate::{echo, procstat};

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

/// Sets up the workload, runs it and tears down what it set up.
pub(crate) async fn drive(plan: &Plan) -> Result<Report> {
    let bar = progress_bar(plan);
    let mut echo = None;
    let (shared, origin) = match &plan.echo {
        Some(cfg) => {
            let rig = echo::start(cfg, &workload::run_prefix()).await?;
            let shared = Shared::Echo(rig.client.clone());
            echo = Some(rig);
            (shared, None)
        }
        None => {
            let origin = Origin::resolve(&plan.target)
                .await
                .map_err(|e| Error::usage(format!("--target: {e}")))?;
            let shared = Shared::new(plan.workload, &origin, plan.keys, plan.eventual)?;
            (shared, Some(origin))
        }
    };
    let result = run_tasks(plan, origin, bar, &shared).await;
    if let Some(mut rig) = echo {
        rig.stop().await;
    }
    result
}

async fn run_tasks(
    plan: &Plan,
    origin: Option<Origin>,
    bar: Option<ProgressBar>,
    shared: &Shared,
) -> Result<Report> {
    // Each virtual user has a connection of its own (`amqp-echo` has no
    // origin and its users never use theirs).
    let conn = || {
        let origin = origin.clone().unwrap_or_else(Origin::unused);
        Conn::new(origin, plan.timeout)
    };
    let mut seeded = None;
    if plan.workload == Workload::Read && plan.seed {
        if let Some(bar) = &bar {
            bar.set_message(format!("seeding {} rows", plan.keys));
            bar.enable_steady_tick(Duration::from_millis(100));
        }
        workload::seed(&mut conn(), plan.keys).await?;
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
            let task = Task::new(shared, conn(), i);
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
            Err(e) => return Err(Error::Internal(format!("a load task failed: {e}"))),
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
