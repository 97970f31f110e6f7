//! Which orchestrator's watcher acts. Any number of orchestrators serve
//! one cluster; each registers under `/orchestrators` and the one that
//! holds `/leader` (an ephemeral node, so it goes with its session) leads:
//! its watcher elects, starts and kills workers, and its Scaler scales.
//! The others' watchers only follow `/master` (their orchestrators need
//! the epoch) and take `/leader` when it goes.
//!
//! Leading is under a lease, as a master's writes are ([`Lease`]): every
//! round trip that finds `/leader` still this session's extends it to a
//! safe part of the session timeout from the round trip's start, and the
//! watcher carries out nothing while it is not valid. A paused or cut-off
//! leader finds its lease run out before its session can have expired,
//! so before another can hold `/leader`; what it decided meanwhile is not
//! carried out, and it looks again at who leads. Elections are written by
//! compare-and-set through its own session, which fails once that session
//! has expired.
//!
//! Beginning to lead, a watcher brings the workers up
//! ([`runtime::ensure_workers`]: containers still running are taken on,
//! missing workers started over their stores) and starts from a fresh
//! core. Child processes die with the orchestrator that started them: a
//! leader of the process runtime that finds another orchestrator holding
//! `/leader` while it lives on stops its workers, so that the new leader
//! can start them over their stores. Its own session ending is not
//! enough (ZooKeeper restarted, say): it keeps them, and takes the lead
//! again once its old session's node has gone, unless another did first.

use std::collections::BTreeMap;

use super::coord_io::{contend, leader, read_orchestrators, read_succession, register};
use super::*;
use crate::actors::lease::lease_span;
use crate::coord::election::OrchestratorRecord;
use crate::runtime;

/// How often the leader checks that `/leader` is still its own (each
/// check that says so extends its lease).
pub(super) const RENEW_EVERY: Duration = Duration::from_millis(100);
/// How long after a failed start-up the leader tries again.
const STARTUP_RETRY: Duration = Duration::from_secs(1);

/// Who this orchestrator is.
#[derive(Clone, Debug)]
pub struct Me {
    /// Its DB API's base URL (empty when it has none).
    pub addr: String,
    /// Its client reads, told to the others through its node.
    pub reads: ReadCounter,
    /// The others' client reads, added up as their nodes tell them (for
    /// the Scaler).
    pub others: ReadCounter,
    /// Valid while its watcher acts: it leads, its workers are up and its
    /// own lease is valid (the Scaler acts only then, on a view of the
    /// workers this leader brought up).
    pub lease: Arc<Lease>,
    /// How many slaves it brings up when it begins to lead.
    pub slaves: usize,
}

/// One orchestrator as the cluster view shows it.
#[derive(Clone, Debug, Serialize)]
pub struct OrchestratorView {
    pub pid: u64,
    pub addr: String,
    pub leading: bool,
}

/// This orchestrator's standing.
#[derive(Debug)]
pub(super) struct Lead {
    pub me: Me,
    /// It holds `/leader` (as far as it knows).
    pub leading: bool,
    /// It leads with its workers up and a fresh core.
    pub ready: bool,
    pub lease: Arc<Lease>,
    /// [`Me::lease`]: extended with `lease` only while `ready`.
    acting: Arc<Lease>,
    contending: bool,
    startup: Option<SpawnHandle>,
    /// Why the last start-up failed.
    pub error: Option<String>,
    /// Every registered orchestrator, and the session that leads.
    pub orchestrators: Vec<OrchestratorRecord>,
    pub leader: Option<u64>,
    /// The others' reads, added up as their nodes tell them.
    pub others_reads: ReadCounter,
    /// Each other orchestrator's count when last read, by session.
    seen: BTreeMap<u64, u64>,
    /// The cluster is shutting down: no leading from now on.
    pub stopped: bool,
}

impl Lead {
    pub fn new(me: Me) -> Self {
        Lead {
            lease: Arc::new(Lease::new()),
            acting: me.lease.clone(),
            others_reads: me.others.clone(),
            me,
            leading: false,
            ready: false,
            contending: false,
            startup: None,
            error: None,
            orchestrators: Vec::new(),
            leader: None,
            seen: BTreeMap::new(),
            stopped: false,
        }
    }

    fn record(&self, session: u64) -> OrchestratorRecord {
        OrchestratorRecord {
            pid: u64::from(std::process::id()),
            addr: self.me.addr.clone(),
            session,
            reads: self.me.reads.peek(),
        }
    }

    /// Adds what each other orchestrator served since it was last read.
    fn count_reads(&mut self, all: &[OrchestratorRecord], mine: u64) {
        let mut seen = BTreeMap::new();
        for r in all.iter().filter(|r| r.session != mine) {
            // One seen for the first time counts from now on.
            let before = self.seen.get(&r.session).copied().unwrap_or(r.reads);
            self.others_reads.add_n(r.reads.saturating_sub(before));
            seen.insert(r.session, r.reads);
        }
        self.seen = seen;
    }

    pub fn views(&self) -> Vec<OrchestratorView> {
        self.orchestrators
            .iter()
            .map(|r| OrchestratorView {
                pid: r.pid,
                addr: r.addr.clone(),
                leading: Some(r.session) == self.leader,
            })
            .collect()
    }
}

impl ElectionWatcher {
    /// Whether what the core decides is carried out now.
    pub(super) fn acting(&self) -> bool {
        self.lead.leading && self.lead.ready && self.lead.lease.valid()
    }

    /// Registers this orchestrator, then contends for `/leader`.
    pub(super) fn register(&mut self, ctx: &mut Context<Self>) {
        let Some(coord) = self.coord.clone() else {
            return;
        };
        let me = self.lead.record(coord.session_id());
        ctx.spawn(
            register(coord, me)
                .into_actor(self)
                .map(|res, act, ctx| match res {
                    Ok(()) => act.contend(ctx),
                    Err(e) => tracing::warn!(error = %e, "cannot register this orchestrator"),
                }),
        );
    }

    /// Takes `/leader` if nobody holds it.
    pub(super) fn contend(&mut self, ctx: &mut Context<Self>) {
        let Some(coord) = self.coord.clone() else {
            return;
        };
        if self.lead.stopped || self.lead.leading || self.lead.contending {
            return;
        }
        self.lead.contending = true;
        let (me, asked) = (self.lead.record(coord.session_id()), Instant::now());
        let (mine, timeout) = (coord.session_id(), coord.session_timeout());
        ctx.spawn(
            contend(coord, me)
                .into_actor(self)
                .map(move |res, act, ctx| {
                    act.lead.contending = false;
                    match res {
                        Ok(Some(l)) if l.session == mine && !act.lead.stopped => {
                            act.lead.lease.extend(asked, lease_span(timeout));
                            act.take_lead(ctx);
                        }
                        // Another orchestrator leads: what dies with this
                        // one goes, for it to start.
                        Ok(Some(l)) if l.pid != u64::from(std::process::id()) => {
                            act.release_workers();
                        }
                        // Nobody, or this process's own ended session
                        // (its node goes when that session expires).
                        Ok(_) => {}
                        Err(e) => tracing::debug!(error = %e, "cannot contend for /leader"),
                    }
                }),
        );
    }

    /// Stops the workers that die with this orchestrator (child
    /// processes), so that the orchestrator that leads now can start them
    /// over their stores; containers are left to it.
    fn release_workers(&mut self) {
        if self.runtime.outlives_orchestrator() || self.runtime.list().is_empty() {
            return;
        }
        let rt = self.runtime.clone();
        actix::spawn(async move { runtime::stop_all(rt.as_ref()).await });
    }

    fn take_lead(&mut self, ctx: &mut Context<Self>) {
        if self.lead.leading {
            return;
        }
        self.lead.leading = true;
        self.lead.ready = false;
        let detail = format!(
            "orchestrator pid {} ({}) leads",
            std::process::id(),
            self.lead.me.addr
        );
        self.event("leading", detail);
        self.start_up(ctx);
    }

    /// Brings the workers up, then starts from a fresh core.
    fn start_up(&mut self, ctx: &mut Context<Self>) {
        let Some(coord) = self.coord.clone() else {
            return;
        };
        let (rt, cluster, slaves) = (self.runtime.clone(), self.cluster, self.lead.me.slaves);
        let up = async move {
            let history = coord.get(MASTER).await?.is_some();
            let succession = read_succession(coord).await?;
            let n = runtime::ensure_workers(rt.as_ref(), cluster, slaves, history).await?;
            Ok::<_, crate::error::Error>((n, succession))
        };
        let handle = ctx.spawn(up.into_actor(self).map(|res, act, ctx| {
            act.lead.startup = None;
            if !act.lead.leading {
                return;
            }
            match res {
                Ok((expect, succession)) => {
                    let mut core = WatcherCore::new(expect, act.now());
                    core.set_hung_after(act.hung_after);
                    // Which stores an election must hear, as the watchers
                    // before it knew.
                    core.inherit(&succession);
                    act.kept = succession;
                    act.core = core;
                    act.lead.ready = true;
                    act.lead.acting.extend_as(&act.lead.lease);
                    act.lead.error = None;
                    act.step(ctx, Input::Connected);
                    act.refresh(ctx);
                    act.read_master(ctx);
                }
                Err(e) => {
                    let why = e.to_string();
                    act.event("startup", format!("the workers did not come up: {why}"));
                    act.lead.error = Some(why);
                    ctx.run_later(STARTUP_RETRY, |act, ctx| {
                        if act.lead.leading && !act.lead.ready && act.lead.startup.is_none() {
                            act.start_up(ctx);
                        }
                    });
                }
            }
        }));
        self.lead.startup = Some(handle);
    }

    /// Stops acting. `release`: another orchestrator may lead now, so
    /// workers that die with this one are stopped for the next leader to
    /// start over their stores.
    pub(super) fn step_down(&mut self, ctx: &mut Context<Self>, why: &str) {
        if !self.lead.leading {
            return;
        }
        self.lead.leading = false;
        self.lead.ready = false;
        self.lead.lease.revoke();
        self.lead.acting.revoke();
        if let Some(h) = self.lead.startup.take() {
            ctx.cancel_future(h);
        }
        self.event(
            "resigned",
            format!("this orchestrator stops leading: {why}"),
        );
    }

    /// Checks that `/leader` is still this session's, extending the lease.
    pub(super) fn renew(&mut self, ctx: &mut Context<Self>) {
        let Some(coord) = self.coord.clone() else {
            return;
        };
        if !self.lead.leading {
            return;
        }
        let (asked, timeout) = (Instant::now(), coord.session_timeout());
        let mine = coord.session_id();
        ctx.spawn(
            leader(coord)
                .into_actor(self)
                .map(move |res, act, ctx| match res {
                    Ok(Some(l)) if l.session == mine => {
                        act.lead.lease.extend(asked, lease_span(timeout));
                        if act.lead.ready {
                            act.lead.acting.extend(asked, lease_span(timeout));
                        }
                    }
                    Ok(Some(_)) => {
                        act.step_down(ctx, "another orchestrator holds /leader");
                        act.release_workers();
                    }
                    Ok(None) => act.step_down(ctx, "/leader went"),
                    Err(_) => {} // the lease runs out by itself
                }),
        );
    }

    /// Tells the others this orchestrator's reads, reads theirs, and
    /// contends for `/leader` when it may be free.
    pub(super) fn look_around(&mut self, ctx: &mut Context<Self>) {
        let Some(coord) = self.coord.clone() else {
            return;
        };
        let mine = coord.session_id();
        let me = self.lead.record(mine);
        let look = async move {
            register(coord.clone(), me).await?;
            read_orchestrators(coord).await
        };
        ctx.spawn(look.into_actor(self).map(move |res, act, ctx| {
            if let Ok((all, leader)) = res {
                act.lead.count_reads(&all, mine);
                act.lead.orchestrators = all;
                act.lead.leader = leader;
            }
            if !act.lead.leading {
                act.contend(ctx);
            }
        }));
    }
}
