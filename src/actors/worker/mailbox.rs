//! What the Worker answers and watches: its role's steps, the
//! coordinator's `/master` and session state, its start and stop, and
//! status requests.

use super::*;

/// An input for the role's state machine, on the actor's next turn.
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct Step(pub(super) RoleInput);

impl Handler<Step> for Worker {
    type Result = ();

    fn handle(&mut self, Step(input): Step, ctx: &mut Context<Self>) {
        self.step(ctx, input);
    }
}

/// Asks an elected slave to drain, bounded by [`DRAIN_TIMEOUT`].
pub(super) async fn drain(slave: &Addr<SlaveWorker>, heir: bool) -> Result<u64, Error> {
    tokio::time::timeout(DRAIN_TIMEOUT, slave.send(Drain { heir }))
        .await
        .map_err(|_| Error::Unavailable("drain timed out".into()))?
        .map_err(|e| Error::Unavailable(e.to_string()))?
}

pub(super) fn ignore_no_node(e: CoordError) -> CoordResult<()> {
    match e {
        CoordError::NoNode => Ok(()),
        e => Err(e),
    }
}

/// `/master` as it changes, until the session ends.
#[derive(Message)]
#[rtype(result = "()")]
struct MasterSeen(Option<MasterRecord>);

/// The session's state changed.
#[derive(Message)]
#[rtype(result = "()")]
struct SessionSeen(SessionState, u64);

pub(super) async fn follow_master(coord: Arc<dyn Coordinator>, worker: Addr<Worker>) {
    loop {
        match coord.watch_data(MASTER).await {
            Ok((node, watch)) => {
                let record = node.and_then(|n| election::decode(&n.data));
                worker.do_send(MasterSeen(record));
                if watch.await == WatchEvent::SessionEnded {
                    return;
                }
            }
            Err(CoordError::SessionEnded) => return,
            Err(_) => tokio::time::sleep(FIRST_RETRY).await,
        }
    }
}

pub(super) async fn follow_state(coord: Arc<dyn Coordinator>, worker: Addr<Worker>) {
    let session = coord.session_id();
    let mut states = coord.state();
    loop {
        let state = *states.borrow_and_update();
        worker.do_send(SessionSeen(state, session));
        if state.is_final() || states.changed().await.is_err() {
            return;
        }
    }
}

impl Actor for Worker {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        tracing::info!(worker = self.cfg.id, pid = self.cfg.pid, "worker starting");
        self.start_slave();
        self.connect(ctx, FIRST_RETRY);
        ctx.run_interval(REPORT_EVERY, |act, ctx| act.refresh_report(ctx));
        let every = (self.cfg.session_timeout / 6).max(Duration::from_millis(10));
        ctx.run_interval(every, |act, ctx| act.keep_lease(ctx));
    }
}

impl Handler<MasterSeen> for Worker {
    type Result = ();

    fn handle(&mut self, MasterSeen(record): MasterSeen, ctx: &mut Context<Self>) {
        self.step(ctx, RoleInput::Master(record));
    }
}

impl Handler<SessionSeen> for Worker {
    type Result = ();

    fn handle(&mut self, SessionSeen(state, session): SessionSeen, ctx: &mut Context<Self>) {
        let current = self.coord.as_ref().map(|c| c.session_id());
        if current != Some(session) || !state.is_final() {
            return;
        }
        // The lease has run out by now (it is shorter than the session);
        // revoking says so at once. A new session follows.
        tracing::warn!(worker = self.cfg.id, ?state, "coordinator session ended");
        self.lease.revoke();
        self.coord = None;
        if !self.stopping {
            self.connect(ctx, FIRST_RETRY);
        }
    }
}

impl Handler<GetStatus> for Worker {
    type Result = ResponseFuture<WorkerStatus>;

    fn handle(&mut self, _: GetStatus, _ctx: &mut Context<Self>) -> Self::Result {
        let status = self.status();
        let fallback = self.report(None);
        Box::pin(async move {
            status.await.unwrap_or(WorkerStatus {
                id: fallback.id,
                master: false,
                applied_seq: fallback.applied,
                ready: false,
                reads_served: 0,
                epoch: fallback.epoch,
                last_epoch: fallback.last_epoch,
            })
        })
    }
}

impl Handler<Shutdown> for Worker {
    type Result = ResponseActFuture<Self, ()>;

    /// Stops the role (it settles what it holds and flushes), then closes
    /// the session (its node goes at once), then the worker.
    fn handle(&mut self, _: Shutdown, _ctx: &mut Context<Self>) -> Self::Result {
        self.stopping = true;
        self.core.on(RoleInput::Shutdown);
        self.lease.revoke();
        let role = std::mem::replace(&mut self.role, Role::Idle);
        let coord = self.coord.take();
        let store = self.store.clone();
        let id = self.cfg.id;
        let stop = async move {
            match role {
                Role::Slave(a) => a.send(Shutdown).await.unwrap_or(()),
                Role::Master(a) => a.send(Shutdown).await.unwrap_or(()),
                Role::Idle => {}
            }
            // Waits a while for an early install still being written, so
            // that a worker stopped on purpose keeps what it held; bounded,
            // so that a stop ends whatever the disk does.
            match blocking(move || store.flush_within(STOP_FLUSH_WAIT)).await {
                Ok(true) => {}
                Ok(false) => tracing::warn!(
                    worker = id,
                    "stopped while its install was still being written: it takes a snapshot again"
                ),
                Err(e) => tracing::error!(worker = id, error = %e, "flush on stop failed"),
            }
            if let Some(coord) = coord {
                coord.close().await;
            }
        };
        Box::pin(stop.into_actor(self).map(|(), _act, ctx| ctx.stop()))
    }
}
