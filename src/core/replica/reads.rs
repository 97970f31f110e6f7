//! Reads and the consumers: a read is served once the replica has applied
//! the seq it needs, parked for a bounded time until then, and given back
//! to `readQ` whenever the replica stops serving; the sync queue and
//! `readQ` are consumed exactly while they are wanted, tried again with
//! backoff while the broker is away.

use super::{
    Consumer, Delivered, Effect, Level, ReplicaCore, Token, FIRST_RETRY_MS, READ_WAIT_MS, RETRY,
};

/// A read waiting for the replica to apply `min_seq`.
#[derive(Debug)]
pub(super) struct Parked {
    token: Token,
    min_seq: u64,
    deadline: u64,
}

/// Where a consumer stands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) enum Subscription {
    #[default]
    Off,
    /// [`Effect::Consume`] given; the next failure waits `wait`.
    Asked {
        wait: u64,
    },
    On,
    /// Failed; to be asked again at `at`.
    RetryAt {
        at: u64,
        wait: u64,
    },
}

fn name(c: Consumer) -> &'static str {
    match c {
        Consumer::Sync => "the sync queue",
        Consumer::Reads => "readQ",
    }
}

impl ReplicaCore {
    /// Whether reads are served now: caught up, not draining or closing.
    fn serves(&self) -> bool {
        self.ready && !self.diverged && self.drain.is_none() && !self.closing
    }

    fn wants(&self, c: Consumer) -> bool {
        match c {
            Consumer::Sync => !self.closing,
            Consumer::Reads => self.serves(),
        }
    }

    fn subscription(&mut self, c: Consumer) -> &mut Subscription {
        match c {
            Consumer::Sync => &mut self.sync,
            Consumer::Reads => &mut self.reads,
        }
    }

    /// Starts or stops each consumer as it is wanted or not.
    pub(super) fn subscribe(&mut self) {
        for c in [Consumer::Sync, Consumer::Reads] {
            let (wanted, now) = (self.wants(c), self.now);
            let sub = self.subscription(c);
            let (next, effect) = match (wanted, *sub) {
                (true, Subscription::Off) => (
                    Subscription::Asked {
                        wait: FIRST_RETRY_MS,
                    },
                    Some(Effect::Consume(c)),
                ),
                (true, Subscription::RetryAt { at, wait }) if at <= now => {
                    (Subscription::Asked { wait }, Some(Effect::Consume(c)))
                }
                (false, Subscription::On | Subscription::Asked { .. }) => {
                    (Subscription::Off, Some(Effect::StopConsuming(c)))
                }
                (false, _) => (Subscription::Off, None),
                (true, kept) => (kept, None),
            };
            *sub = next;
            self.fx.extend(effect);
        }
    }

    pub(super) fn consuming(&mut self, c: Consumer) {
        if !self.wants(c) {
            *self.subscription(c) = Subscription::Off;
            return self.fx.push(Effect::StopConsuming(c));
        }
        *self.subscription(c) = Subscription::On;
        match c {
            Consumer::Sync
                if self.subscribed_before
                    && self.ready
                    && self.mutation != Some(super::Mutation::TrustResubscribe) =>
            {
                self.confirm_current()
            }
            Consumer::Sync => {
                self.subscribed_before = true;
                self.first_ask();
            }
            Consumer::Reads => {
                let msg = format!("slave caught up at seq {}; serving reads", self.applied);
                self.log(Level::Info, msg);
            }
        }
    }

    pub(super) fn consume_failed(&mut self, c: Consumer, error: &str) {
        let now = self.now;
        let sub = self.subscription(c);
        let Subscription::Asked { wait } = *sub else {
            return; // given up meanwhile
        };
        *sub = Subscription::RetryAt {
            at: now.saturating_add(wait),
            wait: RETRY.next(wait),
        };
        self.log(
            Level::Warn,
            format!("cannot consume {}: {error}; retrying", name(c)),
        );
    }

    pub(super) fn consumer_ended(&mut self, c: Consumer) {
        *self.subscription(c) = Subscription::Off;
        if c == Consumer::Sync && self.mutation != Some(super::Mutation::TrustResubscribe) {
            self.sync_lost();
        }
        if self.wants(c) {
            self.log(
                Level::Warn,
                format!("{} consumer ended; resubscribing", name(c)),
            );
        }
    }

    pub(super) fn reads(&mut self, batch: Vec<Delivered<u64>>) {
        let (mut now, mut back, mut dropped) = (Vec::new(), Vec::new(), Vec::new());
        for Delivered { token, item } in batch {
            match item {
                Err(e) => {
                    self.log(Level::Warn, format!("bad read message dropped: {e}"));
                    dropped.push(token);
                }
                Ok((stamp, _)) if stamp.cluster != self.cluster => {
                    self.log(Level::Warn, "a read of another cluster dropped".into());
                    dropped.push(token);
                }
                Ok(_) if !self.serves() => back.push(token),
                Ok((_, min_seq)) if min_seq <= self.applied => now.push(token),
                Ok((_, min_seq)) => {
                    self.awaited = self.awaited.max(min_seq);
                    self.parked.push(Parked {
                        token,
                        min_seq,
                        deadline: self.now.saturating_add(READ_WAIT_MS),
                    });
                }
            }
        }
        self.ack(dropped);
        self.requeue(back);
        self.serve(now);
    }

    fn serve(&mut self, tokens: Vec<Token>) {
        if !tokens.is_empty() {
            self.reads_served += tokens.len() as u64;
            self.fx.push(Effect::Serve(tokens));
        }
    }

    fn requeue(&mut self, tokens: Vec<Token>) {
        if !tokens.is_empty() {
            self.fx.push(Effect::Requeue(tokens));
        }
    }

    /// Serves the parked reads the applied seq now allows.
    pub(super) fn serve_parked(&mut self) {
        if !self.serves() {
            return;
        }
        let applied = self.applied;
        let (now, later) = std::mem::take(&mut self.parked)
            .into_iter()
            .partition(|p| p.min_seq <= applied);
        self.parked = later;
        self.serve(now.into_iter().map(|p: Parked| p.token).collect());
    }

    /// Answers "unavailable" to the reads that waited too long.
    pub(super) fn expire_parked(&mut self) {
        let now = self.now;
        let (late, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.parked)
            .into_iter()
            .partition(|p| p.deadline <= now);
        self.parked = waiting;
        let (id, applied) = (self.id, self.applied);
        let answers: Vec<_> = late
            .into_iter()
            .map(|p| {
                let why = format!("slave {id} has applied {applied} of {}", p.min_seq);
                (p.token, why)
            })
            .collect();
        if !answers.is_empty() {
            self.fx.push(Effect::Unavailable(answers));
        }
    }

    /// Gives the parked reads back to `readQ`, for the other slaves.
    pub(super) fn requeue_parked(&mut self) {
        let tokens = self.parked.drain(..).map(|p| p.token).collect();
        self.requeue(tokens);
    }

    /// Whether a read waits for a seq not applied yet, or did until it
    /// gave up waiting (a read waits less than a gap is given, and the one
    /// asked again must not start the gap's clock afresh).
    pub(super) fn reads_wait(&self) -> bool {
        let kept = self.mutation != Some(super::Mutation::ForgetAwaited);
        (kept && self.awaited > self.applied)
            || self.parked.iter().any(|p| p.min_seq > self.applied)
    }
}
