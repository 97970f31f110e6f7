//! What the ElectionWatcher is asked by the HTTP API, the Scaler and the
//! system: crashes, its view of the cluster, its settings, the Scaler's
//! decisions, and to stop.

use super::*;

impl ElectionWatcher {
    /// Only the leading orchestrator's watcher kills workers: the others
    /// say which one leads.
    fn must_lead(&self) -> Result<()> {
        if self.acting() {
            return Ok(());
        }
        let leader = self
            .lead
            .views()
            .into_iter()
            .find(|o| o.leading)
            .map_or_else(|| "none now".to_owned(), |o| o.addr);
        Err(Error::Unavailable(format!(
            "this orchestrator does not lead; the leading one: {leader}"
        )))
    }
}

/// This orchestrator's standing: whether it leads, with its workers up.
#[derive(Clone, Debug)]
pub struct Standing {
    pub leading: bool,
    /// It leads, its workers were brought up and its watcher acts.
    pub acting: bool,
    /// Why bringing the workers up failed last, while it leads.
    pub error: Option<String>,
}

/// Asks for [`Standing`].
#[derive(Message)]
#[rtype(result = "Standing")]
pub struct GetStanding;

impl Handler<GetStanding> for ElectionWatcher {
    type Result = MessageResult<GetStanding>;

    fn handle(&mut self, _: GetStanding, _ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(Standing {
            leading: self.lead.core.leading(),
            acting: self.acting(),
            error: self.lead.core.refused().map(str::to_owned),
        })
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

impl Handler<CrashMaster> for ElectionWatcher {
    type Result = ResponseActFuture<Self, Result<u64>>;

    fn handle(&mut self, _: CrashMaster, _ctx: &mut Context<Self>) -> Self::Result {
        if let Err(e) = self.must_lead() {
            return Box::pin(fut::ready(Err(e)));
        }
        match self.core.live_master() {
            Some(m) => self.crash(m.pid),
            None => Box::pin(fut::ready(Err(Error::Unavailable("no master now".into())))),
        }
    }
}

impl Handler<CrashSlave> for ElectionWatcher {
    type Result = ResponseActFuture<Self, Result<u64>>;

    fn handle(&mut self, _: CrashSlave, _ctx: &mut Context<Self>) -> Self::Result {
        if let Err(e) = self.must_lead() {
            return Box::pin(fut::ready(Err(e)));
        }
        let master = self.core.master().map(|m| m.pid);
        let slave = self
            .running()
            .iter()
            .map(|w| w.pid)
            .filter(|&pid| Some(pid) != master)
            .max();
        match slave {
            Some(pid) => self.crash(pid),
            None => Box::pin(fut::ready(Err(Error::Unavailable("no slave now".into())))),
        }
    }
}

impl Handler<GetCluster> for ElectionWatcher {
    type Result = MessageResult<GetCluster>;

    fn handle(&mut self, _: GetCluster, _ctx: &mut Context<Self>) -> Self::Result {
        let master = self.core.master();
        let view = self.core.view();
        let head = master
            .and_then(|m| view.get(&m.pid))
            .map_or(0, |r| r.applied);
        let workers = view
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
                reads_served: None,
            })
            .collect();
        // A watcher that does not act starts nothing (what its core
        // decided was not carried out).
        let starting_ids = if self.acting() {
            self.core.starting_ids()
        } else {
            Vec::new()
        };
        MessageResult(ClusterView {
            cluster: format!("{:016x}", self.cluster),
            master: master.map(|m| m.pid),
            epoch: master.map_or(0, |m| m.epoch),
            workers,
            starting: starting_ids.len(),
            starting_ids,
            events: self.events.iter().cloned().collect(),
            totals: self.totals.clone(),
            scaler: None,
            leading: self.lead.core.leading(),
            acting: self.acting(),
            orchestrators: self.lead.views(),
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
        let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        self.hung_after = ms;
        self.core.set_hung_after(ms);
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
        self.core.retiring(pid)
    }
}

/// An id for a new worker (the Scaler's), that no worker has had.
#[derive(Message)]
#[rtype(result = "u64")]
pub struct ReserveId;

impl Handler<ReserveId> for ElectionWatcher {
    type Result = u64;

    fn handle(&mut self, _: ReserveId, _ctx: &mut Context<Self>) -> u64 {
        let running = self.running();
        self.core.reserve_id(&running)
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

    fn handle(&mut self, _: StopWatching, ctx: &mut Context<Self>) {
        self.lead_on(ctx, LeadInput::Retire);
        self.step(ctx, Input::Stop);
    }
}

/// Ends the watcher's coordinator session (the cluster has stopped, or
/// this orchestrator leaves it): its node and `/leader`, if it held it,
/// go at once, so that another orchestrator leads without waiting for the
/// session to expire.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Resign;

impl Handler<Resign> for ElectionWatcher {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: Resign, ctx: &mut Context<Self>) -> Self::Result {
        self.lead_on(ctx, LeadInput::Stop);
        let coord = self.coord.take();
        Box::pin(async move {
            if let Some(c) = coord {
                c.close().await;
            }
        })
    }
}

/// How many other orchestrators serve the cluster now, as the coordinator
/// says (the cached list when it cannot be asked).
#[derive(Message)]
#[rtype(result = "usize")]
pub struct CountOthers;

impl Handler<CountOthers> for ElectionWatcher {
    type Result = ResponseFuture<usize>;

    fn handle(&mut self, _: CountOthers, _ctx: &mut Context<Self>) -> Self::Result {
        let cached = self.lead.orchestrators.len().saturating_sub(1);
        let Some(coord) = self.coord.clone() else {
            return Box::pin(async move { cached });
        };
        let mine = coord.session_id();
        Box::pin(async move {
            match coord_io::read_orchestrators(coord).await {
                Ok((all, _)) => all.iter().filter(|o| o.session != mine).count(),
                Err(_) => cached,
            }
        })
    }
}
