//! The Worker: one per worker, whatever runs it (an arbiter of this
//! process, a `dbaas worker` process, a container). It holds the worker's
//! coordinator session and runs its role over its one store: a
//! [`SlaveWorker`], or a [`MasterWorker`] once the election names it, in
//! place, without a restart.
//!
//! - It registers an ephemeral `/workers/<pid>` and keeps its report there
//!   fresh (role, applied seq, epochs, readiness).
//! - It watches `/master` and feeds what it says to its [`RoleCore`],
//!   which decides (see [`crate::core::role`]); this actor carries the
//!   decisions out on the role's actors. Named there, a slave drains what
//!   the old master sent (a fence of its own on `syncQ`, everything before
//!   it applied and flushed) and then leads under the new epoch,
//!   continuing the sequence. A master that sees another named stops
//!   taking writes at once and follows as a slave (which takes a snapshot
//!   if it holds writes the new history does not).
//! - A master takes writes only under a [`Lease`] it extends by round trips
//!   to the coordinator: cut off (or paused) long enough that its session
//!   may expire, it stops before a successor can be elected. A session
//!   that expired is replaced by a new one; a master that finds itself
//!   still named claims `/master` again (a compare-and-set, so it cannot
//!   race an election) before it takes writes: a coordinator outage ends
//!   without a needless election.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use futures::future::BoxFuture;

use super::lease::{lease_span, Lease};
use super::messages::{Drain, GetStatus, Promoted, Rejoined, Resume, Shutdown, WorkerStatus};
use super::{blocking, MasterWorker, SlaveWorker, FIRST_RETRY};
use crate::broker::Broker;
use crate::coord::election::{self, worker_path, MasterRecord, WorkerReport, MASTER};
use crate::coord::{CoordError, CoordResult, Coordinator, NodeKind, SessionState, WatchEvent};
use crate::core::role::{Effect as RoleEffect, Input as RoleInput, RoleCore};
use crate::error::Error;
use crate::model::wire::Stamp;
use crate::store::Store;

mod mailbox;
mod start;

use mailbox::{drain, follow_master, follow_state, ignore_no_node, Step};
pub use start::{launcher, StoreAt};

/// Opens a new coordinator session.
pub type Connector =
    Arc<dyn Fn() -> BoxFuture<'static, CoordResult<Arc<dyn Coordinator>>> + Send + Sync>;

/// How often a worker refreshes its report.
const REPORT_EVERY: Duration = Duration::from_millis(100);
/// How often a report that differs only in how far the worker got is
/// written (each write is a ZooKeeper transaction, synced to its disk; an
/// election reads what it needs afresh, and the elected slave drains).
const PROGRESS_EVERY: Duration = Duration::from_secs(1);
/// How long a drain may take before the promotion is tried again.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a stopping worker waits for an early install still being
/// written to its store (a 32 MiB one takes about 3 s here): within the
/// 10-15 s a runtime gives a worker to stop, after its slave's removal.
const STOP_FLUSH_WAIT: Duration = Duration::from_secs(4);

/// Who a worker is.
#[derive(Clone, Copy, Debug)]
pub struct WorkerConfig {
    pub id: u64,
    pub pid: u64,
    pub cluster: u64,
    /// Most messages its sync queue keeps while it is away.
    pub sync_cap: u32,
    /// The coordinator's session timeout: the lease is a part of it.
    pub session_timeout: Duration,
}

/// The role's actor, if one runs (the decisions are the [`RoleCore`]'s).
enum Role {
    Slave(Addr<SlaveWorker>),
    Master(Addr<MasterWorker>),
    /// Between the two (one stopping, the other not yet started).
    Idle,
}

/// A worker: its session and its role.
pub struct Worker {
    cfg: WorkerConfig,
    store: Store,
    broker: Arc<dyn Broker>,
    connect: Connector,
    coord: Option<Arc<dyn Coordinator>>,
    role: Role,
    core: RoleCore,
    lease: Arc<Lease>,
    /// The session in which this worker last held `/master` by a write or
    /// an election: the lease is extended only in that session.
    claimed: Option<u64>,
    last_report: Option<WorkerReport>,
    /// When the report was last written.
    reported_at: Instant,
    stopping: bool,
    /// Drains asked for so far (the latest's answer alone counts).
    drains: u64,
}

impl Worker {
    /// A worker over `store`, which must have joined `cfg.cluster`.
    pub fn new(
        cfg: WorkerConfig,
        store: Store,
        broker: Arc<dyn Broker>,
        connect: Connector,
    ) -> Self {
        Worker {
            cfg,
            store,
            broker,
            connect,
            coord: None,
            role: Role::Idle,
            core: RoleCore::new(cfg.pid),
            lease: Arc::new(Lease::new()),
            claimed: None,
            last_report: None,
            reported_at: Instant::now(),
            stopping: false,
            drains: 0,
        }
    }

    fn start_slave(&mut self) {
        let slave = SlaveWorker::new(
            self.cfg.id,
            self.store.clone(),
            self.broker.clone(),
            self.cfg.sync_cap,
        );
        self.role = Role::Slave(slave.start());
    }

    /// Opens a session, registers, and follows `/master` and the session's
    /// state; retried with backoff while the coordinator is away.
    fn connect(&mut self, ctx: &mut Context<Self>, wait: Duration) {
        let connect = (self.connect)();
        ctx.spawn(connect.into_actor(self).map(move |res, act, ctx| match res {
            Ok(coord) if !act.stopping => {
                tracing::info!(worker = act.cfg.id, session = coord.session_id(), "coordinator session open");
                // A session after a lost one: the slave checks it missed
                // nothing before it reports ready again (its status is
                // asked after this, so the first report after it says so).
                if let (Some(_), Role::Slave(slave)) = (&act.coord, &act.role) {
                    slave.do_send(Rejoined);
                }
                act.coord = Some(coord.clone());
                act.last_report = None;
                act.register(ctx, coord.clone(), FIRST_RETRY);
                actix::spawn(follow_master(coord.clone(), ctx.address()));
                actix::spawn(follow_state(coord, ctx.address()));
            }
            Ok(coord) => {
                actix::spawn(async move { coord.close().await });
            }
            Err(e) => {
                tracing::warn!(worker = act.cfg.id, error = %e, "no coordinator session; retrying");
                ctx.run_later(wait, move |act, ctx| act.connect(ctx, super::next_retry(wait)));
            }
        }));
    }

    /// Creates `/workers/<pid>`, replacing a stale one (of an earlier
    /// session of this pid, left while the coordinator restarted).
    fn register(&mut self, ctx: &mut Context<Self>, coord: Arc<dyn Coordinator>, wait: Duration) {
        let report = election::encode(&self.report(None));
        let path = worker_path(self.cfg.pid);
        let create = async move {
            match coord.create(&path, &report, NodeKind::Ephemeral).await {
                Err(CoordError::NodeExists) => {
                    coord.delete(&path, None).await.or_else(ignore_no_node)?;
                    coord.create(&path, &report, NodeKind::Ephemeral).await
                }
                other => other,
            }
        };
        ctx.spawn(create.into_actor(self).map(move |res, act, ctx| match res {
            Ok(()) => tracing::info!(worker = act.cfg.id, pid = act.cfg.pid, "registered"),
            Err(CoordError::SessionEnded) => {} // the state follower reconnects
            Err(e) => {
                tracing::warn!(worker = act.cfg.id, error = %e, "cannot register; retrying");
                if let Some(coord) = act.coord.clone() {
                    ctx.run_later(wait, move |act, ctx| {
                        act.register(ctx, coord, super::next_retry(wait))
                    });
                }
            }
        }));
    }

    /// This worker's report, from its role's status (if known).
    fn report(&self, status: Option<WorkerStatus>) -> WorkerReport {
        let role = self.core.reported();
        let applied = self.store.applied_seq();
        let lineage = self.store.lineage();
        WorkerReport {
            id: self.cfg.id,
            pid: self.cfg.pid,
            role,
            applied: status.map_or(applied, |s| s.applied_seq),
            last_epoch: status.map_or(lineage.owner(applied), |s| s.last_epoch),
            epoch: status.map_or(lineage.epoch(), |s| s.epoch),
            ready: status.is_some_and(|s| s.ready),
            session: self.coord.as_ref().map_or(0, |c| c.session_id()),
        }
    }

    /// Refreshes `/workers/<pid>` when the report changed.
    fn refresh_report(&mut self, ctx: &mut Context<Self>) {
        let Some(coord) = self.coord.clone() else {
            return;
        };
        let status = self.status();
        ctx.spawn(status.into_actor(self).map(move |status, act, _ctx| {
            let report = act.report(status);
            let progress_only = act.last_report.is_some_and(|last| {
                WorkerReport {
                    applied: report.applied,
                    last_epoch: report.last_epoch,
                    ..last
                } == report
            });
            let due = act.reported_at.elapsed() >= PROGRESS_EVERY;
            if act.last_report == Some(report) || (progress_only && !due) {
                return;
            }
            act.last_report = Some(report);
            act.reported_at = Instant::now();
            let path = worker_path(act.cfg.pid);
            let data = election::encode(&report);
            actix::spawn(async move {
                if let Err(CoordError::NoNode) = coord.set(&path, &data, None).await {
                    // Deleted by someone who thought this worker dead.
                    let _ = coord.create(&path, &data, NodeKind::Ephemeral).await;
                }
            });
        }));
    }

    fn status(&self) -> BoxFuture<'static, Option<WorkerStatus>> {
        match &self.role {
            Role::Slave(a) => {
                let a = a.clone();
                Box::pin(async move { a.send(GetStatus).await.ok() })
            }
            Role::Master(a) => {
                let a = a.clone();
                Box::pin(async move { a.send(GetStatus).await.ok() })
            }
            Role::Idle => Box::pin(async { None }),
        }
    }

    /// The epoch this worker leads under, if it leads.
    fn leading(&self) -> Option<u64> {
        self.core.leading()
    }

    /// Extends the master's lease by a round trip to the coordinator, if
    /// `/master` still names it; claims `/master` first in a new session.
    fn keep_lease(&mut self, ctx: &mut Context<Self>) {
        let (Some(epoch), Some(coord)) = (self.leading(), self.coord.clone()) else {
            return;
        };
        let (pid, session) = (self.cfg.pid, coord.session_id());
        let claimed = self.claimed == Some(session);
        // The timeout the coordinator granted, which may be shorter than
        // the one asked for.
        let granted = coord.session_timeout().min(self.cfg.session_timeout);
        let (lease, span) = (self.lease.clone(), lease_span(granted));
        let check = async move {
            let start = Instant::now();
            let node = coord.get(MASTER).await?;
            let record = node
                .as_ref()
                .and_then(|n| election::decode::<MasterRecord>(&n.data));
            let mine = record.is_some_and(|m| m.pid == pid && m.epoch == epoch);
            if mine && !claimed {
                // A compare-and-set: an election racing this one fails.
                let n = node.as_ref().ok_or(CoordError::NoNode)?;
                coord.set(MASTER, &n.data, Some(n.version)).await?;
            }
            if mine {
                lease.extend(start, span);
            }
            Ok::<_, CoordError>((record, mine))
        };
        ctx.spawn(check.into_actor(self).map(move |res, act, ctx| match res {
            Ok((_, true)) => act.claimed = Some(session),
            Ok((record, false)) => act.step(ctx, RoleInput::NotMine(record)),
            Err(e) => tracing::debug!(worker = act.cfg.id, error = %e, "lease not extended"),
        }));
    }

    /// Feeds the role's state machine and carries out what it decides.
    fn step(&mut self, ctx: &mut Context<Self>, input: RoleInput) {
        for effect in self.core.on(input) {
            self.carry_out(ctx, effect);
        }
    }

    fn carry_out(&mut self, ctx: &mut Context<Self>, effect: RoleEffect) {
        match effect {
            RoleEffect::Drain => self.drain(ctx),
            RoleEffect::Resume => {
                if let Role::Slave(slave) = &self.role {
                    slave.do_send(Resume);
                }
            }
            RoleEffect::StopSlave | RoleEffect::StopMaster => self.stop_role(ctx),
            RoleEffect::StartMaster { epoch } => self.start_master(ctx, epoch),
            RoleEffect::StartSlave => self.start_slave(),
            RoleEffect::RevokeLease => {
                self.lease.revoke();
                self.claimed = None;
            }
            RoleEffect::Wake { after_ms } => {
                let after = Duration::from_millis(after_ms);
                ctx.run_later(after, |act, ctx| act.step(ctx, RoleInput::Woke));
            }
            RoleEffect::Report => self.refresh_report(ctx),
        }
    }

    /// Elected: the slave drains up to a fence of its own.
    /// Only the answer of the latest drain is heard: one given up (a
    /// newer election named this worker again) ends with an error when its
    /// slave resumes, and must not count against the drain that followed.
    fn drain(&mut self, ctx: &mut Context<Self>) {
        self.drains += 1;
        let Role::Slave(slave) = &self.role else {
            // No slave to drain (cannot happen while following): a failed
            // try, never a lead without a drain.
            ctx.notify(Step(RoleInput::Drained(false)));
            return;
        };
        tracing::info!(worker = self.cfg.id, "elected master; draining");
        let (slave, this, heir) = (slave.clone(), self.drains, self.core.elected_as_heir());
        let drained = async move { drain(&slave, heir).await };
        ctx.spawn(drained.into_actor(self).map(move |res, act, ctx| {
            if act.drains != this {
                return;
            }
            match &res {
                Ok(applied) => tracing::info!(applied, "drained what the old master sent"),
                Err(e) => tracing::warn!(worker = act.cfg.id, error = %e, "cannot lead yet"),
            }
            act.step(ctx, RoleInput::Drained(res.is_ok()));
        }));
    }

    /// Stops the role's actor (it settles what it holds), then tells the
    /// state machine.
    fn stop_role(&mut self, ctx: &mut Context<Self>) {
        let stop: BoxFuture<'static, ()> = match std::mem::replace(&mut self.role, Role::Idle) {
            // (A slave is stopped only once drained, to lead.)
            Role::Slave(a) => Box::pin(async move { a.send(Promoted).await.unwrap_or(()) }),
            Role::Master(a) => Box::pin(async move { a.send(Shutdown).await.unwrap_or(()) }),
            Role::Idle => Box::pin(async {}),
        };
        ctx.spawn(
            stop.into_actor(self)
                .map(|(), act, ctx| act.step(ctx, RoleInput::Stopped)),
        );
    }

    /// Leads under `epoch`: elected in this session, so the next lease
    /// check extends the lease.
    fn start_master(&mut self, ctx: &mut Context<Self>, epoch: u64) {
        tracing::info!(worker = self.cfg.id, epoch, "leading");
        self.claimed = self.coord.as_ref().map(|c| c.session_id());
        self.lease.revoke();
        let stamp = Stamp {
            cluster: self.cfg.cluster,
            epoch,
        };
        let master = MasterWorker::new(
            self.cfg.id,
            self.store.clone(),
            self.broker.clone(),
            stamp,
            self.lease.clone(),
        )
        .with_sync_cap(self.cfg.sync_cap);
        self.role = Role::Master(master.start());
        self.keep_lease(ctx);
    }
}
