use std::collections::HashSet;

use super::*;
use crate::model::{ReadReply, ReadResult, WriteReply, WriteResult};

type Core = OrchestratorCore<u32, &'static str>;
type Fx = Effect<u32, &'static str>;

const C: u64 = 0xC1;
const SEED: u64 = 1_000;

fn st(epoch: u64) -> Stamp {
    Stamp { cluster: C, epoch }
}

fn fx(core: &mut Core) -> Vec<Fx> {
    core.effects().collect()
}

fn acked(seq: u64) -> Reply {
    Reply::Write(Ok(WriteReply {
        seq,
        result: WriteResult::Cleared,
    }))
}

fn read_reply() -> Reply {
    Reply::Read(Ok(ReadReply {
        seq: 1,
        result: ReadResult::Count(1),
    }))
}

/// The id of the one ask for the head among `fx`.
fn asked(fx: &[Fx]) -> u64 {
    let ids: Vec<u64> = fx
        .iter()
        .filter_map(|e| match e {
            Effect::AskHead { id, .. } => Some(*id),
            _ => None,
        })
        .collect();
    assert_eq!(ids.len(), 1, "{fx:?}");
    ids[0]
}

/// Who got what, in order.
fn delivered(fx: Vec<Fx>) -> Vec<(u32, Result<Reply, Error>)> {
    fx.into_iter()
        .filter_map(|e| match e {
            Effect::Deliver { waiter, reply } => Some((waiter, reply)),
            _ => None,
        })
        .collect()
}

fn unavailable(r: &Result<Reply, Error>) -> bool {
    matches!(r, Err(Error::Unavailable(_)))
}

/// A core of epoch 1 that has learned the head `seq`.
fn knowing(seq: u64) -> Core {
    let mut core = Core::new(C, 1, SEED);
    core.start(0);
    let h = asked(&fx(&mut core));
    core.reply(st(1), Reply::Head(seq), Some(h), 1);
    assert!(fx(&mut core).is_empty());
    core
}

#[test]
fn a_fresh_core_serves_no_strong_read_before_it_knows_the_head() {
    let mut core = Core::new(C, 1, SEED);
    // A strong read waits; the core asks for the head.
    assert_eq!(core.read(Consistency::Strong, 1, "r1", 0), None);
    let h = asked(&fx(&mut core));
    // A second one waits too, without a second ask.
    assert_eq!(core.read(Consistency::Strong, 2, "r2", 5), None);
    assert!(fx(&mut core).is_empty());
    // An eventual read never waits.
    let ev = core.read(Consistency::Eventual, 3, "e", 6).unwrap();
    assert_eq!((ev.min_seq, ev.op), (0, "e"));
    assert_eq!(core.stats().in_flight, 3);
    core.reply(st(1), Reply::Head(42), Some(h), 10);
    let sent: Vec<(u64, &str)> = fx(&mut core)
        .into_iter()
        .map(|e| match e {
            Effect::SendRead(o) => (o.min_seq, o.op),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(sent, vec![(42, "r1"), (42, "r2")]);
    assert!(core.knows_head());
    let next = core.read(Consistency::Strong, 4, "r3", 11).unwrap();
    assert_eq!(next.min_seq, 42);
    assert_eq!(core.stats().last_acked_seq, 42);
}

#[test]
fn a_started_core_asks_for_the_head_at_once_and_again_until_answered() {
    let mut core = Core::new(C, 1, SEED);
    core.start(0);
    let first = asked(&fx(&mut core));
    core.start(1);
    assert!(fx(&mut core).is_empty(), "one ask at a time");
    core.tick(HEAD_BACKOFF.first - 1);
    assert!(fx(&mut core).is_empty());
    core.tick(HEAD_BACKOFF.first);
    let second = asked(&fx(&mut core));
    assert_ne!(first, second);
    // The wait doubled.
    core.tick(HEAD_BACKOFF.first + HEAD_BACKOFF.first * 2 - 1);
    assert!(fx(&mut core).is_empty());
    // The answer to the first ask comes too late: it counts for nothing.
    core.reply(st(1), Reply::Head(9), Some(first), 600);
    assert!(!core.knows_head());
    core.reply(st(1), Reply::Head(9), Some(second), 601);
    assert!(core.knows_head());
    // The ask is not pending any more: nothing expires, nothing in flight.
    core.tick(100_000);
    assert!(fx(&mut core).is_empty());
    assert_eq!(core.stats().in_flight, 0);
}

#[test]
fn an_acknowledged_write_teaches_the_head() {
    let mut core = Core::new(C, 1, SEED);
    assert_eq!(core.read(Consistency::Strong, 1, "r", 0), None);
    asked(&fx(&mut core));
    let (w, stamp) = core.write(2, 1);
    assert_eq!(stamp, st(1));
    core.reply(st(1), acked(7), Some(w), 2);
    let effects = fx(&mut core);
    assert!(matches!(&effects[0], Effect::Deliver { waiter: 2, reply: Ok(r) } if *r == acked(7)));
    assert!(matches!(&effects[1], Effect::SendRead(o) if o.min_seq == 7 && o.op == "r"));
    assert_eq!(effects.len(), 2);
    assert_eq!(core.stats().writes, 1);
}

#[test]
fn a_deposed_masters_head_is_not_believed() {
    let mut core = Core::new(C, 3, SEED);
    core.start(0);
    let h = asked(&fx(&mut core));
    core.reply(st(2), Reply::Head(5), Some(h), 1);
    assert!(!core.knows_head());
    let again = asked(&fx(&mut core));
    core.reply(st(3), Reply::Head(8), Some(again), 2);
    assert!(core.knows_head());
    assert_eq!(core.stats().last_acked_seq, 8);
}

#[test]
fn a_write_answered_under_an_older_epoch_is_fenced() {
    let mut core = knowing(4);
    core.set_epoch(2, 0);
    let (w, stamp) = core.write(1, 0);
    assert_eq!(stamp.epoch, 2);
    core.reply(st(1), acked(99), Some(w), 1);
    let got = delivered(fx(&mut core));
    let fenced = Err(Error::Fenced { got: 1, current: 2 });
    assert_eq!(got, vec![(1, Ok(Reply::Write(fenced)))]);
    let stats = core.stats();
    assert_eq!((stats.writes, stats.last_acked_seq), (0, 4));
    assert!(Error::Fenced { got: 1, current: 2 }.is_retryable());
}

#[test]
fn a_master_of_a_newer_epoch_makes_the_waiting_writes_go_again() {
    let mut core = knowing(0);
    let (w1, _) = core.write(1, 0);
    let (_w2, _) = core.write(2, 0);
    core.read(Consistency::Strong, 3, "r", 0).unwrap();
    // A new master announces itself: the writes fail over to their retry,
    // the read waits on.
    core.reply(st(2), Reply::Leading, None, 1);
    let mut got = delivered(fx(&mut core));
    got.sort_by_key(|(w, _)| *w);
    assert_eq!(got.len(), 2);
    assert!(got.iter().all(|(_, r)| unavailable(r)));
    assert_eq!(core.stats().in_flight, 1);
    assert_eq!(core.stamp().epoch, 2);
    // Their late answers count for nothing.
    core.reply(st(1), acked(3), Some(w1), 2);
    assert!(fx(&mut core).is_empty());
    // Announced again: nothing more.
    core.write(4, 3);
    core.reply(st(2), Reply::Leading, None, 4);
    assert!(fx(&mut core).is_empty());
    // The watcher names a newer one: the write goes again.
    core.set_epoch(3, 5);
    assert_eq!(delivered(fx(&mut core)).len(), 1);
    // A master that answers "fenced, epoch 5 leads" is followed too.
    let (w5, _) = core.write(5, 6);
    core.write(6, 6);
    let fenced = Reply::Write(Err(Error::Fenced { got: 3, current: 5 }));
    core.reply(st(5), fenced.clone(), Some(w5), 7);
    let got = delivered(fx(&mut core));
    assert_eq!(got[0], (5, Ok(fenced)));
    assert_eq!(got[1].0, 6);
    assert!(unavailable(&got[1].1));
    assert_eq!(core.stamp().epoch, 5);
}

#[test]
fn a_new_master_is_asked_for_the_head_at_once() {
    let mut core = Core::new(C, 1, SEED);
    core.start(0);
    let first = asked(&fx(&mut core));
    core.set_epoch(2, 10);
    let second = asked(&fx(&mut core));
    assert_ne!(first, second);
    core.reply(st(2), Reply::Head(3), Some(first), 11);
    assert!(!core.knows_head());
}

#[test]
fn replies_of_another_cluster_or_for_no_attempt_change_nothing() {
    let mut core = knowing(2);
    let (w, _) = core.write(1, 0);
    let r = core.read(Consistency::Strong, 2, "r", 0).unwrap().id;
    let other = Stamp {
        cluster: C ^ 1,
        epoch: 1,
    };
    core.reply(other, acked(50), Some(w), 1);
    core.reply(other, read_reply(), Some(r), 1);
    core.reply(other, Reply::Leading, None, 1);
    core.reply(st(1), acked(60), Some(w + 1_000), 1);
    core.reply(st(1), acked(70), None, 1);
    core.reply(st(1), Reply::Head(80), Some(r + 1_000), 1);
    assert!(fx(&mut core).is_empty());
    let stats = core.stats();
    assert_eq!(
        (stats.last_acked_seq, stats.epoch, stats.in_flight),
        (2, 1, 2)
    );
    core.reply(st(1), read_reply(), Some(r), 2);
    assert_eq!(delivered(fx(&mut core)), vec![(2, Ok(read_reply()))]);
}

#[test]
fn attempts_expire_at_their_deadline() {
    let mut core = knowing(0);
    let r = core.read(Consistency::Eventual, 1, "r", 100).unwrap().id;
    core.write(2, 200);
    core.tick(100 + ATTEMPT_MS - 1);
    assert!(fx(&mut core).is_empty());
    core.tick(100 + ATTEMPT_MS);
    let got = delivered(fx(&mut core));
    assert_eq!(got.len(), 1);
    assert!(got[0].0 == 1 && unavailable(&got[0].1));
    core.reply(st(1), read_reply(), Some(r), 100 + ATTEMPT_MS + 1);
    assert!(fx(&mut core).is_empty());
    core.tick(200 + ATTEMPT_MS);
    assert_eq!(delivered(fx(&mut core)).len(), 1);
    assert_eq!(core.stats().in_flight, 0);
}

#[test]
fn a_strong_read_waits_for_the_head_no_longer_than_its_attempt() {
    let mut core = Core::new(C, 1, SEED);
    assert_eq!(core.read(Consistency::Strong, 1, "r", 0), None);
    asked(&fx(&mut core));
    core.tick(ATTEMPT_MS);
    let effects = fx(&mut core);
    let last = asked(&effects);
    let got = delivered(effects);
    assert_eq!(got.len(), 1);
    assert!(unavailable(&got[0].1));
    // The head comes later: the read that gave up is not sent.
    core.reply(st(1), Reply::Head(1), Some(last), ATTEMPT_MS + 2);
    assert!(core.knows_head());
    assert!(fx(&mut core).is_empty());
}

#[test]
fn a_send_the_broker_refused_fails_its_attempt() {
    let mut core = Core::new(C, 1, SEED);
    core.start(0);
    let h = asked(&fx(&mut core));
    let (w, _) = core.write(1, 0);
    core.unsent(w, "refused", 1);
    let got = delivered(fx(&mut core));
    assert!(got.len() == 1 && unavailable(&got[0].1));
    // The ask for the head goes again after its wait.
    core.unsent(h, "refused", 10);
    core.tick(10 + HEAD_BACKOFF.first - 1);
    assert!(fx(&mut core).is_empty());
    core.tick(10 + HEAD_BACKOFF.first);
    assert_ne!(asked(&fx(&mut core)), h);
}

#[test]
fn a_consumer_that_ended_fails_everything_waiting() {
    let mut core = Core::new(C, 1, SEED);
    core.start(0);
    asked(&fx(&mut core));
    assert_eq!(core.read(Consistency::Strong, 1, "r", 0), None);
    core.write(2, 0);
    core.consumer_ended(5);
    let got = delivered(fx(&mut core));
    assert_eq!(got.len(), 2);
    assert!(got.iter().all(|(_, r)| unavailable(r)));
    assert_eq!(core.stats().in_flight, 0);
    // The head is asked for again.
    core.tick(6);
    asked(&fx(&mut core));
}

#[test]
fn correlation_ids_are_never_reused() {
    let mut core = Core::new(C, 1, SEED);
    let mut ids = HashSet::new();
    core.start(0);
    assert!(ids.insert(asked(&fx(&mut core))));
    for i in 0..1_000u32 {
        let now = u64::from(i);
        let id = match i % 3 {
            0 => core.write(i, now).0,
            1 => core.read(Consistency::Eventual, i, "e", now).unwrap().id,
            _ => {
                core.set_epoch(now + 2, now);
                fx(&mut core)
                    .iter()
                    .find_map(|e| match e {
                        Effect::AskHead { id, .. } => Some(*id),
                        _ => None,
                    })
                    .expect("asked again")
            }
        };
        assert!(id > SEED);
        assert!(ids.insert(id), "id {id} used twice");
    }
    // Another seed, another run: its ids start elsewhere.
    let mut other = Core::new(C, 1, SEED + 1_000_000);
    assert!(!ids.contains(&other.write(0, 0).0));
}
