//! The ElectionWatcher: the orchestrator's eyes on the workers.
//!
//! It watches the children of `/workers` (each worker's ephemeral node)
//! and `/master`. When the master is gone it elects the live worker with
//! the newest history ([`crate::core::election::ballot`]), writes `/master` with the next
//! epoch by a compare-and-set (two elections cannot both win, nor can an
//! election and a master reclaiming its place after a coordinator outage),
//! tells the Orchestrator, and asks the runtime for a replacement. When a
//! slave is gone it asks for a replacement, unless that slave was stopped
//! on purpose. Startup goes the same way: the workers start alike and
//! report what their stores hold, and the one rule picks the master.
//!
//! Deaths come two ways. One the system sees itself (its own kill, a
//! child's exit reaped by the runtime) is acted on at once: the dead
//! worker's node is deleted (any session may) and the election runs
//! without waiting for the session to expire; an exited process cannot
//! write again. A death nobody saw (a hung, paused or cut-off worker)
//! shows when its session expires and its node goes.
//!
//! Right after the watcher's own session reopens, a master's missing node
//! is given [`GRACE`] to come back: after a coordinator outage every
//! worker registers again, and the master reclaims its place. Outside that
//! grace, a master whose session ended is replaced even if it registers
//! again at once (it must have been unreachable: it is deposed).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use serde::Serialize;

use super::messages::SetEpoch;
use super::worker::Connector;
use super::{next_retry, Orchestrator, FIRST_RETRY};
use crate::coord::election::{
    self, worker_path, MasterRecord, ReportedRole, WorkerReport, MASTER, WORKERS,
};
use crate::coord::{CoordError, Coordinator, NodeKind, WatchEvent};
use crate::core::election::{ballot, Ballot, Succession};
use crate::error::{Error, Result};
use crate::runtime::{Exit, WorkerRuntime, WorkerSpec};

/// How long a master's node may be missing right after the watcher's
/// session (re)opened before that counts as a death.
pub const GRACE: Duration = Duration::from_secs(2);
/// How long a worker whose session ended while its process still runs
/// (paused, hung, cut off) may take to come back (register again, as a
/// slave) before it is taken for hung: then the runtime kills it and
/// starts it again over its own store.
pub const HUNG_AFTER: Duration = Duration::from_secs(5);
/// Pids of workers gone that the watcher remembers (ids, deaths handled)
/// before it forgets those neither registered nor running.
const REMEMBERED: usize = 1024;
/// Recent events kept for `GET /api/v1/cluster`.
const EVENTS: usize = 64;
/// How many times a replacement is tried, and how long apart.
const RESPAWN_TRIES: u32 = 10;
const RESPAWN_WAIT: Duration = Duration::from_secs(1);
/// How many times an election reads and writes `/master` again when it
/// changed meanwhile.
const ELECTION_TRIES: usize = 5;
/// How long startup waits for every worker to register before electing
/// among those that did.
const STARTUP_WAIT: Duration = Duration::from_secs(15);

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
    pub events: Vec<ClusterEvent>,
    /// The Scaler's policy and last decision, when it runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scaler: Option<super::scaler::ScalerView>,
}

/// Watches the workers, elects, and asks for replacements.
pub struct ElectionWatcher {
    cluster: u64,
    connect: Connector,
    coord: Option<Arc<dyn Coordinator>>,
    runtime: Arc<dyn WorkerRuntime>,
    orchestrator: Addr<Orchestrator>,
    /// Registered workers and their reports, by pid.
    view: BTreeMap<u64, WorkerReport>,
    master: Option<(MasterRecord, i32)>,
    /// Pids whose death was handled already (seen, then the node went).
    buried: BTreeSet<u64>,
    /// Pids being stopped on purpose: their node going is no death.
    leaving: BTreeSet<u64>,
    /// The highest worker id known (a replacement that cannot reuse the
    /// dead worker's id gets the next).
    last_id: u64,
    /// Worker ids by pid, of every worker seen.
    ids: BTreeMap<u64, u64>,
    /// The masters lost since one was last seen leading: if no worker is
    /// caught up, only their own stores (started again) may lead.
    succession: Succession,
    events: VecDeque<ClusterEvent>,
    /// No election for a missing master before this (see [`GRACE`]).
    grace_until: Instant,
    /// A session was opened before (the next one is a reconnection).
    coord_seen: bool,
    /// Workers to wait for before the first election.
    expect: usize,
    started_at: Instant,
    electing: bool,
    stopped: bool,
    /// Replacements being started (not yet in the runtime's list).
    starting: usize,
    /// Workers whose session ended while their process runs on, by pid
    /// (their ids): given [`HUNG_AFTER`] to come back.
    hung: BTreeMap<u64, u64>,
    hung_after: Duration,
}

impl ElectionWatcher {
    pub fn new(
        cluster: u64,
        connect: Connector,
        runtime: Arc<dyn WorkerRuntime>,
        orchestrator: Addr<Orchestrator>,
        expect: usize,
    ) -> Self {
        ElectionWatcher {
            cluster,
            connect,
            coord: None,
            runtime,
            orchestrator,
            view: BTreeMap::new(),
            master: None,
            buried: BTreeSet::new(),
            leaving: BTreeSet::new(),
            last_id: 0,
            ids: BTreeMap::new(),
            succession: Succession::default(),
            events: VecDeque::new(),
            grace_until: Instant::now(),
            coord_seen: false,
            expect,
            started_at: Instant::now(),
            electing: false,
            stopped: false,
            starting: 0,
            hung: BTreeMap::new(),
            hung_after: HUNG_AFTER,
        }
    }

    fn event(&mut self, kind: &'static str, detail: String) {
        tracing::info!(kind, "{detail}");
        let at = super::scaler::now_ms();
        self.events.push_back(ClusterEvent { at, kind, detail });
        while self.events.len() > EVENTS {
            self.events.pop_front();
        }
    }

    fn connect(&mut self, ctx: &mut Context<Self>, wait: Duration) {
        let connect = (self.connect)();
        ctx.spawn(connect.into_actor(self).map(move |res, act, ctx| match res {
            Ok(coord) => {
                if act.coord_seen {
                    // Opened again: a coordinator outage may just have
                    // ended, and the workers are registering again.
                    act.grace_until = Instant::now() + GRACE;
                }
                act.coord_seen = true;
                act.coord = Some(coord.clone());
                let me = ctx.address();
                actix::spawn(follow(coord.clone(), WORKERS, true, me.clone()));
                actix::spawn(follow(coord, MASTER, false, me));
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
                    Ok(view) => act.on_view(ctx, view),
                    Err(e) => tracing::debug!(error = %e, "cannot read the workers"),
                }),
        );
    }

    fn on_view(&mut self, ctx: &mut Context<Self>, view: BTreeMap<u64, WorkerReport>) {
        let gone: Vec<u64> = self
            .view
            .keys()
            .filter(|pid| !view.contains_key(pid))
            .copied()
            .collect();
        // A pid registered again (a reused pid, a worker back with a new
        // session) may die again.
        self.buried.retain(|pid| !view.contains_key(pid));
        let back: Vec<u64> = self
            .hung
            .keys()
            .filter(|pid| view.contains_key(pid))
            .copied()
            .collect();
        for pid in back {
            self.hung.remove(&pid);
            self.event("back", format!("worker pid {pid} is back and follows"));
        }
        self.last_id = view.values().map(|r| r.id).fold(self.last_id, u64::max);
        self.ids.extend(view.values().map(|r| (r.pid, r.id)));
        self.forget_the_long_gone();
        self.view = view;
        // A master that leads (takes writes) ends what a death left open.
        let leads = self.master.and_then(|(m, _)| self.view.get(&m.pid));
        if leads.is_some_and(|r| r.role == ReportedRole::Master && r.ready) {
            self.succession.master_leads();
        }
        for pid in gone {
            self.on_gone(ctx, pid, false);
        }
        self.check_master(ctx);
    }

    /// Bounds what the watcher remembers of pids: past [`REMEMBERED`]
    /// of each, only those still registered or running stay (a worker
    /// that respawns for weeks must not grow the watcher).
    fn forget_the_long_gone(&mut self) {
        if self.ids.len() <= REMEMBERED && self.buried.len() <= REMEMBERED {
            return;
        }
        let running: BTreeSet<u64> = self.runtime.list().iter().map(|w| w.pid).collect();
        let keep = |pid: &u64| self.view.contains_key(pid) || running.contains(pid);
        self.ids.retain(|pid, _| keep(pid));
        self.buried.retain(|pid| keep(pid));
    }

    /// A worker's node went (`seen`: the runtime saw it exit).
    fn on_gone(&mut self, ctx: &mut Context<Self>, pid: u64, seen: bool) {
        if self.leaving.contains(&pid) {
            self.view.remove(&pid); // stopped on purpose: its exit follows
            return;
        }
        if self.stopped || !self.buried.insert(pid) {
            return;
        }
        let report = self.view.remove(&pid);
        let id = report.map(|r| r.id).or_else(|| self.ids.get(&pid).copied());
        if let Some(id) = id.filter(|_| self.master.is_some_and(|(m, _)| m.pid == pid)) {
            self.succession.master_lost(id);
        }
        let how = if seen { "exited" } else { "lost its session" };
        self.event("death", format!("worker pid {pid} {how}"));
        if seen {
            if let Some(coord) = self.coord.clone() {
                // Its session may live on for a while: its node goes now.
                actix::spawn(async move {
                    let _ = coord.delete(&worker_path(pid), None).await;
                });
            }
        }
        if self.master.is_some_and(|(m, _)| m.pid == pid) {
            self.master_lost(ctx, pid, seen);
        }
        // Its session ended but its process runs on: no second worker for
        // it; it comes back, or it is killed and started again.
        let alive = id.filter(|&id| {
            !seen
                && self
                    .runtime
                    .list()
                    .iter()
                    .any(|w| w.id == id && w.pid == pid)
        });
        if let Some(id) = alive {
            self.hung.insert(pid, id);
            ctx.run_later(self.hung_after, move |act, ctx| act.check_hung(ctx, pid));
            return;
        }
        self.respawn(ctx, id, pid);
    }

    /// A worker whose session ended and that did not come back in time is
    /// hung: killed through the runtime and started again over its store.
    fn check_hung(&mut self, ctx: &mut Context<Self>, pid: u64) {
        let Some(id) = self.hung.remove(&pid) else {
            return; // back, or exited and replaced
        };
        if self.stopped {
            return;
        }
        let listed = self
            .runtime
            .list()
            .iter()
            .any(|w| w.id == id && w.pid == pid);
        if !listed {
            self.respawn(ctx, Some(id), pid);
            return;
        }
        self.event(
            "hung",
            format!("worker {id} (pid {pid}) did not come back; killing it"),
        );
        let rt = self.runtime.clone();
        let kill = async move { rt.kill(id).await };
        ctx.spawn(kill.into_actor(self).map(move |res, act, ctx| {
            if let Err(e) = res {
                tracing::warn!(worker = id, error = %e, "could not kill a hung worker");
            }
            if !act.stopped {
                act.respawn(ctx, Some(id), pid);
            }
        }));
    }

    /// The master is dead (`seen`) or lost its session: elect another.
    /// The election writes `/master` only if it is still as the watcher
    /// knew it when the master was lost: a master that came back and
    /// claimed its place again (a compare-and-set of its own) meanwhile is
    /// kept, and so is its lease. Right after a coordinator outage, it is
    /// given time to come back.
    fn master_lost(&mut self, ctx: &mut Context<Self>, pid: u64, seen: bool) {
        let wait = self.grace_until.saturating_duration_since(Instant::now());
        if !seen && !wait.is_zero() {
            ctx.run_later(wait, |act, ctx| act.check_master(ctx));
            return;
        }
        self.elect(ctx, Some(pid));
    }

    /// Starts a replacement: the dead worker again, over its own store
    /// (what it holds is not lost, and it catches up from there), or a
    /// worker with a new id if that one runs.
    /// If that worker runs again already, under another pid (started
    /// again before its old session's node went, e.g. by an orchestrator
    /// started again), nothing is started.
    fn respawn(&mut self, ctx: &mut Context<Self>, dead: Option<u64>, dead_pid: u64) {
        let running = self.runtime.list();
        if let Some(id) = dead {
            if running.iter().any(|w| w.id == id && w.pid != dead_pid) {
                return;
            }
        }
        let id = match dead.filter(|id| !running.iter().any(|w| w.id == *id)) {
            Some(id) => id,
            None => self.new_id(),
        };
        self.start_worker(ctx, id, RESPAWN_TRIES);
    }

    /// An id no worker has had: above every one known or running.
    fn new_id(&mut self) -> u64 {
        let running = self.runtime.list().iter().map(|w| w.id).max();
        self.last_id = self.last_id.max(running.unwrap_or(0)) + 1;
        self.last_id
    }

    /// Starts worker `id`, trying again a few times if it does not start.
    fn start_worker(&mut self, ctx: &mut Context<Self>, id: u64, tries: u32) {
        let (rt, cluster) = (self.runtime.clone(), self.cluster);
        let start = async move { rt.start(WorkerSpec { id, cluster }).await };
        self.starting += 1;
        ctx.spawn(start.into_actor(self).map(move |res, act, ctx| match res {
            Ok(w) => {
                act.starting -= 1;
                act.event("respawn", format!("worker {id} started, pid {}", w.pid));
            }
            Err(e) => {
                act.starting -= 1;
                act.event("respawn", format!("worker {id} did not start: {e}"));
                if tries > 1 && !act.stopped {
                    ctx.run_later(RESPAWN_WAIT, move |act, ctx| {
                        act.start_worker(ctx, id, tries - 1)
                    });
                }
            }
        }));
    }

    /// Elects when there is no live master: once every expected worker
    /// has registered (or the startup wait is over).
    fn check_master(&mut self, ctx: &mut Context<Self>) {
        let master = self.master.and_then(|(m, _)| self.view.get(&m.pid));
        if let Some(m) = master.filter(|m| m.role == ReportedRole::Declined) {
            let pid = m.pid;
            self.event("decline", format!("worker pid {pid} cannot lead"));
            self.elect(ctx, Some(pid));
            return;
        }
        if master.is_some() || self.view.is_empty() {
            return;
        }
        let starting = self.view.len() < self.expect && self.started_at.elapsed() < STARTUP_WAIT;
        if !starting {
            self.elect(ctx, self.master.map(|(m, _)| m.pid));
        }
    }

    /// Runs the election, never choosing `dead`.
    fn elect(&mut self, ctx: &mut Context<Self>, dead: Option<u64>) {
        let Some(coord) = self.coord.clone() else {
            return;
        };
        if self.electing || self.stopped {
            return;
        }
        self.electing = true;
        let succession = self.succession.clone();
        let known = self.master.map(|(_, version)| version);
        ctx.spawn(
            run_election(coord, dead, succession, known, self.leaving.clone())
                .into_actor(self)
                .map(|res, act, ctx| {
                    act.electing = false;
                    match res {
                        Ok((record, true)) => {
                            act.master = Some(record);
                            let (m, _) = record;
                            act.event(
                                "election",
                                format!("worker {} (pid {}) leads epoch {}", m.id, m.pid, m.epoch),
                            );
                            act.orchestrator.do_send(SetEpoch(m.epoch));
                        }
                        Ok((record, false)) => act.master = Some(record),
                        Err(e) => {
                            tracing::warn!(error = %e, "election failed; trying again");
                            ctx.run_later(FIRST_RETRY, |act, ctx| act.check_master(ctx));
                        }
                    }
                }),
        );
    }
}

/// Reads `/workers` and every report in it.
async fn read_view(coord: Arc<dyn Coordinator>) -> Result<BTreeMap<u64, WorkerReport>> {
    let mut view = BTreeMap::new();
    for child in coord.children(WORKERS).await? {
        let Some(node) = coord.get(&format!("{WORKERS}/{child}")).await? else {
            continue; // gone meanwhile
        };
        match election::decode::<WorkerReport>(&node.data) {
            Some(r) => {
                view.insert(r.pid, r);
            }
            None => tracing::warn!(child, "unreadable worker report"),
        }
    }
    Ok(view)
}

/// One election: reads the reports and `/master`, decides a [`ballot`],
/// and writes `/master` by compare-and-set on the version it read. If
/// `/master` changed since the watcher last knew it (`known`), what it
/// names may stay (see [`ballot`]). Answers the record and whether this
/// election wrote it.
async fn run_election(
    coord: Arc<dyn Coordinator>,
    dead: Option<u64>,
    succession: Succession,
    known: Option<i32>,
    leaving: BTreeSet<u64>,
) -> Result<((MasterRecord, i32), bool)> {
    let mut known = known;
    for _ in 0..ELECTION_TRIES {
        let view = read_view(coord.clone()).await?;
        let current = coord.get(MASTER).await?;
        let version = current.as_ref().map(|n| n.version);
        let record = current
            .as_ref()
            .and_then(|n| election::decode::<MasterRecord>(&n.data));
        let changed = known.is_some_and(|k| Some(k) != version);
        let elected = match ballot(&view, record.as_ref(), changed, dead, &succession, &leaving) {
            Ballot::Keep => {
                let kept = record
                    .zip(version)
                    .ok_or_else(|| Error::Unavailable("/master went during the election".into()))?;
                return Ok((kept, false));
            }
            Ballot::Elect(elected) => elected,
            Ballot::Wait(why) => return Err(Error::Unavailable(why)),
        };
        let data = election::encode(&elected);
        let written = match version {
            Some(v) => coord.set(MASTER, &data, Some(v)).await,
            None => coord
                .create(MASTER, &data, NodeKind::Persistent)
                .await
                .map(|()| 0),
        };
        match written {
            Ok(version) => return Ok(((elected, version), true)),
            // Someone wrote it meanwhile: look again at what it says.
            Err(CoordError::BadVersion | CoordError::NodeExists) => known = version,
            Err(e) => return Err(e.into()),
        }
    }
    Err(Error::Unavailable(
        "/master kept changing during the election".into(),
    ))
}

/// A path changed (`children`: its children) or the session ended.
#[derive(Message)]
#[rtype(result = "()")]
struct Changed {
    path: &'static str,
    session_ended: bool,
}

async fn follow(
    coord: Arc<dyn Coordinator>,
    path: &'static str,
    children: bool,
    watcher: Addr<ElectionWatcher>,
) {
    let _ = coord.ensure(WORKERS).await;
    loop {
        let watched = if children {
            coord.watch_children(path).await.map(|(_, w)| w)
        } else {
            coord.watch_data(path).await.map(|(_, w)| w)
        };
        match watched {
            Ok(watch) => {
                watcher.do_send(Changed {
                    path,
                    session_ended: false,
                });
                if watch.await == WatchEvent::SessionEnded {
                    break;
                }
            }
            Err(CoordError::SessionEnded) => break,
            Err(_) => tokio::time::sleep(FIRST_RETRY).await,
        }
    }
    watcher.do_send(Changed {
        path,
        session_ended: true,
    });
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
        ctx.run_interval(Duration::from_secs(1), |act, ctx| act.refresh(ctx));
    }
}

impl Handler<Changed> for ElectionWatcher {
    type Result = ();

    fn handle(&mut self, msg: Changed, ctx: &mut Context<Self>) {
        if msg.session_ended {
            if self.coord.take().is_some() {
                tracing::warn!("election watcher: session ended; opening another");
                self.connect(ctx, FIRST_RETRY);
            }
            return;
        }
        if msg.path == MASTER {
            self.read_master(ctx);
        } else {
            self.refresh(ctx);
        }
    }
}

impl ElectionWatcher {
    fn read_master(&mut self, ctx: &mut Context<Self>) {
        let Some(coord) = self.coord.clone() else {
            return;
        };
        let read = async move { coord.get(MASTER).await };
        ctx.spawn(read.into_actor(self).map(|res, act, ctx| {
            let Ok(node) = res else { return };
            let record = node
                .and_then(|n| election::decode::<MasterRecord>(&n.data).map(|m| (m, n.version)));
            if let Some((m, _)) = record {
                act.orchestrator.do_send(SetEpoch(m.epoch));
            }
            act.master = record;
            act.check_master(ctx);
        }));
    }
}

/// The runtime saw a worker exit.
#[derive(Message)]
#[rtype(result = "()")]
struct Exited(Exit);

impl Handler<Exited> for ElectionWatcher {
    type Result = ();

    /// A worker stopped on purpose is not replaced; if it led, the
    /// election runs at once (a planned handover). A crash is a death.
    /// (It is announced before it goes, so that its node going is not
    /// taken for a death; a handover waits until it has gone: it stopped
    /// taking writes first.)
    fn handle(&mut self, Exited(exit): Exited, ctx: &mut Context<Self>) {
        if !exit.expected {
            if let Some(id) = self.hung.remove(&exit.pid) {
                // Its session had ended already; now its process did too.
                if !self.stopped {
                    self.respawn(ctx, Some(id), exit.pid);
                }
                return;
            }
            self.on_gone(ctx, exit.pid, true);
            return;
        }
        if self.stopped {
            return;
        }
        if !exit.gone {
            self.leaving.insert(exit.pid);
            let detail = format!("worker pid {} stopping on purpose", exit.pid);
            self.event("stop", detail);
            return;
        }
        self.leaving.remove(&exit.pid);
        self.buried.insert(exit.pid);
        self.view.remove(&exit.pid);
        if self.master.is_some_and(|(m, _)| m.pid == exit.pid) {
            self.elect(ctx, Some(exit.pid));
        }
    }
}

/// Kill the master (`POST /api/v1/crash/master`); answers its pid.
#[derive(Message)]
#[rtype(result = "Result<u64>")]
pub struct CrashMaster;

/// Kill the slave with the highest pid (`POST /api/v1/crash/slave`).
#[derive(Message)]
#[rtype(result = "Result<u64>")]
pub struct CrashSlave;

/// The cluster as the watcher sees it.
#[derive(Message)]
#[rtype(result = "ClusterView")]
pub struct GetCluster;

/// Stop watching (the cluster is shutting down): no more elections or
/// replacements.
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopWatching;

impl ElectionWatcher {
    /// Kills worker `pid` through the runtime, as a crash would, and acts
    /// on the death at once.
    fn crash(&mut self, ctx: &mut Context<Self>, pid: u64) -> ResponseActFuture<Self, Result<u64>> {
        let rt = self.runtime.clone();
        let id = rt.list().iter().find(|w| w.pid == pid).map(|w| w.id);
        let kill = async move {
            let id = id.ok_or_else(|| Error::Unavailable(format!("no worker with pid {pid}")))?;
            rt.kill(id).await
        };
        let _ = ctx;
        Box::pin(kill.into_actor(self).map(move |res, act, ctx| {
            res?;
            act.on_gone(ctx, pid, true);
            Ok(pid)
        }))
    }
}

impl Handler<CrashMaster> for ElectionWatcher {
    type Result = ResponseActFuture<Self, Result<u64>>;

    fn handle(&mut self, _: CrashMaster, ctx: &mut Context<Self>) -> Self::Result {
        match self.master.filter(|(m, _)| self.view.contains_key(&m.pid)) {
            Some((m, _)) => self.crash(ctx, m.pid),
            None => Box::pin(fut::ready(Err(Error::Unavailable("no master now".into())))),
        }
    }
}

impl Handler<CrashSlave> for ElectionWatcher {
    type Result = ResponseActFuture<Self, Result<u64>>;

    fn handle(&mut self, _: CrashSlave, ctx: &mut Context<Self>) -> Self::Result {
        let master = self.master.map(|(m, _)| m.pid);
        let slave = self
            .runtime
            .list()
            .iter()
            .map(|w| w.pid)
            .filter(|&pid| Some(pid) != master)
            .max();
        match slave {
            Some(pid) => self.crash(ctx, pid),
            None => Box::pin(fut::ready(Err(Error::Unavailable("no slave now".into())))),
        }
    }
}

impl Handler<GetCluster> for ElectionWatcher {
    type Result = MessageResult<GetCluster>;

    fn handle(&mut self, _: GetCluster, _ctx: &mut Context<Self>) -> Self::Result {
        let master = self.master.map(|(m, _)| m);
        let head = master
            .and_then(|m| self.view.get(&m.pid))
            .map_or(0, |r| r.applied);
        let workers = self
            .view
            .values()
            .map(|r| WorkerView {
                pid: r.pid,
                id: r.id,
                role: r.role,
                applied: r.applied,
                lag: head.saturating_sub(r.applied),
                epoch: r.epoch,
                state: match (r.role, r.ready) {
                    (ReportedRole::Master, _) => "leading",
                    (ReportedRole::Promoting, _) => "promoting",
                    (ReportedRole::Declined, _) => "declined",
                    (ReportedRole::Slave, true) => "serving",
                    (ReportedRole::Slave, false) => "catching up",
                },
                session: r.session,
            })
            .collect();
        MessageResult(ClusterView {
            cluster: format!("{:016x}", self.cluster),
            master: master.map(|m| m.pid),
            epoch: master.map_or(0, |m| m.epoch),
            workers,
            starting: self.starting,
            events: self.events.iter().cloned().collect(),
            scaler: None,
        })
    }
}

/// How long a worker whose session ended may take to come back before
/// it is taken for hung (see [`HUNG_AFTER`]).
#[derive(Message)]
#[rtype(result = "()")]
pub struct SetHungAfter(pub Duration);

impl Handler<SetHungAfter> for ElectionWatcher {
    type Result = ();

    fn handle(&mut self, SetHungAfter(d): SetHungAfter, _ctx: &mut Context<Self>) {
        self.hung_after = d;
    }
}

/// The Scaler would stop worker `pid`: answers true, and from then on
/// never elects it, unless it leads or an election is under way (then
/// false: it is not stopped now).
#[derive(Message)]
#[rtype(result = "bool")]
pub struct Retiring(pub u64);

impl Handler<Retiring> for ElectionWatcher {
    type Result = bool;

    fn handle(&mut self, Retiring(pid): Retiring, _ctx: &mut Context<Self>) -> bool {
        let leads = self.master.is_none_or(|(m, _)| m.pid == pid);
        if self.electing || leads || self.stopped {
            return false;
        }
        self.leaving.insert(pid);
        true
    }
}

/// An id for a new worker (the Scaler's), that no worker has had.
#[derive(Message)]
#[rtype(result = "u64")]
pub struct ReserveId;

impl Handler<ReserveId> for ElectionWatcher {
    type Result = u64;

    fn handle(&mut self, _: ReserveId, _ctx: &mut Context<Self>) -> u64 {
        self.new_id()
    }
}

/// An event of another part (the Scaler's decisions) for the cluster view.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Note {
    pub kind: &'static str,
    pub detail: String,
}

impl Handler<Note> for ElectionWatcher {
    type Result = ();

    fn handle(&mut self, Note { kind, detail }: Note, _ctx: &mut Context<Self>) {
        self.event(kind, detail);
    }
}

impl Handler<StopWatching> for ElectionWatcher {
    type Result = ();

    fn handle(&mut self, _: StopWatching, _ctx: &mut Context<Self>) {
        self.stopped = true;
    }
}
