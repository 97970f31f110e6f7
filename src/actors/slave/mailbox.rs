//! What the SlaveWorker answers: its start and stop, the deliveries of
//! its consumers, and the Worker's messages. Each is fed to the core.

use super::*;

impl Actor for SlaveWorker {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.feed(ctx, Input::Start);
        ctx.run_interval(TICK, |act, ctx| act.feed(ctx, Input::Tick));
    }

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        if let Err(e) = self.store.flush_written() {
            tracing::error!(worker = self.id, error = %e, "flush on stop failed");
        }
        tracing::info!(worker = self.id, "slave stopped");
    }
}

impl StreamHandler<SyncDeliveries> for SlaveWorker {
    fn handle(&mut self, SyncDeliveries(batch): SyncDeliveries, ctx: &mut Context<Self>) {
        let items = batch
            .into_iter()
            .map(|d| {
                let item = wire::decode_sync(&d.message.body).map_err(|e| e.to_string());
                let token = self.hold(d);
                Delivered { token, item }
            })
            .collect();
        self.feed(ctx, Input::Syncs(items));
    }

    fn finished(&mut self, ctx: &mut Context<Self>) {
        self.sync = None;
        self.feed(ctx, Input::ConsumerEnded(Consumer::Sync));
    }
}

impl StreamHandler<SnapshotAnswer> for SlaveWorker {
    fn handle(&mut self, SnapshotAnswer(request, d): SnapshotAnswer, ctx: &mut Context<Self>) {
        let Some(d) = d else {
            if self.answers.as_ref().is_some_and(|(r, _)| *r == request) {
                self.answers = None;
            }
            return self.feed(ctx, Input::SnapshotLost { request });
        };
        let item = wire::decode::<Reply>(&d.message.body).map_err(|e| e.to_string());
        let token = self.hold(d);
        let answer = Delivered { token, item };
        self.feed(ctx, Input::SnapshotAnswer { request, answer });
    }

    /// Its end is the last item of the stream (so that it names its
    /// request).
    fn finished(&mut self, _ctx: &mut Context<Self>) {}
}

impl StreamHandler<ReadBatch> for SlaveWorker {
    fn handle(&mut self, ReadBatch(batch): ReadBatch, ctx: &mut Context<Self>) {
        let items = batch.into_iter().flat_map(|d| self.hold_batch(d)).collect();
        self.feed(ctx, Input::Reads(items));
    }

    fn finished(&mut self, ctx: &mut Context<Self>) {
        self.reads = None;
        self.feed(ctx, Input::ConsumerEnded(Consumer::Reads));
    }
}

impl Handler<GetStatus> for SlaveWorker {
    type Result = MessageResult<GetStatus>;

    fn handle(&mut self, _: GetStatus, _ctx: &mut Context<Self>) -> Self::Result {
        let s = self.core.status(self.now());
        MessageResult(WorkerStatus {
            id: self.id,
            master: false,
            applied_seq: s.applied,
            ready: s.ready,
            reads_served: s.reads_served,
            epoch: s.epoch,
            last_epoch: s.last_epoch,
        })
    }
}

impl Handler<Shutdown> for SlaveWorker {
    type Result = ResponseActFuture<Self, ()>;

    /// Stops consuming (what it held goes back), then deletes its sync
    /// queue: a slave stopped on purpose must not leave a queue filling
    /// behind it. If it comes back, it binds a new one and takes a
    /// snapshot (one that says "you are current" if nothing was written).
    /// The queue is declared before each try to delete it (see
    /// [`broker::declare_and_delete`]: a delete cut short would otherwise
    /// leave its binding, and every write would stall), retried for at
    /// most [`REMOVE_WITHIN`], well within the time a runtime gives a
    /// worker to stop. Answers once the queue is gone, or that time is out
    /// (a process exits right after).
    fn handle(&mut self, _: Shutdown, ctx: &mut Context<Self>) -> Self::Result {
        self.feed(ctx, Input::Shutdown);
        let (broker, queue, id) = (self.broker.clone(), broker::sync_queue(self.id), self.id);
        let kind = broker::sync_queue_kind(self.sync_cap);
        let delete = async move {
            let removed =
                tokio::time::timeout(REMOVE_WITHIN, remove_queue(broker, queue, kind, id));
            if removed.await.is_err() {
                tracing::warn!(
                    worker = id,
                    "the sync queue is not deleted; stopping all the same"
                );
            }
        };
        Box::pin(delete.into_actor(self).map(|(), _act, ctx| ctx.stop()))
    }
}

impl Handler<Promoted> for SlaveWorker {
    type Result = ();

    /// Stops consuming (what it held goes back) and stops; its sync queue
    /// is the master's to remove (`MasterWorker::remove_own_sync_queue`).
    fn handle(&mut self, _: Promoted, ctx: &mut Context<Self>) {
        self.feed(ctx, Input::Shutdown);
        ctx.stop();
    }
}

impl Handler<Drain> for SlaveWorker {
    type Result = ResponseFuture<Result<u64>>;

    /// Elected: stops serving reads (what it holds goes back to `readQ`),
    /// publishes a fence to `syncQ` and applies everything that comes
    /// before it in its own queue, then answers the seq it reached. The
    /// worker then stops it and leads on the same store.
    fn handle(&mut self, Drain { heir }: Drain, ctx: &mut Context<Self>) -> Self::Result {
        let (done, answer) = oneshot::channel();
        // A fence of an earlier drain, still in the queue, must not pass
        // for this one's.
        let nonce = fastrand::u64(..);
        self.drain = Some((nonce, done));
        self.feed(ctx, Input::Drain { nonce, heir });
        Box::pin(async move {
            answer
                .await
                .unwrap_or_else(|_| Err(Error::Unavailable("the slave stopped draining".into())))
        })
    }
}

impl Handler<Rejoined> for SlaveWorker {
    type Result = ();

    fn handle(&mut self, _: Rejoined, ctx: &mut Context<Self>) {
        self.feed(ctx, Input::Rejoined);
    }
}

impl Handler<Resume> for SlaveWorker {
    type Result = ();

    /// The drain failed (or timed out): this replica goes on as a slave,
    /// serving reads again once it is caught up.
    fn handle(&mut self, _: Resume, ctx: &mut Context<Self>) {
        self.drain = None;
        self.feed(ctx, Input::Resume);
    }
}
