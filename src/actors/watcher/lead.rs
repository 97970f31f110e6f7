//! Which orchestrator's watcher acts: the I/O around the leadership's
//! state machine ([`crate::core::lead`], which says why it is safe). Any
//! number of orchestrators serve one cluster; each registers under
//! `/orchestrators`, and the one that holds `/leader` (an ephemeral node,
//! so it goes with its session) leads: its watcher elects, starts and
//! kills workers, and its Scaler scales. The others' watchers only follow
//! `/master` (their orchestrators need the epoch) and take `/leader` when
//! it goes.
//!
//! Here: contending for `/leader` (create it, read who holds it), checking
//! it every [`RENEW_EVERY`] while leading (each check that finds it this
//! session's extends the lease), bringing the workers up on taking the
//! lead ([`runtime::ensure_workers`]: containers still running are taken
//! on, missing workers started over their stores, then a fresh core),
//! stopping child-process workers when another orchestrator holds
//! `/leader`, and telling the others this orchestrator's reads. Elections
//! are written by compare-and-set through its own session, which fails
//! once that session has expired.

use std::collections::BTreeMap;

use super::coord_io::{contend, leader, read_orchestrators, read_succession, register};
use super::*;
use crate::coord::election::OrchestratorRecord;
use crate::core::lead::{Effect as LeadEffect, Holder, LeadCore};
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
    /// The decisions ([`LeadCore`]): whether it leads, acts, steps down.
    pub core: LeadCore,
    /// [`Me::lease`]: the core's acting lease, for the Scaler's thread.
    acting: Arc<Lease>,
    contending: bool,
    startup: Option<SpawnHandle>,
    /// Every registered orchestrator, and the session that leads.
    pub orchestrators: Vec<OrchestratorRecord>,
    pub leader: Option<u64>,
    /// The others' reads, added up as their nodes tell them.
    pub others_reads: ReadCounter,
    /// Each other orchestrator's count when last read, by session.
    seen: BTreeMap<u64, u64>,
}

impl Lead {
    pub fn new(me: Me) -> Self {
        Lead {
            core: LeadCore::new(u64::from(std::process::id())),
            acting: me.lease.clone(),
            others_reads: me.others.clone(),
            me,
            contending: false,
            startup: None,
            orchestrators: Vec::new(),
            leader: None,
            seen: BTreeMap::new(),
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

/// Who holds `/leader`, as the core needs it.
fn holder(l: Option<OrchestratorRecord>) -> Option<Holder> {
    l.map(|l| Holder {
        session: l.session,
        pid: l.pid,
    })
}

impl ElectionWatcher {
    /// Whether what the core decides is carried out now.
    pub(super) fn acting(&self) -> bool {
        self.lead.core.acting(self.now())
    }

    /// Feeds the leadership `input` and carries out what it decides.
    pub(super) fn lead_on(&mut self, ctx: &mut Context<Self>, input: LeadInput) {
        let effects = self.lead.core.on(input);
        self.lead_effects(ctx, effects);
    }

    /// Carries out what the leadership decided, and tells the Scaler's
    /// lease.
    pub(super) fn lead_effects(&mut self, ctx: &mut Context<Self>, effects: Vec<LeadEffect>) {
        match self.lead.core.acting_until() {
            Some(ms) => self.lead.acting.set(self.born + Duration::from_millis(ms)),
            None => self.lead.acting.revoke(),
        }
        for effect in effects {
            match effect {
                LeadEffect::StartUp => self.take_lead(ctx),
                LeadEffect::StartUpLater => {
                    ctx.run_later(STARTUP_RETRY, |act, ctx| {
                        let core = &act.lead.core;
                        if core.leading() && !core.ready() && act.lead.startup.is_none() {
                            act.start_up(ctx);
                        }
                    });
                }
                LeadEffect::StepDown(why) => {
                    if let Some(h) = self.lead.startup.take() {
                        ctx.cancel_future(h);
                    }
                    self.event(
                        "resigned",
                        format!("this orchestrator stops leading: {why}"),
                    );
                }
                LeadEffect::ReleaseWorkers => self.release_workers(),
            }
        }
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
        if !self.lead.core.may_contend() || self.lead.contending {
            return;
        }
        self.lead.contending = true;
        let (me, asked) = (self.lead.record(coord.session_id()), self.now());
        ctx.spawn(
            contend(coord, me)
                .into_actor(self)
                .map(move |res, act, ctx| {
                    act.lead.contending = false;
                    match res {
                        Ok(l) => act.lead_on(
                            ctx,
                            LeadInput::Contended {
                                asked,
                                holder: holder(l),
                            },
                        ),
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
            if !act.lead.core.leading() {
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
                    act.lead_on(ctx, LeadInput::StartedUp);
                    act.step(ctx, Input::Connected);
                    act.refresh(ctx);
                    act.read_master(ctx);
                }
                Err(e) => {
                    let why = e.to_string();
                    act.event("startup", format!("the workers did not come up: {why}"));
                    // A passing outage (the coordinator, the runtime) is
                    // tried again; only a refusal ends a start.
                    let refused = !e.is_retryable();
                    act.lead_on(ctx, LeadInput::StartUpFailed { why, refused });
                }
            }
        }));
        self.lead.startup = Some(handle);
    }

    /// Checks that `/leader` is still this session's, extending the lease.
    pub(super) fn renew(&mut self, ctx: &mut Context<Self>) {
        let Some(coord) = self.coord.clone() else {
            return;
        };
        if !self.lead.core.leading() {
            return;
        }
        let asked = self.now();
        ctx.spawn(leader(coord).into_actor(self).map(move |res, act, ctx| {
            if let Ok(l) = res {
                let holder = holder(l);
                act.lead_on(ctx, LeadInput::Checked { asked, holder });
            } // else the lease runs out by itself
        }));
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
            act.contend(ctx);
        }));
    }
}
