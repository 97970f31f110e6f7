//! Counting and reporting: per-task statistics, merged into one report
//! printed as text and, on demand, as one JSON object.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::args::Workload;
use crate::procstat::CpuUsage;

/// How a request failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Failure {
    /// No answer (refused, reset, timed out).
    Transport,
    /// A status the contract does not give for the request.
    Status(u16),
    /// The right status with a wrong body or headers.
    Body(u16),
    /// `amqp-echo`: a reply that is not the request's body.
    Reply,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Transport => f.write_str("transport"),
            Failure::Status(s) => write!(f, "status {s}"),
            Failure::Body(s) => write!(f, "bad answer {s}"),
            Failure::Reply => f.write_str("wrong reply"),
        }
    }
}

/// A latency histogram in microseconds; it grows to the largest value seen.
fn histogram() -> Histogram<u64> {
    Histogram::new(3).expect("3 significant figures are supported")
}

struct OpStats {
    latency: Histogram<u64>,
    requests: u64,
    errors: u64,
}

/// What one virtual user saw.
pub(crate) struct TaskStats {
    ops: Vec<OpStats>,
    failures: Vec<(Failure, u64)>,
    warmup_requests: u64,
    warmup_errors: u64,
    /// When its last measured request ended.
    pub(crate) last_end: Option<Instant>,
}

impl TaskStats {
    pub(crate) fn new(ops: usize) -> TaskStats {
        TaskStats {
            ops: (0..ops)
                .map(|_| OpStats {
                    latency: histogram(),
                    requests: 0,
                    errors: 0,
                })
                .collect(),
            failures: Vec::new(),
            warmup_requests: 0,
            warmup_errors: 0,
            last_end: None,
        }
    }

    /// A measured request of operation `op` (failed ones too).
    pub(crate) fn record(&mut self, op: usize, took: Duration, outcome: Result<(), Failure>) {
        let s = &mut self.ops[op];
        s.requests += 1;
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        // Grows the histogram as needed; clamps only beyond its limits.
        if s.latency.record(us).is_err() {
            s.latency.saturating_record(us);
        }
        if let Err(f) = outcome {
            s.errors += 1;
            match self.failures.iter_mut().find(|(k, _)| *k == f) {
                Some((_, n)) => *n += 1,
                None => self.failures.push((f, 1)),
            }
        }
    }

    pub(crate) fn record_warmup(&mut self, outcome: Result<(), Failure>) {
        self.warmup_requests += 1;
        if outcome.is_err() {
            self.warmup_errors += 1;
        }
    }
}

/// Latency figures in milliseconds.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p99_9: f64,
    pub max: f64,
    pub mean: f64,
}

fn ms(us: u64) -> f64 {
    round3(us as f64 / 1000.0)
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

impl Latency {
    fn of(h: &Histogram<u64>) -> Latency {
        if h.is_empty() {
            return Latency::default();
        }
        Latency {
            p50: ms(h.value_at_quantile(0.50)),
            p90: ms(h.value_at_quantile(0.90)),
            p99: ms(h.value_at_quantile(0.99)),
            p99_9: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
            mean: round3(h.mean() / 1000.0),
        }
    }
}

/// One operation of a mixed workload.
#[derive(Clone, Debug, Serialize)]
pub struct OpReport {
    pub op: &'static str,
    pub requests: u64,
    pub errors: u64,
    pub throughput_rps: f64,
    pub latency_ms: Latency,
}

/// The result of a run.
#[derive(Debug, Serialize)]
pub struct Report {
    pub workload: &'static str,
    pub target: String,
    pub concurrency: usize,
    pub threads: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seeded_rows: Option<u64>,
    /// What was set up for the run (`amqp-echo`: its servers and queues).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub setup: Option<String>,
    /// From the end of the warmup to the end of the last measured request.
    pub duration_s: f64,
    /// Measured requests, failed ones included.
    pub requests: u64,
    pub errors: u64,
    pub throughput_rps: f64,
    /// Of every measured request, failed ones included.
    pub latency_ms: Latency,
    /// Per operation, for the mixed workload.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ops: Vec<OpReport>,
    pub errors_by_kind: BTreeMap<String, u64>,
    /// The first few error messages (warmup included).
    pub first_errors: Vec<String>,
    pub warmup_requests: u64,
    pub warmup_errors: u64,
    /// CPU over the measured window (Linux only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuUsage>,
}

/// Everything a report is made of.
pub(crate) struct RunInfo {
    pub workload: Workload,
    pub target: String,
    pub concurrency: usize,
    pub threads: usize,
    pub op_names: &'static [&'static str],
    pub measure_from: Instant,
    pub seeded: Option<u64>,
    pub setup: Option<String>,
    pub tasks: Vec<TaskStats>,
    pub first_errors: Vec<String>,
    pub cpu: Option<CpuUsage>,
}

impl Report {
    pub(crate) fn build(run: RunInfo) -> Report {
        let mut ops: Vec<OpStats> = run
            .op_names
            .iter()
            .map(|_| OpStats {
                latency: histogram(),
                requests: 0,
                errors: 0,
            })
            .collect();
        let mut failures: BTreeMap<Failure, u64> = BTreeMap::new();
        let (mut warmup_requests, mut warmup_errors) = (0, 0);
        let mut end = run.measure_from;
        for t in &run.tasks {
            for (all, mine) in ops.iter_mut().zip(&t.ops) {
                all.requests += mine.requests;
                all.errors += mine.errors;
                // Auto-resizing histograms of the same precision always add.
                let _ = all.latency.add(&mine.latency);
            }
            for &(f, n) in &t.failures {
                *failures.entry(f).or_default() += n;
            }
            warmup_requests += t.warmup_requests;
            warmup_errors += t.warmup_errors;
            if let Some(e) = t.last_end {
                end = end.max(e);
            }
        }
        let secs = (end - run.measure_from).as_secs_f64();
        let rate = |n: u64| {
            if secs > 0.0 {
                (n as f64 / secs * 10.0).round() / 10.0
            } else {
                0.0
            }
        };
        let mut total = histogram();
        for op in &ops {
            let _ = total.add(&op.latency);
        }
        let requests = ops.iter().map(|o| o.requests).sum();
        let errors = ops.iter().map(|o| o.errors).sum();
        let per_op = if ops.len() > 1 {
            run.op_names
                .iter()
                .zip(&ops)
                .map(|(&op, s)| OpReport {
                    op,
                    requests: s.requests,
                    errors: s.errors,
                    throughput_rps: rate(s.requests),
                    latency_ms: Latency::of(&s.latency),
                })
                .collect()
        } else {
            Vec::new()
        };
        Report {
            workload: run.workload.name(),
            target: run.target,
            concurrency: run.concurrency,
            threads: run.threads,
            seeded_rows: run.seeded,
            setup: run.setup,
            duration_s: round3(secs),
            requests,
            errors,
            throughput_rps: rate(requests),
            latency_ms: Latency::of(&total),
            ops: per_op,
            errors_by_kind: failures
                .into_iter()
                .map(|(f, n)| (f.to_string(), n))
                .collect(),
            first_errors: run.first_errors,
            warmup_requests,
            warmup_errors,
            cpu: run.cpu,
        }
    }

    /// The report as one line of JSON.
    pub fn json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!(r#"{{"error":"{e}"}}"#))
    }

    /// The report for people.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let w = &mut out;
        let _ = writeln!(
            w,
            "workload    {} against {} (concurrency {}, {} loadgen threads)",
            self.workload, self.target, self.concurrency, self.threads
        );
        if let Some(n) = self.seeded_rows {
            let _ = writeln!(w, "seeded      {n} rows");
        }
        if let Some(s) = &self.setup {
            let _ = writeln!(w, "setup       {s}");
        }
        let _ = writeln!(
            w,
            "requests    {} in {:.3} s, {} errors ({} more in the warmup, {} errors)",
            self.requests, self.duration_s, self.errors, self.warmup_requests, self.warmup_errors
        );
        let _ = writeln!(w, "throughput  {:.1} req/s", self.throughput_rps);
        let l = &self.latency_ms;
        let _ = writeln!(
            w,
            "latency ms  p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}  (mean {:.3})",
            l.p50, l.p90, l.p99, l.p99_9, l.max, l.mean
        );
        if !self.ops.is_empty() {
            let _ = writeln!(
                w,
                "  {:<14}{:>10}{:>8}{:>10}{:>9}{:>9}{:>9}",
                "op", "requests", "errors", "req/s", "p50 ms", "p99 ms", "max ms"
            );
            for o in &self.ops {
                let _ = writeln!(
                    w,
                    "  {:<14}{:>10}{:>8}{:>10.1}{:>9.3}{:>9.3}{:>9.3}",
                    o.op,
                    o.requests,
                    o.errors,
                    o.throughput_rps,
                    o.latency_ms.p50,
                    o.latency_ms.p99,
                    o.latency_ms.max
                );
            }
        }
        if !self.errors_by_kind.is_empty() {
            let kinds: Vec<String> = self
                .errors_by_kind
                .iter()
                .map(|(k, n)| format!("{k}: {n}"))
                .collect();
            let _ = writeln!(w, "errors      {}", kinds.join(", "));
        }
        if !self.first_errors.is_empty() {
            let _ = writeln!(w, "first errors");
        }
        for e in &self.first_errors {
            let _ = writeln!(w, "  {e}");
        }
        if let Some(cpu) = &self.cpu {
            let _ = write!(w, "{cpu}");
        }
        out
    }
}

#[cfg(test)]
mod tests;
