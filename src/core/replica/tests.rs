//! Scenarios of the replica core on a virtual clock: inputs fed one by
//! one, the effects each answers checked.

mod catchup;
mod drain;
mod lineage;
mod restore;
mod snapshot;
mod sync;

use super::*;
use crate::model::wire::{
    Entry, Reply, Snapshot, SnapshotPart, Stamp, SyncBatch, SyncItem, SyncMessage,
};
use crate::model::WriteOp;

const ID: u64 = 7;
const CLUSTER: u64 = 0xC1;
const TICK: u64 = 50;

/// A lineage of `(epoch, base)` pairs.
fn lineage(epochs: &[(u64, u64)]) -> Lineage {
    let mut l = Lineage::default();
    for &(epoch, base) in epochs {
        assert!(l.begin(epoch, base));
    }
    l
}

fn write(seq: u64, epoch: u64) -> SyncMessage {
    SyncMessage {
        seq,
        epoch,
        request_id: u128::from(seq),
        entry: Entry::Write(WriteOp::Clear { table: None }),
    }
}

/// A sync batch of `seqs`, all written by `epoch`, sent under `sender`.
fn batch(sender: &Lineage, epoch: u64, seqs: std::ops::RangeInclusive<u64>) -> SyncItem {
    SyncItem::Writes(SyncBatch {
        lineage: sender.clone(),
        writes: seqs.map(|s| write(s, epoch)).collect(),
    })
}

fn stamp(epoch: u64) -> Stamp {
    Stamp {
        cluster: CLUSTER,
        epoch,
    }
}

fn snapshot_at(seq: u64) -> Reply {
    Reply::Snapshot(Ok(Some(Snapshot {
        seq,
        entries: Vec::new(),
    })))
}

/// A replica core, its clock and the tokens of what was delivered to it.
struct Replica {
    core: ReplicaCore,
    now: u64,
    next_token: Token,
}

impl Replica {
    fn new(applied: u64, lineage: Lineage) -> Self {
        Replica {
            core: ReplicaCore::new(ID, CLUSTER, applied, lineage),
            now: 1_000,
            next_token: 0,
        }
    }

    /// Started, bound, told by the master that it is current, serving.
    fn caught_up(applied: u64, lineage: Lineage) -> Self {
        let mut r = Replica::new(applied, lineage.clone());
        r.on(Input::Start);
        let fx = r.on(Input::Consuming(Consumer::Sync));
        let request = asked(&fx).expect("a first snapshot asked for").0;
        r.answer(request, stamp(lineage.epoch()), Reply::Snapshot(Ok(None)));
        let fx = r.on(Input::Installed {
            request,
            result: Ok((applied, lineage)),
        });
        assert!(fx.contains(&Effect::Consume(Consumer::Reads)), "{fx:?}");
        r.on(Input::Consuming(Consumer::Reads));
        r
    }

    fn mutated(mut self, mutation: Mutation) -> Self {
        self.core = self.core.mutated(mutation);
        self
    }

    fn on(&mut self, input: Input) -> Vec<Effect> {
        self.core.on(input, self.now)
    }

    fn token(&mut self) -> Token {
        self.next_token += 1;
        self.next_token
    }

    /// Delivers sync items of this cluster in one group.
    fn syncs(&mut self, items: Vec<SyncItem>) -> (Vec<Token>, Vec<Effect>) {
        let delivered: Vec<_> = items
            .into_iter()
            .map(|item| Delivered {
                token: self.token(),
                item: Ok((stamp(1), item)),
            })
            .collect();
        let tokens = delivered.iter().map(|d| d.token).collect();
        (tokens, self.on(Input::Syncs(delivered)))
    }

    fn sync(&mut self, item: SyncItem) -> (Token, Vec<Effect>) {
        let (tokens, fx) = self.syncs(vec![item]);
        (tokens[0], fx)
    }

    fn read(&mut self, min_seq: u64) -> (Token, Vec<Effect>) {
        let token = self.token();
        let item = Ok((stamp(1), min_seq));
        (
            token,
            self.on(Input::Reads(vec![Delivered { token, item }])),
        )
    }

    fn answer(&mut self, request: u64, stamp: Stamp, reply: Reply) -> (Token, Vec<Effect>) {
        let token = self.token();
        let answer = Delivered {
            token,
            item: Ok((stamp, reply)),
        };
        (token, self.on(Input::SnapshotAnswer { request, answer }))
    }

    fn applied(&mut self, seq: u64) -> Vec<Effect> {
        self.on(Input::Applied { seq, error: None })
    }

    /// Ticks until `ms` have passed; answers every effect on the way.
    fn wait(&mut self, ms: u64) -> Vec<Effect> {
        let end = self.now + ms;
        let mut fx = Vec::new();
        while self.now < end {
            self.now = (self.now + TICK).min(end);
            fx.extend(self.on(Input::Tick));
        }
        fx
    }

    fn ready(&self) -> bool {
        self.core.status(self.now).ready
    }
}

/// The seqs of the run to apply, if one starts.
fn run(fx: &[Effect]) -> Option<(u64, u64)> {
    fx.iter().find_map(|e| match e {
        Effect::Apply { writes, .. } => Some((writes.first()?.seq, writes.last()?.seq)),
        _ => None,
    })
}

/// The request and `have_seq` of a snapshot asked for.
fn asked(fx: &[Effect]) -> Option<(u64, u64)> {
    fx.iter().find_map(|e| match e {
        Effect::AskSnapshot {
            request, have_seq, ..
        } => Some((*request, *have_seq)),
        _ => None,
    })
}

fn installs(fx: &[Effect]) -> bool {
    fx.iter().any(|e| matches!(e, Effect::Install { .. }))
}

fn acked(fx: &[Effect]) -> Vec<Token> {
    tokens(fx, |e| match e {
        Effect::Ack(t) => Some(t.clone()),
        _ => None,
    })
}

fn requeued(fx: &[Effect]) -> Vec<Token> {
    tokens(fx, |e| match e {
        Effect::Requeue(t) => Some(t.clone()),
        _ => None,
    })
}

fn served(fx: &[Effect]) -> Vec<Token> {
    tokens(fx, |e| match e {
        Effect::Serve(t) => Some(t.clone()),
        _ => None,
    })
}

fn unavailable(fx: &[Effect]) -> Vec<Token> {
    tokens(fx, |e| match e {
        Effect::Unavailable(t) => Some(t.iter().map(|(t, _)| *t).collect()),
        _ => None,
    })
}

fn tokens(fx: &[Effect], pick: impl Fn(&Effect) -> Option<Vec<Token>>) -> Vec<Token> {
    fx.iter().filter_map(pick).flatten().collect()
}

fn logged(fx: &[Effect], level: Level, part: &str) -> bool {
    fx.iter()
        .any(|e| matches!(e, Effect::Log(l, m) if *l == level && m.contains(part)))
}

/// Every effect that consumes or stops consuming `readQ`.
fn reads_switched(fx: &[Effect]) -> Vec<&Effect> {
    fx.iter()
        .filter(|e| {
            matches!(
                e,
                Effect::Consume(Consumer::Reads) | Effect::StopConsuming(Consumer::Reads)
            )
        })
        .collect()
}

#[test]
fn it_binds_its_sync_queue_before_it_asks_for_a_snapshot_and_serves_only_once_installed() {
    let l = lineage(&[(1, 0)]);
    let mut r = Replica::new(3, l.clone());
    let fx = r.on(Input::Start);
    assert_eq!(fx.last(), Some(&Effect::Consume(Consumer::Sync)));
    assert_eq!(asked(&fx), None, "nothing asked before the queue is bound");
    let fx = r.on(Input::Consuming(Consumer::Sync));
    let (request, have) = asked(&fx).expect("asked once bound");
    assert_eq!(have, 3);
    // Syncs queued meanwhile wait for the snapshot.
    let (_, fx) = r.sync(batch(&l, 1, 4..=9));
    assert_eq!(run(&fx), None);
    let (token, fx) = r.answer(request, stamp(1), snapshot_at(6));
    assert_eq!(acked(&fx), vec![token]);
    assert!(installs(&fx));
    assert!(reads_switched(&fx).is_empty(), "no reads before it is in");
    let fx = r.on(Input::Installed {
        request,
        result: Ok((6, l)),
    });
    assert_eq!(run(&fx), Some((7, 9)), "what queued after it applies");
    assert_eq!(reads_switched(&fx), vec![&Effect::Consume(Consumer::Reads)]);
    let fx = r.on(Input::Consuming(Consumer::Reads));
    assert!(logged(&fx, Level::Info, "serving reads"));
}

#[test]
fn a_read_waits_for_its_seq_then_is_served_or_answered_unavailable() {
    let l = lineage(&[(1, 0)]);
    let mut r = Replica::caught_up(0, l.clone());
    let (now, fx) = r.read(0);
    assert_eq!(served(&fx), vec![now]);
    let (soon, fx) = r.read(2);
    let (never, _) = r.read(9);
    assert!(served(&fx).is_empty());
    let (_, fx) = r.sync(batch(&l, 1, 1..=2));
    assert_eq!(run(&fx), Some((1, 2)));
    assert_eq!(served(&r.applied(2)), vec![soon]);
    let fx = r.wait(READ_WAIT_MS - TICK);
    assert!(unavailable(&fx).is_empty());
    assert_eq!(unavailable(&r.wait(TICK)), vec![never]);
    assert_eq!(r.core.status(r.now).reads_served, 2);
}

#[test]
fn consumers_are_tried_again_with_backoff_while_the_broker_is_away() {
    let mut r = Replica::new(0, Lineage::default());
    r.on(Input::Start);
    let failed = |error: &str| Input::ConsumeFailed {
        consumer: Consumer::Sync,
        error: error.into(),
    };
    for wait in [50, 100, 200, 400] {
        let fx = r.on(failed("refused"));
        assert!(logged(&fx, Level::Warn, "refused"));
        assert!(!r.wait(wait - 1).contains(&Effect::Consume(Consumer::Sync)));
        assert_eq!(
            r.wait(1),
            vec![Effect::Consume(Consumer::Sync)],
            "after {wait}"
        );
    }
    // A stream that ends is consumed again at once.
    r.on(Input::Consuming(Consumer::Sync));
    let fx = r.on(Input::ConsumerEnded(Consumer::Sync));
    assert!(fx.contains(&Effect::Consume(Consumer::Sync)));
}

#[test]
fn malformed_or_unexpected_inputs_are_dropped_with_a_log_line() {
    let mut r = Replica::caught_up(0, lineage(&[(1, 0)]));
    let fx = r.on(Input::Syncs(vec![Delivered {
        token: 90,
        item: Err("garbage".into()),
    }]));
    assert_eq!(acked(&fx), vec![90]);
    assert!(logged(&fx, Level::Warn, "garbage"));
    let fx = r.on(Input::Reads(vec![Delivered {
        token: 91,
        item: Ok((
            Stamp {
                cluster: 9,
                epoch: 1,
            },
            0,
        )),
    }]));
    assert_eq!((acked(&fx), served(&fx)), (vec![91], vec![]));
    assert!(logged(&r.applied(5), Level::Warn, "nobody waited"));
    let fx = r.on(Input::Installed {
        request: 77,
        result: Ok((9, Lineage::default())),
    });
    assert!(logged(&fx, Level::Warn, "nobody waited"));
    assert_eq!(r.core.status(r.now).applied, 0, "nothing believed");
    let fx = r.on(Input::Flushed {
        nonce: 3,
        result: Ok(1),
    });
    assert!(fx.is_empty());
}

#[test]
fn shutdown_gives_back_the_parked_reads_and_stops_consuming() {
    let l = lineage(&[(1, 0)]);
    let mut r = Replica::caught_up(0, l.clone());
    let (parked, _) = r.read(5);
    let fx = r.on(Input::Shutdown);
    assert_eq!(requeued(&fx), vec![parked]);
    assert!(fx.contains(&Effect::StopConsuming(Consumer::Sync)));
    assert!(fx.contains(&Effect::StopConsuming(Consumer::Reads)));
    let (_, fx) = r.sync(batch(&l, 1, 1..=1));
    assert_eq!(run(&fx), None, "nothing applied once closing");
    assert!(r.on(Input::ConsumerEnded(Consumer::Sync)).is_empty());
}

/// A sync lost with no write after it: only strong reads show the gap.
/// Each waits less than a gap is given and is asked again after it gave
/// up; the gap's clock runs on through them, and the replica asks for a
/// snapshot past the seq it holds.
#[test]
fn a_gap_only_reads_show_is_repaired_though_each_read_gives_up_first() {
    const { assert!(READ_WAIT_MS < GAP_WAIT_MS) };
    let l = lineage(&[(1, 0)]);
    let mut r = Replica::caught_up(1, l);
    let mut waited = 0;
    let mut asks = Vec::new();
    while waited < 3 * GAP_WAIT_MS {
        let (token, _) = r.read(2);
        let fx = r.wait(READ_WAIT_MS);
        assert_eq!(unavailable(&fx), vec![token], "no read is served below 2");
        asks.extend(asked(&fx));
        // The orchestrator asks again a moment later.
        let fx = r.wait(2 * TICK);
        asks.extend(asked(&fx));
        waited += READ_WAIT_MS + 2 * TICK;
    }
    assert!(!asks.is_empty(), "the gap was never repaired");
    assert!(asks.iter().all(|&(_, have)| have == 1), "{asks:?}");
}

#[test]
fn a_snapshot_request_left_unanswered_is_asked_again_waiting_longer_each_time() {
    let l = lineage(&[(1, 0)]);
    let mut r = Replica::new(3, l.clone());
    r.on(Input::Start);
    let fx = r.on(Input::Consuming(Consumer::Sync));
    let (first, _) = asked(&fx).expect("asked once bound");
    // The master took the request and its answer was lost: nothing comes.
    assert_eq!(asked(&r.wait(ANSWER_WAIT.first - TICK)), None);
    let fx = r.wait(TICK);
    let (second, have) = asked(&fx).expect("asked again");
    assert_ne!(second, first);
    assert_eq!(have, 3);
    assert!(logged(&fx, Level::Warn, "no answer to snapshot request"));
    // The first answer, late, is not the request out: not installed.
    let (_, fx) = r.answer(first, stamp(1), snapshot_at(6));
    assert!(!installs(&fx));
    // Lost again: the next wait is twice as long.
    let twice = ANSWER_WAIT.next(ANSWER_WAIT.first);
    assert_eq!(asked(&r.wait(twice - TICK)), None);
    let (third, _) = asked(&r.wait(TICK)).expect("asked a third time");
    // Answered: installed, and the replica serves.
    let (_, fx) = r.answer(third, stamp(1), snapshot_at(6));
    assert!(installs(&fx));
    r.on(Input::Installed {
        request: third,
        result: Ok((6, l)),
    });
    assert!(r.ready());
    // Nothing is asked again once answered.
    assert_eq!(asked(&r.wait(ANSWER_WAIT.last * 2)), None);
}

#[test]
fn a_slow_snapshot_whose_parts_keep_coming_is_not_asked_again() {
    let l = lineage(&[(1, 0)]);
    let mut r = Replica::new(0, l);
    r.on(Input::Start);
    let fx = r.on(Input::Consuming(Consumer::Sync));
    let (request, _) = asked(&fx).expect("asked once bound");
    // A part every little less than the wait: the request is answered,
    // slowly, and stays out.
    for part in 0..4u32 {
        assert_eq!(asked(&r.wait(ANSWER_WAIT.first - TICK)), None);
        let reply = Reply::SnapshotPart(SnapshotPart {
            seq: 9,
            part,
            parts: 5,
            entries: Vec::new(),
        });
        let (_, fx) = r.answer(request, stamp(1), reply);
        assert!(!installs(&fx));
    }
}
