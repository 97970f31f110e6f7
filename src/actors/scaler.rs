//! The Scaler: sets the number of slaves from the read load.
//!
//! The decisions are [`crate::core::scaler`]'s: this actor only drives
//! that state machine. It feeds it the time, the clients' db reads (each
//! request once, whatever its retries: [`ReadCounter`]) and what the
//! ElectionWatcher and the runtime say of the cluster, and carries out its
//! effects: a new slave is started under an id the watcher hands out
//! (`ReserveId`), takes a snapshot and catches up before it consumes
//! `readQ`; a surplus slave is stopped for good once the watcher agrees
//! (`Retiring`), settling what it holds first; every decision is logged
//! and kept as an event of the cluster view (`Note`) the moment it is
//! made, and again once carried out. `GET /api/v1/cluster` shows the
//! policy, the window under way and the last decision with its progress.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use tokio::sync::oneshot;

use super::lease::Lease;
use super::now_ms;
use super::watcher::{ClusterView, ElectionWatcher, GetCluster, Note, ReserveId, Retiring};
use crate::coord::election::ReportedRole;
pub use crate::core::scaler::{
    target_slaves, Limit, ScaleDecision, ScalePolicy, ScalerView, DEFAULT_MAX_SLAVES,
    DEFAULT_MAX_STEP,
};
use crate::core::scaler::{ClusterSnapshot, Effect, Input, Member, MemberState, ScalerCore};
use crate::error::{Error, Result};
use crate::runtime::{WorkerInfo, WorkerRuntime, WorkerSpec};

/// How often the core is given the time and the reads (the first read of
/// a window, its end, slaves catching up are seen this soon).
const POLL: Duration = Duration::from_millis(100);

pub use super::counter::ReadCounter;

/// Scales the slaves with the read load.
pub struct Scaler {
    cluster: u64,
    core: ScalerCore,
    reads: ReadCounter,
    /// The other orchestrators' reads (the leading one scales for all).
    others: ReadCounter,
    /// Held while this orchestrator leads: only then does it scale.
    lease: Arc<Lease>,
    /// Whether it led at the last poll.
    leading: bool,
    runtime: Arc<dyn WorkerRuntime>,
    watcher: Addr<ElectionWatcher>,
    /// The core's clock: Unix milliseconds at the start, then monotonic
    /// (it never goes back, and decisions show in the cluster view's time).
    epoch: (Instant, u64),
    next_ticket: u64,
    /// Who waits for the decision they asked for, by ticket.
    asked: HashMap<u64, oneshot::Sender<Result<ScaleDecision>>>,
    /// Told once the Scaler has stopped.
    stopping: Vec<oneshot::Sender<()>>,
}

impl Scaler {
    /// `reads`: this orchestrator's; `others`: the other orchestrators'
    /// (as the watcher hears them); `lease`: held while this orchestrator
    /// leads.
    pub fn new(
        cluster: u64,
        policy: ScalePolicy,
        (reads, others): (ReadCounter, ReadCounter),
        lease: Arc<Lease>,
        runtime: Arc<dyn WorkerRuntime>,
        watcher: Addr<ElectionWatcher>,
    ) -> Self {
        Scaler {
            cluster,
            core: ScalerCore::new(policy),
            reads,
            others,
            lease,
            leading: false,
            runtime,
            watcher,
            epoch: (Instant::now(), now_ms()),
            next_ticket: 0,
            asked: HashMap::new(),
            stopping: Vec::new(),
        }
    }

    /// This orchestrator begins to lead (again): what an earlier spell
    /// of leading left (a window under way, decisions it could not carry
    /// out) is dropped, and the first window starts now, on the workers
    /// it has just brought up.
    fn begin_leading(&mut self) {
        self.core = ScalerCore::new(*self.core.policy());
        for (_, tx) in self.asked.drain() {
            let e = Error::Unavailable("leadership changed; ask again".into());
            let _ = tx.send(Err(e));
        }
    }

    /// Every orchestrator's client reads so far.
    fn all_reads(&self) -> u64 {
        self.reads.peek() + self.others.peek()
    }

    fn now(&self) -> u64 {
        let elapsed = u64::try_from(self.epoch.0.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.epoch.1.saturating_add(elapsed)
    }

    /// Gives the core `input` and carries out what it answers.
    fn feed(&mut self, ctx: &mut Context<Self>, input: Input) {
        let now = self.now();
        for effect in self.core.on(input, now) {
            self.carry_out(ctx, effect);
        }
    }

    fn carry_out(&mut self, ctx: &mut Context<Self>, effect: Effect) {
        match effect {
            Effect::Observe => self.observe(ctx),
            Effect::StartSlave => self.start_slave(ctx),
            Effect::Retire { id, pid } => self.retire(ctx, id, pid),
            Effect::Answer { tickets, result } => {
                for t in tickets {
                    if let Some(tx) = self.asked.remove(&t) {
                        let _ = tx.send(result.clone().map_err(Error::Unavailable));
                    }
                }
            }
            Effect::Stopped => {
                for tx in self.stopping.drain(..) {
                    let _ = tx.send(());
                }
                ctx.stop();
            }
            said => self.say(said),
        }
    }

    /// Logs a decision and shows it as an event of the cluster view: as
    /// it is made (`scale`), and once carried out (`scaled`).
    fn say(&self, effect: Effect) {
        match effect {
            Effect::Announce(d) => {
                tracing::info!(
                    reads = d.reads,
                    from = d.from,
                    to = d.to,
                    "scaler: {}",
                    d.reason
                );
                self.note("scale", d.reason);
            }
            Effect::NoDecision { detail } => {
                tracing::warn!("scaler: {detail}");
                self.note("scale", detail);
            }
            Effect::Finished(d) => {
                let Some(outcome) = d.outcome else { return };
                tracing::info!(reads = d.reads, to = d.to, "scaler: carried out: {outcome}");
                let detail = format!("{} reads, {} slave(s): {outcome}", d.reads, d.to);
                self.note("scaled", detail);
            }
            _ => {}
        }
    }

    fn note(&self, kind: &'static str, detail: String) {
        self.watcher.do_send(Note { kind, detail });
    }

    /// Looks at the cluster: the watcher's view, and the runtime's list
    /// read once the view is back (so a start that has ended is in it).
    fn observe(&mut self, ctx: &mut Context<Self>) {
        let view = self.watcher.send(GetCluster);
        ctx.spawn(view.into_actor(self).map(|res, act, ctx| {
            let input = match res {
                Ok(view) => Input::Cluster(snapshot(&view, &act.runtime.list())),
                Err(e) => Input::NoCluster(format!("election watcher: {e}")),
            };
            act.feed(ctx, input);
        }));
    }

    fn start_slave(&mut self, ctx: &mut Context<Self>) {
        if !self.lease.valid() {
            let error = "this orchestrator does not lead now".to_owned();
            self.feed(ctx, Input::StartFailed { id: None, error });
            return;
        }
        let (watcher, runtime, cluster) =
            (self.watcher.clone(), self.runtime.clone(), self.cluster);
        let start = async move {
            let id = watcher
                .send(ReserveId)
                .await
                .map_err(|e| Input::StartFailed {
                    id: None,
                    error: format!("election watcher: {e}"),
                })?;
            match runtime.start(WorkerSpec { id, cluster }).await {
                Ok(_) => Ok(Input::Started { id }),
                Err(e) => Err(Input::StartFailed {
                    id: Some(id),
                    error: e.to_string(),
                }),
            }
        };
        ctx.spawn(start.into_actor(self).map(|res, act, ctx| {
            if let Err(Input::StartFailed { id, error }) = &res {
                tracing::warn!(worker = ?id, %error, "scaler: a slave did not start");
            }
            act.feed(ctx, res.unwrap_or_else(|input| input));
        }));
    }

    /// Stops slave `id` for good once the watcher agrees: it is no master,
    /// no election runs, and from now on the watcher never elects it.
    fn retire(&mut self, ctx: &mut Context<Self>, id: u64, pid: u64) {
        if !self.lease.valid() {
            self.feed(ctx, Input::RetireRefused { id });
            return;
        }
        let (watcher, runtime) = (self.watcher.clone(), self.runtime.clone());
        let stop = async move {
            match watcher.send(Retiring(pid)).await {
                Ok(true) => Input::Retired {
                    id,
                    error: runtime.retire(id).await.err().map(|e| e.to_string()),
                },
                _ => Input::RetireRefused { id },
            }
        };
        ctx.spawn(stop.into_actor(self).map(|input, act, ctx| {
            if let Input::Retired { id, error: Some(e) } = &input {
                tracing::warn!(worker = id, error = %e, "scaler: stop failed");
            }
            act.feed(ctx, input);
        }));
    }
}

/// The cluster as the core sees it: every worker the runtime runs, with
/// what the watcher says of it, and the master only if it leads.
fn snapshot(view: &ClusterView, listed: &[WorkerInfo]) -> ClusterSnapshot {
    let registered = |pid: u64| view.workers.iter().find(|w| w.pid == pid);
    let master = view
        .master
        .filter(|&m| registered(m).is_some_and(|w| w.role == ReportedRole::Master));
    let state = |pid: u64| match registered(pid) {
        None => MemberState::Unregistered,
        Some(w) => match w.role {
            ReportedRole::Master => MemberState::Leading,
            ReportedRole::Slave if w.state == "serving" => MemberState::Serving,
            ReportedRole::Slave => MemberState::CatchingUp,
            _ => MemberState::Other,
        },
    };
    ClusterSnapshot {
        master,
        workers: listed
            .iter()
            .map(|w| Member {
                id: w.id,
                pid: w.pid,
                state: state(w.pid),
            })
            .collect(),
        starting: view.starting_ids.clone(),
    }
}

impl Actor for Scaler {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let p = *self.core.policy();
        tracing::info!(
            window_s = p.window.as_secs_f64(),
            reads_per_slave = p.reads_per_slave,
            min = p.min_slaves,
            max = p.max_slaves,
            max_step = p.max_step,
            "scaler starting"
        );
        ctx.run_interval(POLL, |act, ctx| {
            // Another orchestrator scales while this one does not lead.
            let leads = act.lease.valid();
            if leads && !act.leading {
                act.begin_leading();
            }
            act.leading = leads;
            if leads {
                let reads = act.all_reads();
                act.feed(ctx, Input::Tick { reads });
            }
        });
    }
}

/// Decide now on the reads counted so far (the window starts again at the
/// next read), and answer the decision once it has been carried out (its
/// starts may wait for earlier slaves to catch up).
#[derive(Message)]
#[rtype(result = "Result<ScaleDecision>")]
pub struct ScaleNow;

impl Handler<ScaleNow> for Scaler {
    type Result = ResponseFuture<Result<ScaleDecision>>;

    fn handle(&mut self, _: ScaleNow, ctx: &mut Context<Self>) -> Self::Result {
        if !self.lease.valid() {
            let e = Error::Unavailable(
                "this orchestrator does not lead; the leading one scales".into(),
            );
            return Box::pin(async move { Err(e) });
        }
        if !self.leading {
            self.begin_leading();
            self.leading = true;
        }
        let (tx, rx) = oneshot::channel();
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        self.asked.insert(ticket, tx);
        let reads = self.all_reads();
        self.feed(ctx, Input::DecideNow { reads, ticket });
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
        MessageResult(self.core.view(self.all_reads(), self.now()))
    }
}

/// Stop scaling (the cluster is shutting down). Starts not yet begun are
/// abandoned; the answer comes once the starts and the stop already under
/// way have ended (at most two starts, each bounded by the runtime), so
/// that the cluster's own stop finds every worker started.
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopScaling;

impl Handler<StopScaling> for Scaler {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: StopScaling, ctx: &mut Context<Self>) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        self.stopping.push(tx);
        self.feed(ctx, Input::Stop);
        Box::pin(async move {
            let _ = rx.await;
        })
    }
}
