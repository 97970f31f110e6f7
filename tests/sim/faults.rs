//! Faults of the services around the workers: the broker restarting, and
//! the coordinator away for a while.

use dbaas::core::replica::{Consumer, Input as ReplicaInput};
use dbaas::core::watcher::Input;

use super::world::World;

impl World {
    /// The broker restarts: every consumer's channel dies (what it held
    /// goes back to its durable queue), and every publish on its way is
    /// neither routed nor confirmed. Groups the master holds stay in its
    /// pipeline, but their writes are in `writeQ` again (the broker gave
    /// them back): each is answered twice, from the record the second
    /// time; failed publishes are sent again.
    pub fn broker_restart(&mut self) {
        self.log("the broker restarts".into());
        for q in self.queues.values_mut() {
            q.consumer_died();
        }
        for w in self.workers.values_mut().filter(|w| w.alive) {
            if w.replica.is_some() && w.consuming {
                w.consuming = false;
                w.replica_inbox
                    .push(ReplicaInput::ConsumerEnded(Consumer::Sync));
            }
        }
        let held: Vec<Vec<u64>> = self
            .leading
            .values()
            .flat_map(|l| l.groups.values().flatten())
            .map(|m| m.iter().map(|e| e.0).collect())
            .collect();
        for message in held.into_iter().rev() {
            self.write_q.push_front(message);
        }
        for p in std::mem::take(&mut self.publishes) {
            let now = self.now;
            let leased = self.leased(p.worker, p.epoch);
            if let Some(mut l) = self.leading.remove(&p.worker) {
                if (l.pid, l.epoch) == (p.pid, p.epoch) {
                    let effects = l.pipeline.published(now, leased, p.group, p.run, false);
                    self.carry_pipeline(&mut l, effects);
                }
                self.leading.insert(p.worker, l);
            }
        }
    }

    /// Worker `id`'s sync queue is deleted by the broker (unused while
    /// its consumer was cut off) and declared afresh, empty: what it held
    /// is gone, and the replica's consumer ends (it subscribes again).
    pub fn expire_sync_queue(&mut self, id: u64) {
        self.log(format!(
            "worker {id}'s sync queue expires and comes back empty"
        ));
        self.queues.insert(id, Default::default());
        if let Some(w) = self.workers.get_mut(&id).filter(|w| w.replica.is_some()) {
            w.consuming = false;
            w.replica_inbox
                .push(ReplicaInput::ConsumerEnded(Consumer::Sync));
        }
    }

    /// The coordinator is away for `ms`: no lease can be renewed (every
    /// master stops taking writes), no session expires, `/master` cannot
    /// change, and the watcher is cut off; it hears everything once the
    /// coordinator is back.
    pub fn coordinator_outage(&mut self, ms: u64) {
        self.log(format!("the coordinator is away for {ms} ms"));
        self.coord_down_until = Some(self.now + ms);
        for w in self.workers.values_mut() {
            w.leased = false;
        }
        self.inbox.push((self.now, Input::Disconnected));
    }

    /// Whether the coordinator is away now; brings it back when its time
    /// is up.
    pub(super) fn coordinator_away(&mut self) -> bool {
        match self.coord_down_until {
            Some(until) if until <= self.now => {
                self.coord_down_until = None;
                self.log("the coordinator is back".into());
                let record = self.master.map(|m| (m, self.version));
                let view = self.view();
                let now = self.now;
                self.inbox.push((now, Input::Connected));
                self.inbox.push((now, Input::Master(record)));
                self.inbox.push((now, Input::View(view)));
                false
            }
            Some(_) => true,
            None => false,
        }
    }
}
