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
    read_at(1)
}

/// A slave's answer to a read, read with `seq` applied.
fn read_at(seq: u64) -> Reply {
    Reply::Read(Ok(ReadReply {
        seq,
        result: ReadResult::Count(seq),
    }))
}

/// The reads handed over, in order: each waiter and the seq its answer
/// was read at.
fn reads_given(fx: Vec<Fx>) -> Vec<(u32, u64)> {
    delivered(fx)
        .into_iter()
        .filter_map(|(w, r)| match r {
            Ok(Reply::Read(Ok(r))) => Some((w, r.seq)),
            _ => None,
        })
        .collect()
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

/// The reads sent, batch by batch: each read's id, min seq and op.
fn reads_sent(fx: &[Fx]) -> Vec<Vec<(u64, u64, &'static str)>> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::SendReads { reads, .. } => {
                Some(reads.iter().map(|o| (o.id, o.min_seq, o.op)).collect())
            }
            _ => None,
        })
        .collect()
}

/// The one read sent among `fx` (a batch of one): its id, min seq and op.
fn one_read_sent(fx: &[Fx]) -> (u64, u64, &'static str) {
    let sent = reads_sent(fx);
    assert_eq!(
        sent.iter().map(Vec::len).collect::<Vec<_>>(),
        vec![1],
        "{fx:?}"
    );
    sent[0][0]
}

/// The write batches sent: each batch's id, epoch and writes' ids.
fn writes_sent(fx: &[Fx]) -> Vec<(u64, u64, Vec<u64>)> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::SendWrites {
                batch,
                stamp,
                writes,
            } => Some((*batch, stamp.epoch, writes.iter().map(|w| w.0).collect())),
            _ => None,
        })
        .collect()
}

/// The one batch of reads sent, as (batch id, read ids).
fn one_read_batch(fx: &[Fx]) -> (u64, Vec<u64>) {
    let batches: Vec<(u64, Vec<u64>)> = fx
        .iter()
        .filter_map(|e| match e {
            Effect::SendReads { batch, reads, .. } => {
                Some((*batch, reads.iter().map(|o| o.id).collect()))
            }
            _ => None,
        })
        .collect();
    assert_eq!(batches.len(), 1, "{fx:?}");
    batches.into_iter().next().unwrap_or_default()
}

/// A write, sent at once in a batch of its own: its id.
fn write_now(core: &mut Core, waiter: u32, now: u64) -> u64 {
    let id = core.write(waiter, "w", now);
    let sent = writes_sent(&fx(core));
    assert_eq!(sent.len(), 1, "sent at once");
    assert_eq!(sent[0].2, vec![id]);
    id
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
/// A core following `epoch`, ids from `seed`, whose batches go beside
/// unanswered ones as soon as one request waits (the window's rule
/// alone: the fill has its own test).
fn core_at(epoch: u64, seed: u64) -> Core {
    Core::new(C, epoch, seed).with_fills(1, 1)
}

fn knowing(seq: u64) -> Core {
    let mut core = core_at(1, SEED);
    core.start(0);
    let h = asked(&fx(&mut core));
    core.reply(st(1), Reply::Head(seq), Some(h), 1);
    assert!(fx(&mut core).is_empty());
    core
}

#[test]
fn a_fresh_core_hands_over_no_strong_read_before_it_knows_the_head() {
    let mut core = core_at(1, SEED);
    // A strong read goes at once, beside an ask for the head.
    let r1 = core.read(Consistency::Strong, 1, "r1", 0);
    let effects = fx(&mut core);
    let h = asked(&effects);
    assert_eq!(reads_sent(&effects), vec![vec![(r1, 0, "r1")]]);
    // Its answer waits for the head.
    core.reply(st(1), read_at(40), Some(r1), 1);
    assert!(fx(&mut core).is_empty());
    // A second one goes too, without a second ask.
    let r2 = core.read(Consistency::Strong, 2, "r2", 5);
    assert_eq!(reads_sent(&fx(&mut core)), vec![vec![(r2, 0, "r2")]]);
    // An eventual read's answer never waits.
    let e = core.read(Consistency::Eventual, 3, "e", 6);
    assert_eq!(reads_sent(&fx(&mut core)), vec![vec![(e, 0, "e")]]);
    core.reply(st(1), read_at(2), Some(e), 7);
    assert_eq!(reads_given(fx(&mut core)), vec![(3, 2)]);
    assert_eq!(core.stats().in_flight, 2);
    core.reply(st(1), Reply::Head(42), Some(h), 10);
    // Read below the head: the first goes again, under a new id, at the
    // head; nothing is handed over yet.
    let effects = fx(&mut core);
    let (again, min, op) = one_read_sent(&effects);
    assert_ne!(again, r1);
    assert_eq!((min, op), (42, "r1"));
    assert!(delivered(effects).is_empty());
    assert!(core.knows_head());
    // A late copy of its first answer matches nothing.
    core.reply(st(1), read_at(40), Some(r1), 11);
    assert!(fx(&mut core).is_empty());
    // The second is checked when its answer comes: read past the head.
    core.reply(st(1), read_at(43), Some(r2), 12);
    assert_eq!(reads_given(fx(&mut core)), vec![(2, 43)]);
    core.reply(st(1), read_at(42), Some(again), 13);
    assert_eq!(reads_given(fx(&mut core)), vec![(1, 42)]);
    // With the head known, a strong read goes at it and its answer is
    // handed over as it comes.
    let r3 = core.read(Consistency::Strong, 4, "r3", 14);
    assert_eq!(reads_sent(&fx(&mut core)), vec![vec![(r3, 42, "r3")]]);
    core.reply(st(1), read_at(42), Some(r3), 15);
    assert_eq!(reads_given(fx(&mut core)), vec![(4, 42)]);
    assert_eq!(core.stats().last_acked_seq, 42);
    assert_eq!(core.stats().in_flight, 0);
}

#[test]
fn a_started_core_asks_for_the_head_at_once_and_again_until_answered() {
    let mut core = core_at(1, SEED);
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

/// A batch redelivered to another slave answers a read twice: of the
/// copies held for the head, the one read furthest counts.
#[test]
fn of_two_copies_of_a_held_answer_the_one_read_furthest_counts() {
    let mut core = core_at(1, SEED);
    let r = core.read(Consistency::Strong, 1, "r", 0);
    let h = asked(&fx(&mut core));
    core.reply(st(1), read_at(9), Some(r), 1);
    core.reply(st(1), read_at(3), Some(r), 2);
    assert!(fx(&mut core).is_empty());
    core.reply(st(1), Reply::Head(8), Some(h), 3);
    let effects = fx(&mut core);
    assert!(reads_sent(&effects).is_empty(), "not sent again");
    assert_eq!(reads_given(effects), vec![(1, 9)]);
    assert_eq!(core.stats().in_flight, 0);
}

#[test]
fn an_acknowledged_write_teaches_the_head() {
    let mut core = core_at(1, SEED);
    let r = core.read(Consistency::Strong, 1, "r", 0);
    asked(&fx(&mut core));
    core.reply(st(1), read_at(5), Some(r), 1);
    assert!(fx(&mut core).is_empty());
    let w = write_now(&mut core, 2, 1);
    core.reply(st(1), acked(7), Some(w), 2);
    let effects = fx(&mut core);
    assert!(matches!(&effects[0], Effect::Deliver { waiter: 2, reply: Ok(r) } if *r == acked(7)));
    // The read's answer was read below it: it goes again at 7.
    let (_, min, op) = one_read_sent(&effects);
    assert_eq!((min, op), (7, "r"));
    assert_eq!(effects.len(), 2);
    assert_eq!(core.stats().writes, 1);
}

#[test]
fn a_deposed_masters_head_is_not_believed() {
    let mut core = core_at(3, SEED);
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
    let w = core.write(1, "w", 0);
    assert_eq!(writes_sent(&fx(&mut core))[0].1, 2, "sent under epoch 2");
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
    let w1 = write_now(&mut core, 1, 0);
    write_now(&mut core, 2, 0);
    core.read(Consistency::Strong, 3, "r", 0);
    fx(&mut core);
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
    write_now(&mut core, 4, 3);
    core.reply(st(2), Reply::Leading, None, 4);
    assert!(fx(&mut core).is_empty());
    // The watcher names a newer one: the write goes again.
    core.set_epoch(3, 5);
    assert_eq!(delivered(fx(&mut core)).len(), 1);
    // A master that answers "fenced, epoch 5 leads" is followed too.
    let w5 = write_now(&mut core, 5, 6);
    write_now(&mut core, 6, 6);
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
    let mut core = core_at(1, SEED);
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
    let w = write_now(&mut core, 1, 0);
    let r = core.read(Consistency::Strong, 2, "r", 0);
    fx(&mut core);
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
    let r = core.read(Consistency::Eventual, 1, "r", 100);
    core.write(2, "w", 200);
    fx(&mut core);
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
    assert_eq!(core.batches_in_flight(), (0, 0));
}

#[test]
fn a_strong_read_waits_for_the_head_no_longer_than_its_attempt() {
    let mut core = core_at(1, SEED);
    core.read(Consistency::Strong, 1, "r", 0);
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
fn a_send_the_broker_refused_fails_its_attempts() {
    let mut core = core_at(1, SEED);
    core.start(0);
    let h = asked(&fx(&mut core));
    core.write(1, "w", 0);
    let (batch, _, _) = writes_sent(&fx(&mut core))[0].clone();
    core.unsent(batch, "refused", 1);
    let got = delivered(fx(&mut core));
    assert!(got.len() == 1 && unavailable(&got[0].1));
    assert_eq!(core.batches_in_flight(), (0, 0));
    // The ask for the head goes again after its wait.
    core.unsent(h, "refused", 10);
    core.tick(10 + HEAD_BACKOFF.first - 1);
    assert!(fx(&mut core).is_empty());
    core.tick(10 + HEAD_BACKOFF.first);
    assert_ne!(asked(&fx(&mut core)), h);
}

#[test]
fn a_consumer_that_ended_fails_everything_waiting() {
    let mut core = core_at(1, SEED);
    core.start(0);
    asked(&fx(&mut core));
    core.read(Consistency::Strong, 1, "r", 0);
    core.write(2, "w", 0);
    fx(&mut core);
    core.consumer_ended(5);
    let got = delivered(fx(&mut core));
    assert_eq!(got.len(), 2);
    assert!(got.iter().all(|(_, r)| unavailable(r)));
    assert_eq!(core.stats().in_flight, 0);
    assert_eq!(core.batches_in_flight(), (0, 0));
    // The head is asked for again.
    core.tick(6);
    asked(&fx(&mut core));
}

#[test]
fn correlation_ids_are_never_reused() {
    let mut core = core_at(1, SEED);
    let mut ids = HashSet::new();
    core.start(0);
    assert!(ids.insert(asked(&fx(&mut core))));
    for i in 0..1_000u32 {
        let now = u64::from(i) * SLOW_MS;
        let new: Vec<u64> = match i % 3 {
            0 => {
                let w = core.write(i, "w", now);
                let sent = writes_sent(&fx(&mut core));
                vec![w, sent[0].0]
            }
            1 => {
                let r = core.read(Consistency::Eventual, i, "e", now);
                vec![r, one_read_batch(&fx(&mut core)).0]
            }
            _ => {
                core.set_epoch(now + 2, now);
                let asked = fx(&mut core).iter().find_map(|e| match e {
                    Effect::AskHead { id, .. } => Some(*id),
                    _ => None,
                });
                vec![asked.expect("asked again")]
            }
        };
        for id in new {
            assert!(id > SEED);
            assert!(ids.insert(id), "id {id} used twice");
        }
    }
    // Another seed, another run: its ids start elsewhere.
    let mut other = core_at(1, SEED + 1_000_000);
    assert!(!ids.contains(&other.write(0, "w", 0)));
}

#[test]
fn a_lone_request_goes_at_once_and_a_crowd_goes_in_batches() {
    let mut core = knowing(5);
    // The window's batches go one request each, at once.
    let first: Vec<u64> = (0..READ_WINDOW as u32)
        .map(|i| {
            let id = core.read(Consistency::Eventual, i, "e", 0);
            assert_eq!(one_read_batch(&fx(&mut core)).1, vec![id]);
            id
        })
        .collect();
    // Then they wait, strong and eventual alike, for a batch to be
    // answered.
    let waiting: Vec<u64> = (0..10u32)
        .map(|i| {
            let c = if i % 2 == 0 {
                Consistency::Strong
            } else {
                Consistency::Eventual
            };
            core.read(c, 100 + i, "w", 1)
        })
        .collect();
    assert!(fx(&mut core).is_empty());
    assert_eq!(core.batches_in_flight(), (READ_WINDOW, 0));
    core.reply(st(1), read_reply(), Some(first[0]), 2);
    let effects = fx(&mut core);
    let answered = effects
        .iter()
        .filter(|e| matches!(e, Effect::Deliver { .. }));
    assert_eq!(answered.count(), 1);
    // All ten in one batch, each with its own min seq.
    let sent = reads_sent(&effects);
    assert_eq!(sent.len(), 1);
    let want: Vec<(u64, u64, &str)> = waiting
        .iter()
        .enumerate()
        .map(|(i, id)| (*id, if i % 2 == 0 { 5 } else { 0 }, "w"))
        .collect();
    assert_eq!(sent[0], want);
    // Each is answered by its own id; the batch is done with the last.
    for id in &waiting {
        core.reply(st(1), read_reply(), Some(*id), 3);
    }
    let got = delivered(fx(&mut core));
    assert_eq!(got.len(), 10);
    assert_eq!(core.batches_in_flight(), (READ_WINDOW - 1, 0));
}

#[test]
fn a_batch_holds_at_most_its_size_and_writes_batch_like_reads() {
    let mut core = knowing(0);
    // The master leads already (its first answer would send every write
    // waiting again otherwise).
    core.reply(st(1), Reply::Leading, None, 0);
    let firsts: Vec<u64> = (0..WRITE_WINDOW as u32)
        .map(|i| write_now(&mut core, i, 0))
        .collect();
    let crowd: Vec<u64> = (0..(WRITE_BATCH + 3) as u32)
        .map(|i| core.write(10 + i, "w", 1))
        .collect();
    assert!(fx(&mut core).is_empty());
    // One answer frees one place: one full batch goes.
    core.reply(st(1), acked(1), Some(firsts[0]), 2);
    let sent = writes_sent(&fx(&mut core));
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].2, crowd[..WRITE_BATCH].to_vec());
    core.reply(st(1), acked(2), Some(firsts[1]), 3);
    let sent = writes_sent(&fx(&mut core));
    assert_eq!(sent[0].2, crowd[WRITE_BATCH..].to_vec());
}

/// Writes weighed by their bytes: a batch holds at most
/// [`WRITE_BATCH_BYTES`] of them (one broker message under its limit),
/// and a single write heavier than that goes alone.
#[test]
fn a_batch_of_writes_holds_at_most_its_bytes_and_a_heavy_write_goes_alone() {
    // A write's weight is its text's length.
    let mut core = knowing(0).weighing_writes(|w: &&str| w.len());
    core.reply(st(1), Reply::Leading, None, 0);
    let firsts: Vec<u64> = (0..WRITE_WINDOW as u32)
        .map(|i| write_now(&mut core, i, 0))
        .collect();
    // 64 writes of a quarter of the bound each, then one twice the bound.
    let quarter: &'static str = "q".repeat(WRITE_BATCH_BYTES / 4).leak();
    let heavy: &'static str = "h".repeat(WRITE_BATCH_BYTES * 2).leak();
    let crowd: Vec<u64> = (0..8u32).map(|i| core.write(10 + i, quarter, 1)).collect();
    let big = core.write(99, heavy, 1);
    let tail = core.write(100, quarter, 1);
    assert!(fx(&mut core).is_empty());
    // Each batch answered whole frees its place for the next.
    let mut batches: Vec<Vec<u64>> = Vec::new();
    let mut to_answer: Vec<Vec<u64>> = firsts.iter().map(|f| vec![*f]).collect();
    let mut seq = 0;
    while !to_answer.is_empty() {
        for id in to_answer.remove(0) {
            seq += 1;
            core.reply(st(1), acked(seq), Some(id), 2 + seq);
        }
        let sent: Vec<Vec<u64>> = writes_sent(&fx(&mut core))
            .into_iter()
            .map(|b| b.2)
            .collect();
        batches.extend(sent.iter().cloned());
        to_answer.extend(sent);
    }
    assert_eq!(
        batches,
        vec![
            crowd[..4].to_vec(),
            crowd[4..].to_vec(),
            vec![big],
            vec![tail]
        ],
        "four quarters a batch; the heavy write alone"
    );
}

#[test]
fn a_batch_goes_beside_an_unanswered_one_only_once_it_is_full_enough() {
    let mut core = Core::new(C, 1, SEED);
    core.start(0);
    let h = asked(&fx(&mut core));
    core.reply(st(1), Reply::Head(0), Some(h), 1);
    fx(&mut core);
    // Nothing unanswered: a lone read goes at once.
    let lone = core.read(Consistency::Eventual, 0, "lone", 2);
    assert_eq!(one_read_batch(&fx(&mut core)).1, vec![lone]);
    // Beside it, reads wait until READ_FILL of them do, then go together.
    let crowd: Vec<u64> = (1..=READ_FILL as u32)
        .map(|i| core.read(Consistency::Eventual, i, "c", 3))
        .collect();
    assert_eq!(one_read_batch(&fx(&mut core)).1, crowd);
    assert_eq!(core.batches_in_flight(), (2, 0));
    // The same for writes, to a master that said it leads.
    core.reply(st(1), Reply::Leading, None, 4);
    let first = write_now(&mut core, 100, 4);
    let few: Vec<u64> = (1..WRITE_FILL as u32)
        .map(|i| core.write(100 + i, "w", 5))
        .collect();
    assert!(fx(&mut core).is_empty(), "too few to go beside the first");
    // The first answered: the few go at once, not full.
    core.reply(st(1), acked(1), Some(first), 6);
    let sent = writes_sent(&fx(&mut core));
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].2, few);
    // A slow batch holds nobody back, full or not.
    let late = core.read(Consistency::Eventual, 200, "late", 7);
    assert!(fx(&mut core).is_empty());
    core.tick(7 + SLOW_MS);
    assert_eq!(one_read_batch(&fx(&mut core)).1, vec![late]);
}

#[test]
fn a_slow_batch_gives_up_its_place_in_the_window() {
    let mut core = knowing(0);
    for i in 0..READ_WINDOW as u32 {
        core.read(Consistency::Eventual, i, "e", 0);
    }
    fx(&mut core);
    let late = core.read(Consistency::Eventual, 99, "e", 1);
    assert!(fx(&mut core).is_empty());
    // No answer comes (a slave paused with them): the reads behind go.
    core.tick(SLOW_MS - 1);
    assert!(fx(&mut core).is_empty());
    core.tick(SLOW_MS);
    assert_eq!(one_read_batch(&fx(&mut core)).1, vec![late]);
}

#[test]
fn a_read_that_expired_waiting_is_not_sent() {
    let mut core = knowing(0);
    for i in 0..READ_WINDOW as u32 {
        core.read(Consistency::Eventual, i, "e", 0);
    }
    let stale = core.read(Consistency::Eventual, 50, "stale", 0);
    fx(&mut core);
    // Everything expires: the window's reads and the one waiting.
    core.tick(ATTEMPT_MS);
    let effects = fx(&mut core);
    assert_eq!(delivered(effects).len(), READ_WINDOW + 1);
    let fresh = core.read(Consistency::Eventual, 51, "fresh", ATTEMPT_MS + 1);
    let (_, ids) = one_read_batch(&fx(&mut core));
    assert_eq!(ids, vec![fresh]);
    assert!(!ids.contains(&stale));
}

#[test]
fn a_seq_acknowledged_outside_the_pipeline_holds_strong_reads_to_it() {
    let mut core = core_at(1, SEED);
    let r1 = core.read(Consistency::Strong, 1, "r1", 0);
    let h = asked(&fx(&mut core));
    core.reply(st(1), Reply::Head(7), Some(h), 1);
    assert!(fx(&mut core).is_empty());
    core.reply(st(1), read_at(7), Some(r1), 2);
    assert_eq!(reads_given(fx(&mut core)), vec![(1, 7)]);
    // A restore acknowledged at 9: reads from now on need it.
    core.acknowledged(9, 3);
    assert_eq!(core.stats().last_acked_seq, 9);
    let r2 = core.read(Consistency::Strong, 2, "r2", 4);
    assert_eq!(reads_sent(&fx(&mut core)), vec![vec![(r2, 9, "r2")]]);
    // An older seq changes nothing.
    core.acknowledged(8, 5);
    assert_eq!(core.stats().last_acked_seq, 9);
}

/// A core with read-index on that has answered its first ask (the
/// head `seq`).
fn indexed(seq: u64) -> Core {
    let mut core = core_at(1, SEED).with_read_index(true);
    core.start(0);
    let h = asked(&fx(&mut core));
    core.reply(st(1), Reply::Head(seq), Some(h), 1);
    assert!(fx(&mut core).is_empty(), "no read waited");
    core
}

/// A strong read at 10 (its ask goes with it: the lane is idle), then one
/// at 11: the first's id, its ask's, the second's, and what the second
/// did.
fn a_read_then_one_beside_it(core: &mut Core) -> (u64, u64, u64, Vec<Fx>) {
    let r1 = core.read(Consistency::Strong, 1, "r1", 10);
    let a1 = asked(&fx(core));
    let r2 = core.read(Consistency::Strong, 2, "r2", 11);
    (r1, a1, r2, fx(core))
}

/// The asks for the head among `fx`.
fn asks(fx: &[Fx]) -> usize {
    fx.iter()
        .filter(|e| matches!(e, Effect::AskHead { .. }))
        .count()
}

#[test]
fn with_read_index_a_strong_read_waits_for_a_head_asked_after_it_began() {
    let mut core = indexed(3);
    // The head is known, yet a strong read's answer waits: for an ask of
    // its own. The read goes at once, at what this run knows.
    let r1 = core.read(Consistency::Strong, 1, "r1", 10);
    let effects = fx(&mut core);
    let a1 = asked(&effects);
    assert_eq!(reads_sent(&effects), vec![vec![(r1, 3, "r1")]]);
    // One arriving while that ask is out cannot ride it (the master may
    // have answered it already): it waits for the next, not sent yet.
    let r2 = core.read(Consistency::Strong, 2, "r2", 11);
    let effects = fx(&mut core);
    assert_eq!(asks(&effects), 0, "one ask at a time");
    assert_eq!(reads_sent(&effects), vec![vec![(r2, 3, "r2")]]);
    // Answers come before the head: held.
    core.reply(st(1), read_at(8), Some(r1), 11);
    core.reply(st(1), read_at(8), Some(r2), 11);
    assert!(fx(&mut core).is_empty());
    // Eventual reads never wait.
    let e = core.read(Consistency::Eventual, 3, "e", 11);
    assert_eq!(reads_sent(&fx(&mut core)), vec![vec![(e, 0, "e")]]);
    core.reply(st(1), read_at(3), Some(e), 11);
    assert_eq!(reads_given(fx(&mut core)), vec![(3, 3)]);
    // The answer hands over the read that began before the ask (read at
    // the head); the next ask goes at once, for the one that came since.
    core.reply(st(1), Reply::Head(8), Some(a1), 12);
    let effects = fx(&mut core);
    let a2 = asked(&effects);
    assert_eq!(reads_given(effects), vec![(1, 8)]);
    // The head moved (3, then 8): a read now waits for its own head.
    let r3 = core.read(Consistency::Strong, 4, "r3", 13);
    assert!(fx(&mut core).is_empty());
    // A newer head than r2 was read at: r2 goes again, at it; r3 rides
    // the next ask.
    core.reply(st(1), Reply::Head(9), Some(a2), 15);
    let effects = fx(&mut core);
    let a3 = asked(&effects);
    let (r2_again, min, op) = one_read_sent(&effects);
    assert_eq!((min, op), (9, "r2"));
    assert!(delivered(effects).is_empty());
    core.reply(st(1), read_at(9), Some(r2_again), 16);
    assert_eq!(reads_given(fx(&mut core)), vec![(2, 9)]);
    // Its head known, r3 goes at it; nobody else waits: no ask.
    core.reply(st(1), Reply::Head(9), Some(a3), 16);
    let effects = fx(&mut core);
    assert_eq!(asks(&effects), 0, "nobody waits: no ask");
    assert_eq!(reads_sent(&effects), vec![vec![(r3, 9, "r3")]]);
    core.reply(st(1), read_at(9), Some(r3), 17);
    assert_eq!(reads_given(fx(&mut core)), vec![(4, 9)]);
    let stats = core.stats();
    assert_eq!((stats.head_asks, stats.last_acked_seq), (4, 9));
    assert_eq!(stats.in_flight, 0);
}

#[test]
fn with_read_index_reads_wait_for_their_head_while_the_history_moves() {
    let mut core = indexed(5);
    core.reply(st(1), Reply::Leading, None, 1);
    // The history stands still (one head so far): a read goes at once.
    let r1 = core.read(Consistency::Strong, 1, "r1", 10);
    let effects = fx(&mut core);
    let a1 = asked(&effects);
    assert_eq!(reads_sent(&effects), vec![vec![(r1, 5, "r1")]]);
    core.reply(st(1), read_at(5), Some(r1), 11);
    // The head moved: r1 goes again at it, and the next read waits.
    core.reply(st(1), Reply::Head(6), Some(a1), 12);
    let (again, min, op) = one_read_sent(&fx(&mut core));
    assert_eq!((min, op), (6, "r1"));
    core.reply(st(1), read_at(6), Some(again), 12);
    assert_eq!(reads_given(fx(&mut core)), vec![(1, 6)]);
    let r2 = core.read(Consistency::Strong, 2, "r2", 13);
    let effects = fx(&mut core);
    let a2 = asked(&effects);
    assert!(reads_sent(&effects).is_empty());
    // The same head twice: the history stands still again; r2 goes at it,
    // and the next read at once.
    core.reply(st(1), Reply::Head(6), Some(a2), 14);
    assert_eq!(reads_sent(&fx(&mut core)), vec![vec![(r2, 6, "r2")]]);
    core.reply(st(1), read_at(6), Some(r2), 14);
    assert_eq!(reads_given(fx(&mut core)), vec![(2, 6)]);
    let r3 = core.read(Consistency::Strong, 3, "r3", 15);
    let effects = fx(&mut core);
    let a3 = asked(&effects);
    assert_eq!(reads_sent(&effects), vec![vec![(r3, 6, "r3")]]);
    // A write this run acknowledged moves the history: the next read
    // waits.
    let w = write_now(&mut core, 9, 16);
    core.reply(st(1), acked(7), Some(w), 17);
    fx(&mut core);
    let r4 = core.read(Consistency::Strong, 4, "r4", 18);
    assert!(reads_sent(&fx(&mut core)).is_empty());
    core.reply(st(1), Reply::Head(7), Some(a3), 19);
    let effects = fx(&mut core);
    let a4 = asked(&effects);
    core.reply(st(1), Reply::Head(7), Some(a4), 20);
    assert_eq!(reads_sent(&fx(&mut core)), vec![vec![(r4, 7, "r4")]]);
}

#[test]
fn with_read_index_a_read_goes_at_the_larger_of_the_head_and_its_own_acks() {
    let mut core = indexed(0);
    core.reply(st(1), Reply::Leading, None, 1);
    let r = core.read(Consistency::Strong, 1, "r", 2);
    let effects = fx(&mut core);
    let h = asked(&effects);
    assert_eq!(reads_sent(&effects), vec![vec![(r, 0, "r")]]);
    core.reply(st(1), read_at(0), Some(r), 3);
    // A write this run acknowledged says nothing of the others': the
    // read's answer still waits for its ask.
    let w = write_now(&mut core, 2, 3);
    core.reply(st(1), acked(20), Some(w), 4);
    let effects = fx(&mut core);
    assert!(reads_sent(&effects).is_empty());
    assert_eq!(delivered(effects).len(), 1);
    // The master answered the ask before it applied that write: the read
    // goes again, at the larger.
    core.reply(st(1), Reply::Head(19), Some(h), 5);
    let (_, min, op) = one_read_sent(&fx(&mut core));
    assert_eq!((min, op), (20, "r"));
}

#[test]
fn with_read_index_a_failed_ask_goes_again_and_its_reads_ride_the_new_one() {
    let mut core = indexed(0);
    let (r1, a1, r2, _) = a_read_then_one_beside_it(&mut core);
    core.reply(st(1), read_at(4), Some(r1), 12);
    // Unanswered in its wait: asked again, both reads riding the new ask
    // (sent after both began); the late answer to the first counts for
    // nothing.
    core.tick(10 + HEAD_BACKOFF.first);
    let a2 = asked(&fx(&mut core));
    core.reply(st(1), Reply::Head(4), Some(a1), 300);
    assert!(fx(&mut core).is_empty());
    // A deposed master's answer: asked again.
    core.set_epoch(2, 301);
    let a3 = asked(&fx(&mut core));
    assert_ne!(a2, a3, "a new master is asked at once");
    core.reply(st(1), Reply::Head(4), Some(a3), 302);
    let a4 = asked(&fx(&mut core));
    // Refused by the broker: asked again after its wait.
    core.unsent(a4, "refused", 303);
    let r3 = core.read(Consistency::Strong, 3, "r3", 304);
    let effects = fx(&mut core);
    assert_eq!(asks(&effects), 0, "no ask before the wait is over");
    assert_eq!(reads_sent(&effects), vec![vec![(r3, 0, "r3")]]);
    core.reply(st(1), read_at(7), Some(r3), 305);
    core.reply(st(1), read_at(6), Some(r2), 305);
    assert!(fx(&mut core).is_empty());
    // (The new master's ask waited the first wait; the deposed answer
    // doubled it.)
    let wait = HEAD_BACKOFF.next(HEAD_BACKOFF.first);
    core.tick(303 + wait - 1);
    assert!(fx(&mut core).is_empty());
    core.tick(303 + wait);
    let a5 = asked(&fx(&mut core));
    core.reply(st(2), Reply::Head(6), Some(a5), 303 + wait + 1);
    // Read at or past the head: handed over; below it: sent again.
    let effects = fx(&mut core);
    let (_, min, op) = one_read_sent(&effects);
    assert_eq!((min, op), (6, "r1"));
    assert_eq!(reads_given(effects), vec![(2, 6), (3, 7)]);
}

#[test]
fn with_read_index_the_asks_wait_shrinks_again_once_answered() {
    let mut core = indexed(0);
    core.read(Consistency::Strong, 1, "r", 0);
    fx(&mut core);
    // Two asks go unanswered: the third waits four times the first.
    let mut now = HEAD_BACKOFF.first;
    core.tick(now);
    fx(&mut core);
    now += HEAD_BACKOFF.first * 2;
    core.tick(now);
    let h = asked(&fx(&mut core));
    core.reply(st(1), Reply::Head(1), Some(h), now + 1);
    fx(&mut core);
    // Answered: the next ask waits half as long, not four times.
    core.read(Consistency::Strong, 2, "r2", now + 2);
    let h = asked(&fx(&mut core));
    core.tick(now + 2 + HEAD_BACKOFF.first * 2 - 1);
    assert!(fx(&mut core).is_empty());
    core.tick(now + 2 + HEAD_BACKOFF.first * 2);
    assert_ne!(asked(&fx(&mut core)), h);
}

#[test]
fn with_read_index_nothing_is_asked_once_no_read_waits() {
    let mut core = indexed(0);
    let r = core.read(Consistency::Strong, 1, "r", 0);
    let h = asked(&fx(&mut core));
    core.reply(st(1), read_at(0), Some(r), 1);
    // The broker refuses the ask; the read gives up before the retry,
    // its answer held all the while.
    core.unsent(h, "refused", 1);
    core.tick(ATTEMPT_MS);
    let effects = fx(&mut core);
    assert_eq!(asks(&effects), 0);
    let given = delivered(effects);
    assert_eq!(given.len(), 1);
    assert!(unavailable(&given[0].1));
    core.tick(ATTEMPT_MS * 2);
    assert!(fx(&mut core).is_empty());
    // The consumer ends with a read riding an ask: both go, and nothing
    // is asked again until a strong read comes.
    core.read(Consistency::Strong, 2, "r2", ATTEMPT_MS * 3);
    asked(&fx(&mut core));
    core.consumer_ended(ATTEMPT_MS * 3 + 1);
    assert_eq!(delivered(fx(&mut core)).len(), 1);
    core.start(ATTEMPT_MS * 3 + 2);
    core.tick(ATTEMPT_MS * 3 + 3);
    assert!(fx(&mut core).is_empty());
    assert_eq!(core.stats().in_flight, 0);
    let r3 = core.read(Consistency::Strong, 3, "r3", ATTEMPT_MS * 4);
    let effects = fx(&mut core);
    let h = asked(&effects);
    assert_eq!(reads_sent(&effects), vec![vec![(r3, 0, "r3")]]);
    core.reply(st(1), Reply::Head(2), Some(h), ATTEMPT_MS * 4 + 1);
    core.reply(st(1), read_at(2), Some(r3), ATTEMPT_MS * 4 + 2);
    assert_eq!(reads_given(fx(&mut core)), vec![(3, 2)]);
}

#[test]
fn with_read_index_under_load_an_ask_goes_once_an_answer_needs_it() {
    let mut core = indexed(3);
    // An idle lane: the read and its ask go together. Beside an
    // unanswered batch, a read goes without an ask of its own yet: its
    // batch takes a while, and the ask can cover more reads.
    let (r1, a1, r2, effects) = a_read_then_one_beside_it(&mut core);
    assert_eq!(asks(&effects), 0);
    assert_eq!(reads_sent(&effects), vec![vec![(r2, 3, "r2")]]);
    // The ask's answer covers r1 only; r2's batch is still out: no ask.
    core.reply(st(1), Reply::Head(3), Some(a1), 12);
    assert!(fx(&mut core).is_empty());
    core.reply(st(1), read_at(3), Some(r1), 13);
    assert_eq!(reads_given(fx(&mut core)), vec![(1, 3)]);
    let r3 = core.read(Consistency::Strong, 3, "r3", 13);
    let effects = fx(&mut core);
    assert_eq!(asks(&effects), 0);
    assert_eq!(reads_sent(&effects), vec![vec![(r3, 3, "r3")]]);
    // r2's answer must wait for a head: now its ask goes, and r3, begun
    // before it, rides it too.
    core.reply(st(1), read_at(3), Some(r2), 14);
    let a2 = asked(&fx(&mut core));
    core.reply(st(1), Reply::Head(3), Some(a2), 15);
    assert_eq!(reads_given(fx(&mut core)), vec![(2, 3)]);
    core.reply(st(1), read_at(3), Some(r3), 16);
    assert_eq!(reads_given(fx(&mut core)), vec![(3, 3)]);
    assert_eq!(
        core.stats().head_asks,
        3,
        "the first, then one per answer held"
    );
    assert_eq!(core.stats().in_flight, 0);
}

#[test]
fn with_read_index_a_read_sent_to_an_idle_lane_while_an_ask_is_out_gets_the_next_at_once() {
    let mut core = indexed(3);
    let r1 = core.read(Consistency::Strong, 1, "r1", 10);
    let a1 = asked(&fx(&mut core));
    // r1's answer comes before its head: held; the lane is idle again.
    core.reply(st(1), read_at(3), Some(r1), 11);
    assert!(fx(&mut core).is_empty());
    // r2 goes to the idle lane while a1 is out (it cannot ride a1).
    let r2 = core.read(Consistency::Strong, 2, "r2", 12);
    let effects = fx(&mut core);
    assert_eq!(asks(&effects), 0, "one ask at a time");
    assert_eq!(reads_sent(&effects), vec![vec![(r2, 3, "r2")]]);
    // a1 answered: r2's ask goes now, not once r2's answer is held.
    core.reply(st(1), Reply::Head(3), Some(a1), 13);
    let effects = fx(&mut core);
    let a2 = asked(&effects);
    assert_eq!(reads_given(effects), vec![(1, 3)]);
    core.reply(st(1), Reply::Head(3), Some(a2), 14);
    assert!(fx(&mut core).is_empty());
    core.reply(st(1), read_at(3), Some(r2), 15);
    assert_eq!(reads_given(fx(&mut core)), vec![(2, 3)]);
    // Nothing is owed any more: no ask goes for nobody.
    core.tick(16);
    assert!(fx(&mut core).is_empty());
}

#[test]
fn with_read_index_a_slow_batch_does_not_hold_back_the_next_reads_ask() {
    let mut core = indexed(3);
    core.read(Consistency::Strong, 1, "r1", 10);
    let a1 = asked(&fx(&mut core));
    core.reply(st(1), Reply::Head(3), Some(a1), 11);
    assert!(fx(&mut core).is_empty());
    // r1's slave is paused with its batch: once that batch is slow, the
    // lane is idle again, and a read goes with its own ask at once.
    let r2 = core.read(Consistency::Strong, 2, "r2", 10 + SLOW_MS);
    let effects = fx(&mut core);
    let a2 = asked(&effects);
    assert_eq!(reads_sent(&effects), vec![vec![(r2, 3, "r2")]]);
    core.reply(st(1), Reply::Head(3), Some(a2), 11 + SLOW_MS);
    core.reply(st(1), read_at(3), Some(r2), 12 + SLOW_MS);
    assert_eq!(reads_given(fx(&mut core)), vec![(2, 3)]);
}

#[test]
fn with_read_index_a_parked_read_answered_with_an_error_wants_no_ask() {
    let mut core = indexed(3);
    // A read and its ask go to an idle lane; a second read goes beside
    // its batch and waits for the next ask.
    let (r1, a1, r2, effects) = a_read_then_one_beside_it(&mut core);
    assert_eq!(asks(&effects), 0);
    // The second's slave answers with an error: handed over at once.
    let refused = Reply::Read(Err(Error::BadRequest("no such table".into())));
    core.reply(st(1), refused, Some(r2), 12);
    let given = delivered(fx(&mut core));
    assert_eq!(given.len(), 1);
    assert_eq!(given[0].0, 2);
    // The first is answered and its ask too: nobody waits for a head now,
    // so none is asked, now or at the next tick.
    core.reply(st(1), read_at(3), Some(r1), 12);
    assert!(fx(&mut core).is_empty(), "held for its head");
    core.reply(st(1), Reply::Head(3), Some(a1), 13);
    let effects = fx(&mut core);
    assert_eq!(asks(&effects), 0, "an ask for nobody: {effects:?}");
    assert_eq!(reads_given(effects), vec![(1, 3)]);
    core.tick(14);
    assert!(fx(&mut core).is_empty());
    assert_eq!(core.stats().in_flight, 0);
}
