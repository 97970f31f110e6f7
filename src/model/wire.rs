//! The messages that travel over the queues, encoded with bincode behind a
//! one-byte version tag (so that a worker can refuse what it does not know)
//! and the sender's [`Stamp`]: its cluster and epoch.
//!
//! The stamp is what keeps a reused broker safe: a queue may still hold
//! messages of a cluster that ran there before (same queue names, same
//! worker ids, same sequence numbers). Every receiver drops a message of
//! another cluster, and judges epochs against its [`Lineage`].

use bincode::{Decode, Encode};

use super::{Lineage, ReadOp, ReadReply, WriteOp, WriteReply};
use crate::error::{Error, Result};

/// The version tag every message starts with. Version 1 messages carried
/// no stamp, version 2 ones one read each on `readQ`, version 3 knew no
/// backup or restore: all are refused as undecodable.
pub const VERSION: u8 = 4;

/// Who sent a message: the cluster (created with its first data
/// directory) and the epoch the sender follows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Stamp {
    pub cluster: u64,
    pub epoch: u64,
}

/// Bytes of the version tag and the stamp, before the body.
const HEADER: usize = 1 + 16;

/// A write as the orchestrator sends it on `writeQ`.
#[derive(Clone, Debug, PartialEq, Encode, Decode)]
pub struct WriteRequest {
    /// Chosen by the orchestrator; the master remembers it so that a write
    /// redelivered after a crash is not applied twice.
    pub request_id: u128,
    /// The epoch the orchestrator believes current; older ones are fenced.
    pub epoch: u64,
    pub op: WriteOp,
    /// When the client's request was first sent (wall-clock ms), the same
    /// on every retry: a request older than the master's memory of request
    /// ids is refused rather than maybe applied twice (see `store`).
    pub sent_ms: u64,
}

/// What the master consumes from `writeQ`, in one order.
#[derive(Clone, Debug, PartialEq, Encode, Decode)]
pub enum MasterRequest {
    Write(WriteRequest),
    /// A slave asks for the state at the master's current sequence number;
    /// `have_seq` and the epoch that wrote it let the master answer "you
    /// are current" without data when both match its own.
    Snapshot {
        have_seq: u64,
        have_epoch: u64,
    },
    /// The orchestrator asks how far the history is acknowledged (a
    /// ReadIndex): answered with [`Reply::Head`] once every write the
    /// master applied before it is confirmed on `syncQ`, and only while
    /// its lease holds (a deposed master's would miss its successor's
    /// writes), so a strong read that waits for that seq sees every write
    /// acknowledged before the ask, through any orchestrator.
    Head,
    /// Several writes in one message, applied in this order, each under
    /// its own request id (deduplicated on its own), answered together
    /// with [`Reply::Writes`], each by its `id`.
    Writes(Vec<BatchedWrite>),
    /// The orchestrator asks for a backup: the whole store at the
    /// master's current seq, always as a snapshot (in parts, like
    /// [`Reply::SnapshotPart`]), sent once its syncs are confirmed.
    Backup,
    /// One part of a restore. The master keeps the parts of one restore
    /// as they come and, with the last of them, replaces every table's
    /// rows under its next seq, as one step (see [`RestorePart`]).
    Restore(RestorePart),
}

/// One of the messages a restore travels in (a database of any size fits
/// the broker's limit on a message). The parts of one restore share its
/// `request_id`, which the master records like a write's: a restore sent
/// again is answered from the record, never applied twice.
#[derive(Clone, Debug, PartialEq, Encode, Decode)]
pub struct RestorePart {
    pub request_id: u128,
    /// The epoch the orchestrator believes current; older ones are fenced.
    pub epoch: u64,
    /// When the client's restore was first sent (wall-clock ms).
    pub sent_ms: u64,
    /// This part's place, from 0, and how many parts there are.
    pub part: u32,
    pub parts: u32,
    /// Row and auto-key counter entries of the store (see
    /// `store::backup_entries`).
    pub entries: Vec<(Vec<u8>, Vec<u8>)>,
}

/// One write of a [`MasterRequest::Writes`]: `id` is the orchestrator's
/// attempt it answers.
#[derive(Clone, Debug, PartialEq, Encode, Decode)]
pub struct BatchedWrite {
    pub id: u64,
    pub write: WriteRequest,
}

/// A read as a slave serves it.
#[derive(Clone, Debug, PartialEq, Encode, Decode)]
pub struct ReadRequest {
    /// The slave serves the read only once it has applied this sequence
    /// number (0 for an eventual read).
    pub min_seq: u64,
    pub op: ReadOp,
}

/// One read of a [`ReadBatch`]: `id` is the orchestrator's attempt it
/// answers.
#[derive(Clone, Debug, PartialEq, Encode, Decode)]
pub struct BatchedRead {
    pub id: u64,
    pub read: ReadRequest,
}

/// What travels on `readQ`: the reads the orchestrator had waiting, in one
/// message. A slave serves each once it has applied the seq that read
/// needs (so an eventual read does not wait for a strong one beside it)
/// and answers with [`Reply::Reads`], one message for those it serves
/// together.
#[derive(Clone, Debug, Default, PartialEq, Encode, Decode)]
pub struct ReadBatch {
    pub reads: Vec<BatchedRead>,
}

/// What the master answered a write with, as it is logged and replicated:
/// refusals take a sequence number too, so that every replica remembers
/// them and a redelivered request gets its first answer from any master.
#[derive(Clone, Debug, PartialEq, Encode, Decode)]
pub enum Entry {
    Write(WriteOp),
    Refused(Error),
    /// A restore replaced every row at this seq. A replica cannot apply it
    /// from the message (the rows are not in it): it keeps serving what
    /// it holds and takes a snapshot at this seq or later, installed
    /// atomically (see `core::replica`).
    Restored {
        rows: u64,
    },
}

/// One logged answer, as the master publishes it on `syncQ`.
#[derive(Clone, Debug, PartialEq, Encode, Decode)]
pub struct SyncMessage {
    pub seq: u64,
    /// The epoch that wrote it (older than the sender's for a write
    /// answered again from the record).
    pub epoch: u64,
    pub request_id: u128,
    pub entry: Entry,
}

/// What one message on `syncQ` carries: logged answers with consecutive
/// sequence numbers (a group commit's, so one publish and one confirm per
/// group), and the sender's lineage, which judges them.
#[derive(Clone, Debug, Default, PartialEq, Encode, Decode)]
pub struct SyncBatch {
    pub lineage: Lineage,
    pub writes: Vec<SyncMessage>,
}

impl SyncBatch {
    /// The first and last sequence numbers (of a checked, non-empty batch).
    pub fn span(&self) -> (u64, u64) {
        let seq = |m: Option<&SyncMessage>| m.map_or(0, |m| m.seq);
        (seq(self.writes.first()), seq(self.writes.last()))
    }
}

/// What travels on `syncQ`.
#[derive(Clone, Debug, PartialEq, Encode, Decode)]
pub enum SyncItem {
    Writes(SyncBatch),
    /// Published by a slave elected master, to its own sync queue only:
    /// once it comes back, everything the old master had published before
    /// is in (the queue is first in, first out). Other slaves ignore one
    /// that reaches them.
    Fence {
        worker: u64,
        nonce: u64,
    },
}

/// Decodes what came on a sync queue, refusing an empty or
/// non-consecutive batch of writes.
pub fn decode_sync(bytes: &[u8]) -> Result<(Stamp, SyncItem)> {
    let (stamp, item): (Stamp, SyncItem) = decode(bytes)?;
    if let SyncItem::Writes(batch) = &item {
        let consecutive = batch
            .writes
            .windows(2)
            .all(|w| w[0].seq.checked_add(1) == Some(w[1].seq));
        if batch.writes.is_empty() || !consecutive {
            return Err(Error::BadMessage("sync batch not consecutive".into()));
        }
    }
    Ok((stamp, item))
}

/// A snapshot of a worker's whole database at sequence number `seq`: the
/// raw entries of its store.
#[derive(Clone, Debug, Default, PartialEq, Encode, Decode)]
pub struct Snapshot {
    pub seq: u64,
    pub entries: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Most bytes (keys and values) in one snapshot part.
pub const SNAPSHOT_PART_BYTES: usize = 4 << 20;
/// Most entries in one snapshot part.
pub const SNAPSHOT_PART_ENTRIES: usize = 4096;

/// One of the messages a snapshot travels in, so that a database of any
/// size fits the broker's limit on a message.
#[derive(Clone, Debug, Default, PartialEq, Encode, Decode)]
pub struct SnapshotPart {
    pub seq: u64,
    /// This part's place, from 0, and how many parts there are.
    pub part: u32,
    pub parts: u32,
    pub entries: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Splits `items` (each with its size in bytes) into parts of at most
/// [`SNAPSHOT_PART_ENTRIES`] items and (but for a single larger item)
/// [`SNAPSHOT_PART_BYTES`]; one empty part when there are none. What a
/// snapshot and a catch-up travel in.
pub fn chunk_parts<T>(items: impl IntoIterator<Item = (T, usize)>) -> Vec<Vec<T>> {
    let mut chunks: Vec<Vec<T>> = vec![Vec::new()];
    let mut bytes = 0;
    for (item, size) in items {
        let full = chunks.last().is_some_and(|c| {
            !c.is_empty()
                && (c.len() >= SNAPSHOT_PART_ENTRIES || bytes + size > SNAPSHOT_PART_BYTES)
        });
        if full {
            chunks.push(Vec::new());
            bytes = 0;
        }
        bytes += size;
        if let Some(c) = chunks.last_mut() {
            c.push(item);
        }
    }
    chunks
}

impl Snapshot {
    /// Splits the snapshot into parts (see [`chunk_parts`]).
    pub fn into_parts(self) -> Vec<SnapshotPart> {
        let sized = self.entries.into_iter().map(|e| {
            let size = e.0.len() + e.1.len();
            (e, size)
        });
        let chunks = chunk_parts(sized);
        let parts = chunks.len() as u32;
        chunks
            .into_iter()
            .enumerate()
            .map(|(i, entries)| SnapshotPart {
                seq: self.seq,
                part: i as u32,
                parts,
                entries,
            })
            .collect()
    }
}

/// Collects the parts of a snapshot as they come (in any order, possibly
/// twice, possibly of two snapshots when a request was answered again).
#[derive(Debug, Default)]
pub struct SnapshotParts {
    /// By seq: how many parts, and those received.
    partial: std::collections::BTreeMap<u64, (u32, std::collections::BTreeMap<u32, SnapshotPart>)>,
}

impl SnapshotParts {
    /// Adds a part; the whole snapshot once its last part has come.
    pub fn add(&mut self, part: SnapshotPart) -> Result<Option<Snapshot>> {
        if part.part >= part.parts {
            return Err(Error::BadMessage(format!(
                "snapshot part {} of {}",
                part.part, part.parts
            )));
        }
        let (parts, got) = self
            .partial
            .entry(part.seq)
            .or_insert_with(|| (part.parts, Default::default()));
        if *parts != part.parts {
            return Err(Error::BadMessage(format!(
                "snapshot of seq {} in {} and in {} parts",
                part.seq, parts, part.parts
            )));
        }
        let (seq, n) = (part.seq, *parts);
        got.insert(part.part, part);
        if got.len() < n as usize {
            return Ok(None);
        }
        let (_, got) = self.partial.remove(&seq).unwrap_or_default();
        self.partial.clear();
        Ok(Some(Snapshot {
            seq,
            entries: got.into_values().flat_map(|p| p.entries).collect(),
        }))
    }
}

/// Replies, on the asker's reply queue (an orchestrator's own, or a
/// slave's snapshot reply queue).
#[derive(Clone, Debug, PartialEq, Encode, Decode)]
pub enum Reply {
    Write(Result<WriteReply>),
    Read(Result<ReadReply>),
    /// `None`: the asker is already at the master's sequence number. A
    /// whole snapshot is what older masters sent; now it comes in parts.
    Snapshot(Result<Option<Snapshot>>),
    /// One part of a snapshot, a message of its own (a new variant, so that
    /// older messages still decode).
    SnapshotPart(SnapshotPart),
    /// A master (its epoch in the stamp) consumes `writeQ` now: writes
    /// still waiting on an older one are sent again (on the `leading`
    /// exchange, to every orchestrator's reply queue, with no correlation
    /// id).
    Leading,
    /// The answer to [`MasterRequest::Head`]: every write acknowledged so
    /// far has a seq at most this.
    Head(u64),
    /// Answers to reads of a [`ReadBatch`], each by its id.
    Reads(Vec<(u64, Result<ReadReply>)>),
    /// Answers to the writes of a [`MasterRequest::Writes`], each by its
    /// id.
    Writes(Vec<(u64, Result<WriteReply>)>),
    /// One part of a catch-up: instead of a snapshot, the writes the asker
    /// missed, from the master's log (a new variant, so that older
    /// messages still decode).
    CatchUpPart(CatchUpPart),
}

/// One of the messages a catch-up travels in: consecutive writes from the
/// master's log, with its lineage (which judges them as it judges a sync
/// batch). Together the parts hold every write after the asker's seq up
/// to `through`.
#[derive(Clone, Debug, Default, PartialEq, Encode, Decode)]
pub struct CatchUpPart {
    /// The seq the whole catch-up reaches.
    pub through: u64,
    /// This part's place, from 0, and how many parts there are.
    pub part: u32,
    pub parts: u32,
    pub batch: SyncBatch,
}

impl CatchUpPart {
    /// Refuses a part no master sends: out of its count, empty, not
    /// consecutive, or past the seq it says the catch-up reaches.
    pub fn check(&self) -> Result<()> {
        let writes = &self.batch.writes;
        let consecutive = writes
            .windows(2)
            .all(|w| w[0].seq.checked_add(1) == Some(w[1].seq));
        let bad = if self.part >= self.parts {
            "out of its count"
        } else if writes.is_empty() || !consecutive {
            "not consecutive"
        } else if self.batch.span().1 > self.through {
            "past its end"
        } else {
            return Ok(());
        };
        Err(Error::BadMessage(format!(
            "catch-up part {} of {} {bad}",
            self.part, self.parts
        )))
    }
}

fn config() -> impl bincode::config::Config {
    bincode::config::standard()
}

/// Encodes a message with its version tag and its sender's stamp.
pub fn encode<T: Encode>(stamp: Stamp, msg: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.push(VERSION);
    out.extend_from_slice(&stamp.cluster.to_be_bytes());
    out.extend_from_slice(&stamp.epoch.to_be_bytes());
    // Encoding into a Vec cannot fail for these types.
    bincode::encode_into_std_write(msg, &mut out, config()).expect("encode into a Vec");
    out
}

/// How many bytes `msg` takes encoded (without the header), counted
/// without encoding it into memory.
pub fn encoded_len<T: Encode>(msg: &T) -> usize {
    let mut size = bincode::enc::write::SizeWriter::default();
    // Counting cannot fail for these types.
    let _ = bincode::encode_into_writer(msg, &mut size, config());
    size.bytes_written
}

/// A 128-bit fingerprint of `msg`'s encoding (FNV-1a): the same value
/// gives the same fingerprint in every process of the same version (the
/// encoding is canonical: rows are ordered maps).
pub fn fingerprint<T: Encode>(msg: &T) -> u128 {
    struct Hashing(super::fnv::Fnv128);
    impl bincode::enc::write::Writer for Hashing {
        fn write(&mut self, bytes: &[u8]) -> std::result::Result<(), bincode::error::EncodeError> {
            self.0.write(bytes);
            Ok(())
        }
    }
    let mut h = Hashing(super::fnv::Fnv128::default());
    // Hashing cannot fail for these types.
    let _ = bincode::encode_into_writer(msg, &mut h, config());
    h.0 .0
}

/// The stamp of a message, without decoding its body.
pub fn stamp(bytes: &[u8]) -> Result<Stamp> {
    match bytes.first() {
        Some(&VERSION) if bytes.len() >= HEADER => {
            let u64_at = |i: usize| {
                let mut b = [0; 8];
                b.copy_from_slice(&bytes[i..i + 8]);
                u64::from_be_bytes(b)
            };
            Ok(Stamp {
                cluster: u64_at(1),
                epoch: u64_at(9),
            })
        }
        Some(&VERSION) => Err(Error::BadMessage("message cut short".into())),
        Some(v) => Err(Error::BadMessage(format!("unknown message version {v}"))),
        None => Err(Error::BadMessage("empty message".into())),
    }
}

/// Decodes a message and its stamp, refusing unknown versions and
/// trailing bytes.
pub fn decode<T: Decode<()>>(bytes: &[u8]) -> Result<(Stamp, T)> {
    let stamp = stamp(bytes)?;
    let body = &bytes[HEADER..];
    let (msg, used) = bincode::decode_from_slice(body, config())?;
    if used != body.len() {
        return Err(Error::BadMessage(format!(
            "{} trailing bytes",
            body.len() - used
        )));
    }
    Ok((stamp, msg))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ReadResult, Value};

    #[test]
    fn a_fingerprint_follows_the_value_alone() {
        let op = |name: &str| WriteOp::Insert {
            table: "users".into(),
            row: [
                ("username".to_owned(), Value::from(name)),
                ("password".to_owned(), Value::from("x")),
            ]
            .into_iter()
            .collect(),
        };
        assert_eq!(fingerprint(&op("a")), fingerprint(&op("a")));
        assert_ne!(fingerprint(&op("a")), fingerprint(&op("b")));
        // Pinned: a write sent again by a client after an upgrade must
        // keep its request id (a changed encoding changes it).
        assert_eq!(
            format!("{:032x}", fingerprint(&op("a"))),
            "a65ace48b74bf84ef0a6b46ce91d7b30"
        );
    }

    const S: Stamp = Stamp {
        cluster: 0xC1,
        epoch: 3,
    };

    #[test]
    fn round_trip_and_refusals() {
        let msg = Reply::Read(Ok(ReadReply {
            seq: 7,
            result: ReadResult::Count(3),
        }));
        assert_eq!(decode::<Reply>(&encode(S, &msg)).unwrap(), (S, msg));
        let req = ReadRequest {
            min_seq: 1,
            op: ReadOp::Get {
                table: "users".into(),
                key: Value::from("a"),
                columns: None,
            },
        };
        let mut bytes = encode(S, &req);
        assert_eq!(stamp(&bytes).unwrap(), S);
        assert_eq!(decode::<ReadRequest>(&bytes).unwrap(), (S, req));
        bytes[0] = 9;
        assert!(decode::<ReadRequest>(&bytes).is_err());
        assert!(stamp(&bytes).is_err());
        assert!(decode::<ReadRequest>(&[]).is_err());
        assert!(decode::<ReadRequest>(&[VERSION, 1, 2]).is_err());
        let mut garbage = vec![VERSION];
        garbage.extend([0; 16]);
        garbage.extend([0xff, 0xff, 0xff]);
        assert!(decode::<ReadRequest>(&garbage).is_err());
        // A message of version 1 (no stamp) is refused, never misread.
        assert!(decode::<ReadRequest>(&[1, 0, 0, 0]).is_err());
    }

    fn entry(i: usize, size: usize) -> (Vec<u8>, Vec<u8>) {
        (format!("d{i:08}").into_bytes(), vec![7; size])
    }

    #[test]
    fn snapshots_split_into_parts_and_come_back_whole() {
        let snap = Snapshot {
            seq: 9,
            entries: (0..SNAPSHOT_PART_ENTRIES * 2 + 5)
                .map(|i| entry(i, 10))
                .chain((0..3).map(|i| entry(SNAPSHOT_PART_ENTRIES * 3 + i, SNAPSHOT_PART_BYTES)))
                .collect(),
        };
        let mut parts = snap.clone().into_parts();
        // Two full by count, the rest of the small ones, then one part for
        // each entry of the part size.
        assert_eq!(parts.len(), 6);
        assert!(parts.iter().all(|p| p.parts == 6 && p.seq == 9));
        assert!(parts
            .iter()
            .all(|p| wire_size(p) < SNAPSHOT_PART_BYTES + 1024 * 1024));
        parts.reverse();
        let mut got = SnapshotParts::default();
        let first = parts[0].clone();
        let mut whole = None;
        for p in parts {
            assert!(whole.is_none());
            whole = got.add(p).unwrap();
            if whole.is_none() {
                // A duplicate changes nothing.
                assert!(got.add(first.clone()).unwrap().is_none());
            }
        }
        assert_eq!(whole, Some(snap));
    }

    fn wire_size(p: &SnapshotPart) -> usize {
        encode(S, &Reply::SnapshotPart(p.clone())).len()
    }

    #[test]
    fn an_empty_snapshot_is_one_part_and_bad_parts_are_refused() {
        let parts = Snapshot::default().into_parts();
        assert_eq!(parts.len(), 1);
        let mut got = SnapshotParts::default();
        assert_eq!(
            got.add(parts[0].clone()).unwrap(),
            Some(Snapshot::default())
        );
        let bad = SnapshotPart {
            seq: 1,
            part: 2,
            parts: 2,
            entries: Vec::new(),
        };
        assert!(got.add(bad.clone()).is_err());
        let one = SnapshotPart {
            part: 0,
            ..bad.clone()
        };
        assert!(got.add(one).unwrap().is_none());
        let other_count = SnapshotPart {
            part: 0,
            parts: 3,
            ..bad
        };
        assert!(got.add(other_count).is_err());
    }

    #[test]
    fn sync_batches_must_be_consecutive() {
        let m = |seq| SyncMessage {
            seq,
            epoch: 1,
            request_id: 0,
            entry: Entry::Write(crate::model::WriteOp::Clear { table: None }),
        };
        let batch = |writes| {
            SyncItem::Writes(SyncBatch {
                lineage: Lineage::default(),
                writes,
            })
        };
        let (s, got) = decode_sync(&encode(S, &batch(vec![m(3), m(4)]))).unwrap();
        let SyncItem::Writes(got) = got else {
            panic!("not writes")
        };
        assert_eq!((s, got.span()), (S, (3, 4)));
        for bad in [vec![], vec![m(3), m(5)], vec![m(4), m(3)], vec![m(3), m(3)]] {
            let bytes = encode(S, &batch(bad.clone()));
            assert!(decode_sync(&bytes).is_err(), "{bad:?}");
        }
        let fence = SyncItem::Fence {
            worker: 2,
            nonce: 9,
        };
        assert_eq!(decode_sync(&encode(S, &fence)).unwrap(), (S, fence));
    }
}
