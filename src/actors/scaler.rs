//! The Scaler: sets the number of slaves from the read load.
//!
//! It counts the clients' db reads (each request once, whatever its
//! retries: [`ReadCounter`]). Its clock starts at the first read; at the
//! end of every window (120 s by default) it sets the number of slaves to
//! [`target_slaves`] of the reads in that window, `max(1, ceil(reads /
//! 20))` within the configured bounds, and starts counting again.
//!
//! Scaling up starts workers through the runtime, under ids the
//! ElectionWatcher hands out; a new slave takes a snapshot and catches up
//! before it consumes `readQ`. Scaling down stops the slaves with the
//! highest pids on purpose: each is announced before it goes (so the
//! watcher replaces none of them), stops consuming, settles what it holds
//! (reads it took and did not answer go back to the others) and deletes
//! its sync queue. The master is never stopped, nor is anything done while
//! no master leads. Every decision, with its reason, is logged, kept as an
//! event of the cluster view, and shown in `GET /api/v1/cluster`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use actix::prelude::*;
use serde::Serialize;

use super::watcher::{ElectionWatcher, GetCluster, Note, ReserveId, Retiring};
use crate::coord::election::ReportedRole;
use crate::error::{Error, Result};
use crate::runtime::{WorkerRuntime, WorkerSpec};

/// How often the Scaler looks for the first read of a window.
const POLL: Duration = Duration::from_millis(100);

/// When and how far to scale.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct ScalePolicy {
    /// How long reads are counted before each decision.
    #[serde(serialize_with = "secs")]
    pub window: Duration,
    /// Reads in a window one slave is there for.
    pub reads_per_slave: u64,
    pub min_slaves: usize,
    /// None: no maximum (the original rule).
    pub max_slaves: Option<usize>,
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

impl Default for ScalePolicy {
    fn default() -> Self {
        ScalePolicy {
            window: Duration::from_secs(120),
            reads_per_slave: 20,
            min_slaves: 1,
            max_slaves: None,
        }
    }
}

impl ScalePolicy {
    /// Refuses a policy that cannot work.
    pub fn check(&self) -> Result<()> {
        if self.window.is_zero() {
            return Err(Error::bad("the scale window must be longer than zero"));
        }
        if self.reads_per_slave == 0 {
            return Err(Error::bad("reads per slave must be at least 1"));
        }
        if self.min_slaves == 0 {
            return Err(Error::bad("at least one slave is needed to serve reads"));
        }
        if let Some(max) = self.max_slaves.filter(|&m| m < self.min_slaves) {
            return Err(Error::bad(format!(
                "max slaves ({max}) is below min slaves ({})",
                self.min_slaves
            )));
        }
        Ok(())
    }
}

/// How many slaves `reads` in one window call for: one per
/// `reads_per_slave` (rounded up), at least one, within the bounds.
pub fn target_slaves(reads: u64, policy: &ScalePolicy) -> usize {
    let want = reads.div_ceil(policy.reads_per_slave.max(1)).max(1);
    let want = usize::try_from(want).unwrap_or(usize::MAX);
    let min = policy.min_slaves.max(1);
    let max = policy.max_slaves.unwrap_or(usize::MAX).max(min);
    want.clamp(min, max)
}

/// Client db reads, each request once: the orchestrator's handle counts,
/// the Scaler takes the count at the end of each window.
#[derive(Clone, Debug, Default)]
pub struct ReadCounter(Arc<AtomicU64>);

impl ReadCounter {
    pub fn add(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    pub fn peek(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    /// The count so far, and counting again from zero.
    pub fn take(&self) -> u64 {
        self.0.swap(0, Ordering::Relaxed)
    }
}

/// One decision, as the cluster view shows it.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct ScaleDecision {
    /// Unix milliseconds.
    pub at: u64,
    pub reads: u64,
    /// Slaves before, and the number decided.
    pub from: usize,
    pub to: usize,
    /// Workers started and stopped for it.
    pub started: Vec<u64>,
    pub stopped: Vec<u64>,
    pub reason: String,
}

/// What the cluster view shows of the Scaler.
#[derive(Clone, Debug, Serialize)]
pub struct ScalerView {
    pub policy: ScalePolicy,
    /// Reads counted in the window under way.
    pub reads: u64,
    /// Seconds until the window under way ends (none before the first
    /// read).
    pub next_decision_in: Option<f64>,
    pub last: Option<ScaleDecision>,
}

/// Scales the slaves with the read load.
pub struct Scaler {
    cluster: u64,
    policy: ScalePolicy,
    reads: ReadCounter,
    runtime: Arc<dyn WorkerRuntime>,
    watcher: Addr<ElectionWatcher>,
    /// When the window under way began (at its first read).
    window_from: Option<Instant>,
    last: Option<ScaleDecision>,
    busy: bool,
    stopped: bool,
    /// Told once the decision under way is carried out (a stop waits).
    idle: Vec<tokio::sync::oneshot::Sender<()>>,
}

impl Scaler {
    pub fn new(
        cluster: u64,
        policy: ScalePolicy,
        reads: ReadCounter,
        runtime: Arc<dyn WorkerRuntime>,
        watcher: Addr<ElectionWatcher>,
    ) -> Self {
        Scaler {
            cluster,
            policy,
            reads,
            runtime,
            watcher,
            window_from: None,
            last: None,
            busy: false,
            stopped: false,
            idle: Vec::new(),
        }
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        if self.stopped || self.busy {
            return;
        }
        match self.window_from {
            None if self.reads.peek() > 0 => self.window_from = Some(Instant::now()),
            Some(from) if from.elapsed() >= self.policy.window => {
                // The next window follows at once.
                self.window_from = Some(from + self.policy.window);
                let reads = self.reads.take();
                self.decide(ctx, reads, |_| ());
            }
            _ => {}
        }
    }

    /// Sets the number of slaves for `reads`, then calls `done`.
    fn decide(
        &mut self,
        ctx: &mut Context<Self>,
        reads: u64,
        done: impl FnOnce(Result<ScaleDecision>) + 'static,
    ) {
        self.busy = true;
        let to = target_slaves(reads, &self.policy);
        let work = scale(
            self.cluster,
            self.runtime.clone(),
            self.watcher.clone(),
            self.policy,
            reads,
            to,
        );
        ctx.spawn(work.into_actor(self).map(move |res, act, ctx| {
            act.busy = false;
            if act.stopped {
                for tx in act.idle.drain(..) {
                    let _ = tx.send(());
                }
                ctx.stop();
            }
            match &res {
                Ok(d) => {
                    tracing::debug!(
                        reads = d.reads,
                        from = d.from,
                        to = d.to,
                        started = ?d.started,
                        stopped = ?d.stopped,
                        "scaler: {}",
                        d.reason
                    );
                    act.watcher.do_send(Note {
                        kind: "scale",
                        detail: d.reason.clone(),
                    });
                    act.last = Some(d.clone());
                }
                Err(e) => {
                    tracing::warn!(reads, error = %e, "scaler: no change this window");
                    act.watcher.do_send(Note {
                        kind: "scale",
                        detail: format!("{reads} reads: no change ({e})"),
                    });
                }
            }
            done(res);
        }));
    }
}

/// Now, in Unix milliseconds (the cluster view's clock).
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Starts or stops slaves until there are `to`.
async fn scale(
    cluster: u64,
    runtime: Arc<dyn WorkerRuntime>,
    watcher: Addr<ElectionWatcher>,
    policy: ScalePolicy,
    reads: u64,
    to: usize,
) -> Result<ScaleDecision> {
    let view = watcher
        .send(GetCluster)
        .await
        .map_err(|e| Error::Unavailable(format!("election watcher: {e}")))?;
    let master = view
        .master
        .filter(|m| {
            view.workers
                .iter()
                .any(|w| w.pid == *m && w.role == ReportedRole::Master)
        })
        .ok_or_else(|| Error::Unavailable("no master leads now".into()))?;
    let listed: Vec<(u64, u64)> = runtime
        .list()
        .iter()
        .filter(|w| w.pid != master)
        .map(|w| (w.pid, w.id))
        .collect();
    // Replacements the watcher is starting count too.
    let from = listed.len() + view.starting;
    let per = policy.reads_per_slave;
    let mut decision = ScaleDecision {
        at: now_ms(),
        reads,
        from,
        to,
        started: Vec::new(),
        stopped: Vec::new(),
        reason: String::new(),
    };
    let why = format!(
        "{reads} reads in {:.0} s at {per} a slave: {to} slave(s)",
        policy.window.as_secs_f64()
    );
    if to > from {
        for _ in from..to {
            let id = watcher
                .send(ReserveId)
                .await
                .map_err(|e| Error::Unavailable(format!("election watcher: {e}")))?;
            runtime.start(WorkerSpec { id, cluster }).await?;
            decision.started.push(id);
        }
        decision.reason = format!("{why}; started {:?}", decision.started);
    } else if to < from {
        for _ in to..from {
            // Looked at afresh before each stop: an election meanwhile
            // may have made a slave the master, which is never stopped.
            let Some((id, pid)) = surplus_slave(runtime.as_ref(), &watcher).await? else {
                break;
            };
            // The watcher agrees (it is no master, no election runs) and
            // from now on never elects it; else no more stops this time.
            let agreed = watcher
                .send(Retiring(pid))
                .await
                .map_err(|e| Error::Unavailable(format!("election watcher: {e}")))?;
            if !agreed {
                break;
            }
            if let Err(e) = runtime.retire(id).await {
                tracing::warn!(worker = id, error = %e, "scaler: stop failed");
            }
            decision.stopped.push(id);
        }
        decision.reason = format!("{why}; stopped {:?}", decision.stopped);
    } else {
        decision.reason = format!("{why}; no change");
    }
    Ok(decision)
}

/// The slave to stop next (its id and pid), as the cluster is now: never
/// the master; first a worker that runs but is not registered (hung, its
/// session ended), else the registered slave with the highest pid. None
/// while no master leads.
async fn surplus_slave(
    runtime: &dyn WorkerRuntime,
    watcher: &Addr<ElectionWatcher>,
) -> Result<Option<(u64, u64)>> {
    let view = watcher
        .send(GetCluster)
        .await
        .map_err(|e| Error::Unavailable(format!("election watcher: {e}")))?;
    let Some(master) = view.master else {
        return Ok(None);
    };
    let role = |pid: u64| view.workers.iter().find(|w| w.pid == pid).map(|w| w.role);
    let listed = runtime.list();
    let candidates = listed.iter().filter(|w| w.pid != master);
    let hung = candidates
        .clone()
        .filter(|w| role(w.pid).is_none())
        .max_by_key(|w| w.pid);
    let slave = candidates
        .filter(|w| role(w.pid) == Some(ReportedRole::Slave))
        .max_by_key(|w| w.pid);
    Ok(hung.or(slave).map(|w| (w.id, w.pid)))
}

impl Actor for Scaler {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        tracing::info!(
            window_s = self.policy.window.as_secs_f64(),
            reads_per_slave = self.policy.reads_per_slave,
            min = self.policy.min_slaves,
            max = self.policy.max_slaves,
            "scaler starting"
        );
        ctx.run_interval(POLL, |act, ctx| act.tick(ctx));
    }
}

/// Decide now on the reads counted so far (the window starts again), and
/// answer the decision once it has been carried out.
#[derive(Message)]
#[rtype(result = "Result<ScaleDecision>")]
pub struct ScaleNow;

impl Handler<ScaleNow> for Scaler {
    type Result = ResponseFuture<Result<ScaleDecision>>;

    fn handle(&mut self, _: ScaleNow, ctx: &mut Context<Self>) -> Self::Result {
        if self.stopped {
            return Box::pin(async { Err(Error::Unavailable("the scaler stopped".into())) });
        }
        if self.busy {
            return Box::pin(async { Err(Error::Unavailable("the scaler is busy".into())) });
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.window_from = None;
        let reads = self.reads.take();
        self.decide(ctx, reads, move |res| {
            let _ = tx.send(res);
        });
        Box::pin(async move {
            rx.await
                .unwrap_or_else(|_| Err(Error::Unavailable("the scaler stopped".into())))
        })
    }
}

/// What the Scaler is doing, for the cluster view.
#[derive(Message)]
#[rtype(result = "ScalerView")]
pub struct GetScaler;

impl Handler<GetScaler> for Scaler {
    type Result = MessageResult<GetScaler>;

    fn handle(&mut self, _: GetScaler, _ctx: &mut Context<Self>) -> Self::Result {
        let next = self.window_from.map(|from| {
            self.policy
                .window
                .saturating_sub(from.elapsed())
                .as_secs_f64()
        });
        MessageResult(ScalerView {
            policy: self.policy,
            reads: self.reads.peek(),
            next_decision_in: next,
            last: self.last.clone(),
        })
    }
}

/// Stop scaling (the cluster is shutting down); answers once no decision
/// is being carried out.
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopScaling;

impl Handler<StopScaling> for Scaler {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: StopScaling, ctx: &mut Context<Self>) -> Self::Result {
        self.stopped = true;
        if !self.busy {
            ctx.stop();
            return Box::pin(async {});
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.idle.push(tx);
        Box::pin(async move {
            let _ = rx.await;
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(per: u64, min: usize, max: usize) -> ScalePolicy {
        ScalePolicy {
            window: Duration::from_secs(120),
            reads_per_slave: per,
            min_slaves: min,
            max_slaves: Some(max),
        }
    }

    #[test]
    fn one_slave_per_twenty_reads_at_least_one_within_bounds() {
        let table: &[(u64, ScalePolicy, usize)] = &[
            (0, policy(20, 1, 8), 1),
            (1, policy(20, 1, 8), 1),
            (20, policy(20, 1, 8), 1),
            (21, policy(20, 1, 8), 2),
            (40, policy(20, 1, 8), 2),
            (45, policy(20, 1, 8), 3),
            (60, policy(20, 1, 8), 3),
            (61, policy(20, 1, 8), 4),
            (10_000, policy(20, 1, 8), 8),
            (0, policy(20, 2, 8), 2),
            (45, policy(20, 1, 2), 2),
            (45, policy(10, 1, 8), 5),
            (u64::MAX, policy(1, 1, usize::MAX), usize::MAX),
            (45, policy(20, 4, 2), 4),
            (5, policy(0, 0, 0), 1),
            // By default, the original rule: no maximum.
            (10_000, ScalePolicy::default(), 500),
            (0, ScalePolicy::default(), 1),
        ];
        for (reads, p, want) in table {
            assert_eq!(target_slaves(*reads, p), *want, "{reads} reads, {p:?}");
        }
    }

    #[test]
    fn impossible_policies_are_refused() {
        assert!(ScalePolicy::default().check().is_ok());
        assert!(policy(0, 1, 8).check().is_err());
        assert!(policy(20, 0, 8).check().is_err());
        assert!(policy(20, 3, 2).check().is_err());
        let zero = ScalePolicy {
            window: Duration::ZERO,
            ..ScalePolicy::default()
        };
        assert!(zero.check().is_err());
    }
}
