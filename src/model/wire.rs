//! The messages that travel over the queues, encoded with bincode behind a
//! one-byte version tag so that a worker can refuse what it does not know.

use bincode::{Decode, Encode};

use super::{ReadOp, ReadReply, WriteOp, WriteReply};
use crate::error::{Error, Result};

/// The version tag every message starts with.
pub const VERSION: u8 = 1;

/// A write as the orchestrator sends it on `writeQ`.
#[derive(Clone, Debug, PartialEq, Encode, Decode)]
pub struct WriteRequest {
    /// Chosen by the orchestrator; the master remembers it so that a write
    /// redelivered after a crash is not applied twice.
    pub request_id: u128,
    /// The epoch the orchestrator believes current; older ones are fenced.
    pub epoch: u64,
    pub op: WriteOp,
}

/// What the master consumes from `writeQ`, in one order.
#[derive(Clone, Debug, PartialEq, Encode, Decode)]
pub enum MasterRequest {
    Write(WriteRequest),
    /// A slave asks for the state at the master's current sequence number;
    /// `have_seq` lets the master answer "you are current" without data.
    Snapshot {
        have_seq: u64,
    },
}

/// A read as the orchestrator sends it on `readQ`.
#[derive(Clone, Debug, PartialEq, Encode, Decode)]
pub struct ReadRequest {
    /// The slave serves the read only once it has applied this sequence
    /// number (0 for an eventual read).
    pub min_seq: u64,
    pub op: ReadOp,
}

/// What the master publishes on `syncQ` for every applied write.
#[derive(Clone, Debug, PartialEq, Encode, Decode)]
pub struct SyncMessage {
    pub seq: u64,
    pub epoch: u64,
    pub request_id: u128,
    pub op: WriteOp,
}

/// What one message on `syncQ` carries: writes with consecutive sequence
/// numbers (a group commit's, so one publish and one confirm per group).
pub type SyncBatch = Vec<SyncMessage>;

/// Decodes a sync batch, refusing an empty or non-consecutive one.
pub fn decode_sync(bytes: &[u8]) -> Result<SyncBatch> {
    let batch: SyncBatch = decode(bytes)?;
    let consecutive = batch
        .windows(2)
        .all(|w| w[0].seq.checked_add(1) == Some(w[1].seq));
    if batch.is_empty() || !consecutive {
        return Err(Error::BadMessage("sync batch not consecutive".into()));
    }
    Ok(batch)
}

/// A snapshot of a worker's whole database at sequence number `seq`: the
/// raw entries of its store.
#[derive(Clone, Debug, Default, PartialEq, Encode, Decode)]
pub struct Snapshot {
    pub seq: u64,
    pub entries: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Replies, on `responseQ` (or a slave's snapshot reply queue).
#[derive(Clone, Debug, PartialEq, Encode, Decode)]
pub enum Reply {
    Write(Result<WriteReply>),
    Read(Result<ReadReply>),
    /// `None`: the asker is already at the master's sequence number.
    Snapshot(Result<Option<Snapshot>>),
}

fn config() -> impl bincode::config::Config {
    bincode::config::standard()
}

/// Encodes a message with its version tag.
pub fn encode<T: Encode>(msg: &T) -> Vec<u8> {
    let mut out = vec![VERSION];
    // Encoding into a Vec cannot fail for these types.
    bincode::encode_into_std_write(msg, &mut out, config()).expect("encode into a Vec");
    out
}

/// Decodes a message, refusing unknown versions and trailing bytes.
pub fn decode<T: Decode<()>>(bytes: &[u8]) -> Result<T> {
    match bytes.split_first() {
        Some((&VERSION, body)) => {
            let (msg, used) = bincode::decode_from_slice(body, config())?;
            if used != body.len() {
                return Err(Error::BadMessage(format!(
                    "{} trailing bytes",
                    body.len() - used
                )));
            }
            Ok(msg)
        }
        Some((v, _)) => Err(Error::BadMessage(format!("unknown message version {v}"))),
        None => Err(Error::BadMessage("empty message".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ReadResult, Value};

    #[test]
    fn round_trip_and_refusals() {
        let msg = Reply::Read(Ok(ReadReply {
            seq: 7,
            result: ReadResult::Count(3),
        }));
        assert_eq!(decode::<Reply>(&encode(&msg)).unwrap(), msg);
        let req = ReadRequest {
            min_seq: 1,
            op: ReadOp::Get {
                table: "users".into(),
                key: Value::from("a"),
                columns: None,
            },
        };
        let mut bytes = encode(&req);
        assert_eq!(decode::<ReadRequest>(&bytes).unwrap(), req);
        bytes[0] = 9;
        assert!(decode::<ReadRequest>(&bytes).is_err());
        assert!(decode::<ReadRequest>(&[]).is_err());
        assert!(decode::<ReadRequest>(&[VERSION, 0xff, 0xff, 0xff]).is_err());
    }

    #[test]
    fn sync_batches_must_be_consecutive() {
        let m = |seq| SyncMessage {
            seq,
            epoch: 1,
            request_id: 0,
            op: crate::model::WriteOp::Clear { table: None },
        };
        assert_eq!(decode_sync(&encode(&vec![m(3), m(4)])).unwrap().len(), 2);
        for bad in [vec![], vec![m(3), m(5)], vec![m(4), m(3)], vec![m(3), m(3)]] {
            assert!(decode_sync(&encode(&bad)).is_err(), "{bad:?}");
        }
    }
}
