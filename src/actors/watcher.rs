//! The ElectionWatcher: the orchestrator's eyes on the workers, a thin
//! driver around [`WatcherCore`] (every decision is there, pure).
//!
//! It watches the children of `/workers` (each worker's ephemeral node)
//! and `/master`, reads the reports every second (they change without the
//! children changing), hears every exit the runtime sees, and turns each
//! into an input of the core; it carries out what the core decides: runs
//! elections against the coordinator (a compare-and-set on `/master`,
//! `run_election`), deletes a dead worker's node, starts and
//! kills workers through the runtime, sets timers, tells the Orchestrator
//! each new epoch, and keeps the recent events for the cluster view. It
//! also serves the crash APIs and the cluster view.

mod api;
mod coord_io;
mod lead;

pub use api::{
    CountOthers, CrashMaster, CrashSlave, GetCluster, GetStanding, Note, ReserveId, Resign,
    Retiring, SetHungAfter, Standing, StopWatching,
};
pub use lead::{Me, OrchestratorView};

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use serde::Serialize;

use super::counter::ReadCounter;
use super::lease::{lease_span, Lease};
use super::messages::SetEpoch;
use super::worker::Connector;
use super::{next_retry, now_ms, FIRST_RETRY};
use crate::coord::election::{self, worker_path, MasterRecord, ReportedRole, MASTER, WORKERS};
use crate::coord::Coordinator;
use crate::core::lead::Input as LeadInput;
use crate::core::watcher::{self as wcore, Effect, Input, Running, WatcherCore};
use crate::error::{Error, Result};
use crate::runtime::{Exit, WorkerRuntime, WorkerSpec};
use coord_io::{follow, read_view, run_election, Changed};
use lead::Lead;

/// How long a master's node may be missing right after the watcher's
/// session (re)opened before that counts as a death.
pub const GRACE: Duration = Duration::from_millis(wcore::GRACE_MS);
/// How long a worker whose session ended while its process still runs
/// (paused, hung, cut off) may take to come back (register again, as a
/// slave) before it is taken for hung: then the runtime kills it and
/// starts it again over its own store.
pub const HUNG_AFTER: Duration = Duration::from_millis(wcore::HUNG_AFTER_MS);
/// Recent events kept for `GET /api/v1/cluster`.
const EVENTS: usize = 64;

/// An event worth showing: an election, a death, a respawn.
#[derive(Clone, Debug, Serialize)]
pub struct ClusterEvent {
    /// Unix milliseconds.
    pub at: u64,
    pub kind: &'static str,
    pub detail: String,
}

/// One worker as the cluster view shows it.
#[derive(Clone, Debug, Serialize)]
pub struct WorkerView {
    pub pid: u64,
    pub id: u64,
    pub role: ReportedRole,
    pub applied: u64,
    /// How far behind the master's applied seq.
    pub lag: u64,
    pub epoch: u64,
    pub state: &'static str,
    /// Its coordinator session.
    pub session: u64,
    /// Reads it answered, when the orchestrator's HTTP view asked it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reads_served: Option<u64>,
}

/// What `GET /api/v1/cluster` answers.
#[derive(Clone, Debug, Serialize)]
pub struct ClusterView {
    pub cluster: String,
    pub master: Option<u64>,
    pub epoch: u64,
    pub workers: Vec<WorkerView>,
    /// Replacements being started, not yet running.
    pub starting: usize,
    /// Their ids (for the Scaler: one may run already, before its start
    /// is told done).
    #[serde(skip)]
    pub starting_ids: Vec<u64>,
    pub events: Vec<ClusterEvent>,
    /// Every event since the watcher started, counted by kind, and the
    /// failovers: the elections after the first this watcher saw.
    pub totals: BTreeMap<&'static str, u64>,
    /// The Scaler's policy and last decision, when it runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scaler: Option<crate::core::scaler::ScalerView>,
    /// Whether this orchestrator holds the lead.
    pub leading: bool,
    /// Whether its watcher acts: it leads, with the workers it brought up
    /// and a valid lease (until then a new leader only starts up).
    pub acting: bool,
    /// Every orchestrator serving the cluster, as the coordinator lists
    /// them.
    pub orchestrators: Vec<OrchestratorView>,
}

/// Watches the workers, elects, and asks for replacements.
pub struct ElectionWatcher {
    cluster: u64,
    connect: Connector,
    coord: Option<Arc<dyn Coordinator>>,
    runtime: Arc<dyn WorkerRuntime>,
    /// Where a newer epoch is told (the Orchestrator).
    orchestrator: Recipient<SetEpoch>,
    core: WatcherCore,
    events: VecDeque<ClusterEvent>,
    totals: BTreeMap<&'static str, u64>,
    /// The core's clock counts from here.
    born: Instant,
    /// This orchestrator, whether it leads, and the others.
    lead: Lead,
    hung_after: u64,
    /// What `/succession` was last set to.
    kept: crate::core::election::SuccessionRecord,
}

impl ElectionWatcher {
    /// The watcher of orchestrator `me`; it brings up `slaves + 1`
    /// workers when it begins to lead.
    pub fn new(
        cluster: u64,
        connect: Connector,
        runtime: Arc<dyn WorkerRuntime>,
        orchestrator: Recipient<SetEpoch>,
        me: Me,
    ) -> Self {
        ElectionWatcher {
            cluster,
            connect,
            coord: None,
            runtime,
            orchestrator,
            core: WatcherCore::new(me.slaves + 1, 0),
            events: VecDeque::new(),
            totals: BTreeMap::new(),
            born: Instant::now(),
            lead: Lead::new(me),
            hung_after: wcore::HUNG_AFTER_MS,
            kept: Default::default(),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.born.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn running(&self) -> Vec<Running> {
        self.runtime
            .list()
            .iter()
            .map(|w| Running {
                id: w.id,
                pid: w.pid,
            })
            .collect()
    }

    /// Feeds `input` to the core and carries out what it decides: all of
    /// it while this orchestrator leads under a valid lease; otherwise
    /// only the epoch is passed on (another orchestrator acts).
    fn step(&mut self, ctx: &mut Context<Self>, input: Input) {
        let now = self.now();
        let effects = self.core.on(input, now, &self.running());
        // Whether its decisions are carried out: if its lease ran out
        // (paused, cut off), another may lead by now; it steps down and
        // looks again at who leads.
        let acting = if effects.iter().any(|e| !matches!(e, Effect::SetEpoch(_))) {
            let (acting, lead) = self.lead.core.decide(now);
            self.lead_effects(ctx, lead);
            acting
        } else {
            false
        };
        for effect in effects {
            if acting || matches!(effect, Effect::SetEpoch(_)) {
                self.carry_out(ctx, effect);
            }
        }
        self.keep_succession();
    }

    /// Keeps what the succession knows in the coordinator when it
    /// changed (each election also keeps it first, see `run_election`).
    fn keep_succession(&mut self) {
        let now = self.core.succession();
        if !self.acting() || now == self.kept {
            return;
        }
        let Some(coord) = self.coord.clone() else {
            return;
        };
        self.kept = now.clone();
        actix::spawn(async move {
            if let Err(e) = coord_io::keep_succession(coord, &now).await {
                tracing::warn!(error = %e, "cannot keep the succession");
            }
        });
    }

    fn carry_out(&mut self, ctx: &mut Context<Self>, effect: Effect) {
        match effect {
            Effect::Elect {
                dead,
                succession,
                known,
                leaving,
            } => {
                let Some(coord) = self.coord.clone() else {
                    let res = Err("no coordinator session".to_string());
                    ctx.notify(Step(Input::Elected(res)));
                    return;
                };
                let election = run_election(coord, dead, succession, known, leaving);
                ctx.spawn(election.into_actor(self).map(|res, act, ctx| {
                    act.step(ctx, Input::Elected(res.map_err(|e| e.to_string())))
                }));
            }
            Effect::DeleteNode { pid } => {
                if let Some(coord) = self.coord.clone() {
                    actix::spawn(async move {
                        let _ = coord.delete(&worker_path(pid), None).await;
                    });
                }
            }
            Effect::Start {
                id,
                tries,
                after_ms,
            } => {
                let after = Duration::from_millis(after_ms);
                ctx.run_later(after, move |act, ctx| act.start_worker(ctx, id, tries));
            }
            Effect::Kill { id, pid } => self.kill_hung(ctx, id, pid),
            Effect::Wake { timer, after_ms } => {
                let after = Duration::from_millis(after_ms);
                ctx.run_later(after, move |act, ctx| act.step(ctx, Input::Woke(timer)));
            }
            Effect::SetEpoch(epoch) => self.orchestrator.do_send(SetEpoch(epoch)),
            Effect::Event { kind, detail } => self.event(kind, detail),
            Effect::Warn(what) => tracing::warn!("election watcher: {what}"),
        }
    }

    fn event(&mut self, kind: &'static str, detail: String) {
        tracing::info!(kind, "{detail}");
        let at = now_ms();
        // An election after the first this watcher saw replaces a master:
        // a failover.
        if kind == "election" && self.totals.contains_key("election") {
            *self.totals.entry("failover").or_default() += 1;
        }
        *self.totals.entry(kind).or_default() += 1;
        self.events.push_back(ClusterEvent { at, kind, detail });
        while self.events.len() > EVENTS {
            self.events.pop_front();
        }
    }

    /// Starts worker `id`; the core hears how it went.
    fn start_worker(&mut self, ctx: &mut Context<Self>, id: u64, tries: u32) {
        if self.core.stopped() {
            let result = Err("the watcher stopped".to_string());
            self.step(
                ctx,
                Input::Started {
                    id,
                    result,
                    tries: 1,
                },
            );
            return;
        }
        let (rt, cluster) = (self.runtime.clone(), self.cluster);
        let start = async move { rt.start(WorkerSpec { id, cluster }).await };
        ctx.spawn(start.into_actor(self).map(move |res, act, ctx| {
            let result = res.map(|w| w.pid).map_err(|e| e.to_string());
            act.step(ctx, Input::Started { id, result, tries });
        }));
    }

    fn kill_hung(&mut self, ctx: &mut Context<Self>, id: u64, pid: u64) {
        let rt = self.runtime.clone();
        let kill = async move { rt.kill(id).await };
        ctx.spawn(kill.into_actor(self).map(move |res, act, ctx| {
            if let Err(e) = res {
                tracing::warn!(worker = id, error = %e, "could not kill a hung worker");
            }
            act.step(ctx, Input::HungKilled { id, pid });
        }));
    }

    fn connect(&mut self, ctx: &mut Context<Self>, wait: Duration) {
        let connect = (self.connect)();
        ctx.spawn(connect.into_actor(self).map(move |res, act, ctx| match res {
            Ok(coord) => {
                act.coord = Some(coord.clone());
                let (session, timeout) = (coord.session_id(), coord.session_timeout());
                let span = u64::try_from(lease_span(timeout).as_millis()).unwrap_or(u64::MAX);
                act.lead_on(ctx, LeadInput::Connected { session, span });
                act.step(ctx, Input::Connected);
                let me = ctx.address();
                actix::spawn(follow(coord.clone(), WORKERS, true, me.clone()));
                actix::spawn(follow(coord.clone(), MASTER, false, me.clone()));
                actix::spawn(follow(coord.clone(), election::LEADER, false, me.clone()));
                actix::spawn(follow(coord, election::ORCHESTRATORS, true, me));
                act.register(ctx);
            }
            Err(e) => {
                tracing::warn!(error = %e, "election watcher: no coordinator session; retrying");
                ctx.run_later(wait, move |act, ctx| act.connect(ctx, next_retry(wait)));
            }
        }));
    }

    /// Reads every registered worker's report.
    fn refresh(&mut self, ctx: &mut Context<Self>) {
        let Some(coord) = self.coord.clone() else {
            return;
        };
        ctx.spawn(
            read_view(coord)
                .into_actor(self)
                .map(|res, act, ctx| match res {
                    Ok(view) => act.step(ctx, Input::View(view)),
                    Err(e) => tracing::debug!(error = %e, "cannot read the workers"),
                }),
        );
    }

    fn read_master(&mut self, ctx: &mut Context<Self>) {
        let Some(coord) = self.coord.clone() else {
            return;
        };
        let read = async move { coord.get(MASTER).await };
        ctx.spawn(read.into_actor(self).map(|res, act, ctx| {
            let Ok(node) = res else { return };
            let record = node
                .and_then(|n| election::decode::<MasterRecord>(&n.data).map(|m| (m, n.version)));
            act.step(ctx, Input::Master(record));
        }));
    }

    /// Kills worker `pid` through the runtime, as a crash would, and acts
    /// on the death at once.
    fn crash(&mut self, pid: u64) -> ResponseActFuture<Self, Result<u64>> {
        let rt = self.runtime.clone();
        let id = rt.list().iter().find(|w| w.pid == pid).map(|w| w.id);
        let kill = async move {
            let id = id.ok_or_else(|| Error::Unavailable(format!("no worker with pid {pid}")))?;
            rt.kill(id).await
        };
        Box::pin(kill.into_actor(self).map(move |res, act, ctx| {
            res?;
            act.step(ctx, Input::Crashed { pid });
            Ok(pid)
        }))
    }
}

/// An input for the core, fed on the actor's next turn.
#[derive(Message)]
#[rtype(result = "()")]
struct Step(Input);

impl Handler<Step> for ElectionWatcher {
    type Result = ();

    fn handle(&mut self, Step(input): Step, ctx: &mut Context<Self>) {
        self.step(ctx, input);
    }
}

impl Actor for ElectionWatcher {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.connect(ctx, FIRST_RETRY);
        let mut exits = self.runtime.exits();
        let me = ctx.address();
        actix::spawn(async move {
            loop {
                match exits.recv().await {
                    Ok(exit) => me.do_send(Exited(exit)),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(_) => return,
                }
            }
        });
        // Reports change without their node's children changing.
        ctx.run_interval(Duration::from_secs(1), |act, ctx| {
            act.refresh(ctx);
            act.look_around(ctx);
        });
        ctx.run_interval(lead::RENEW_EVERY, |act, ctx| act.renew(ctx));
    }
}

impl Handler<Changed> for ElectionWatcher {
    type Result = ();

    fn handle(&mut self, msg: Changed, ctx: &mut Context<Self>) {
        let current = self.coord.as_ref().map(|c| c.session_id());
        if current != Some(msg.session) {
            return; // a word of an earlier session
        }
        if msg.session_ended {
            if self.coord.take().is_some() {
                tracing::warn!("election watcher: session ended; opening another");
                self.lead_on(ctx, LeadInput::SessionEnded);
                self.step(ctx, Input::Disconnected);
                self.connect(ctx, FIRST_RETRY);
            }
            return;
        }
        if msg.path == MASTER {
            self.read_master(ctx);
        } else if msg.path == election::LEADER {
            self.contend(ctx);
            self.look_around(ctx);
        } else if msg.path == election::ORCHESTRATORS {
            self.look_around(ctx);
        } else {
            self.refresh(ctx);
        }
    }
}

/// The runtime saw a worker exit.
#[derive(Message)]
#[rtype(result = "()")]
struct Exited(Exit);

impl Handler<Exited> for ElectionWatcher {
    type Result = ();

    fn handle(&mut self, Exited(exit): Exited, ctx: &mut Context<Self>) {
        let input = Input::Exited {
            id: exit.id,
            pid: exit.pid,
            expected: exit.expected,
            gone: exit.gone,
        };
        self.step(ctx, input);
    }
}
