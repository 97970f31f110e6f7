//! A worker's storage: the database's tables in one sled tree.
//!
//! # On-disk layout
//!
//! Everything lives in sled's default tree, so that one `sled::Batch` can
//! change any entries atomically. Keys start with a one-byte prefix:
//!
//! | key                                  | value                          |
//! |--------------------------------------|--------------------------------|
//! | `d` table 0x00 tag key               | bincode(`Row`), key column too |
//! | `ms`                                 | applied seq (u64 BE)           |
//! | `me`                                 | epoch (u64 BE)                 |
//! | `ml`                                 | bincode(`Lineage`): epochs and their bases |
//! | `mk`                                 | cluster id (u64 BE)            |
//! | `mc` table                           | last auto key given (u64 BE)   |
//! | `r` request id (u128 BE)             | bincode((seq, answer))         |
//! | `q` seq (u64 BE)                     | request id (u128 BE)           |
//! | `x` table 0x00 index no. values row key | the row's tree key       |
//! | `mi`                                 | the index definitions followed |
//!
//! Row keys sort like their values within a type: an `Int` is tag `i` and
//! the big-endian i64 with its sign bit flipped, a `Text` tag `t` and its
//! UTF-8 bytes. So a table's rows are one contiguous, key-ordered range.
//!
//! # Guarantees
//!
//! * Each write ([`Store::apply`]) is one sled batch holding its effect,
//!   the new applied seq and its request-id record, and so is each group
//!   of writes ([`Store::group`]): after a crash the store holds exactly
//!   the writes up to some seq, never part of one. Writes are
//!   durable once [`Store::flush`] returns (sled also flushes by itself
//!   every 500 ms).
//! * A failing write (duplicate key, a failing op of a batch) writes
//!   nothing and does not consume its seq.
//! * Seqs are gapless: `apply` refuses any seq but `applied_seq() + 1`.
//! * Reads never see half a write: they share a gate that a batch takes
//!   exclusively while sled applies it (sled iterators alone could).
//! * The answers to the last [`REMEMBERED_WRITES`] requests are kept
//!   against their request ids, refusals too (a refusal takes a seq that
//!   writes nothing), so a redelivered request gets its first answer from
//!   [`Store::answer`], whichever replica became master.
//! * A store belongs to one cluster ([`Store::join_cluster`]) and follows
//!   one [`Lineage`]; its epoch never goes down.

mod cond;
mod group;
mod index;
mod keys;
mod read;
mod snapshot;
mod tx;
mod write;

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::error::{Error, Result};
use crate::model::{Lineage, ReadOp, ReadResult, Schema, WriteOp, WriteReply, WriteResult};

pub use group::WriteGroup;
use keys::{decode_record, decode_u128, decode_u64, request_key, request_seq_key};
use tx::Tx;

/// How many of the latest writes have their request id remembered.
pub const REMEMBERED_WRITES: u64 = 100_000;

/// A handle on a worker's store; clones share it.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

/// sled's page cache per store (its default is 1 GiB, a lot for a worker
/// of a small service; reads past it go to the OS page cache).
const CACHE_BYTES: u64 = 128 << 20;

struct Inner {
    db: sled::Db,
    schema: Arc<Schema>,
    /// Caches of the meta entries, so that reading them costs no lookup.
    applied: AtomicU64,
    /// The cluster this store belongs to (0: none yet).
    cluster: AtomicU64,
    lineage: RwLock<Lineage>,
    /// Serializes everything that writes, so that checking the seq and
    /// writing are one step, and a snapshot sees no write in flight.
    writer: Mutex<()>,
    /// Shared by readers for the length of a read; taken exclusively while
    /// a batch is applied, since a sled scan could see half of one.
    gate: RwLock<()>,
}

/// Locks ignoring poison: the guarded data is `()`, a panicking holder
/// cannot have left it inconsistent (sled batches are all or nothing).
fn lock(m: &Mutex<()>) -> MutexGuard<'_, ()> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// How long [`Store::open`] waits for a store another holder still has open.
pub const OPEN_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

impl Store {
    /// Opens (or creates) the store in directory `path`, waiting up to
    /// [`OPEN_WAIT`] while an earlier holder lets go of it (sled's
    /// background flusher keeps a dropped database open for a moment).
    pub fn open(path: &std::path::Path, schema: Arc<Schema>) -> Result<Store> {
        Self::open_when_free(path, schema, OPEN_WAIT)
    }

    /// Opens the store in `path`, waiting up to `within` while another
    /// holder in this process still has it open (a worker just killed
    /// in-process lets go of it once its last task has ended).
    pub fn open_when_free(
        path: &std::path::Path,
        schema: Arc<Schema>,
        within: std::time::Duration,
    ) -> Result<Store> {
        let deadline = std::time::Instant::now() + within;
        loop {
            let opened = sled::Config::new()
                .path(path)
                .cache_capacity(CACHE_BYTES)
                .open();
            match opened {
                // sled reports a lock held elsewhere as an I/O error of
                // its own, naming the lock.
                Err(sled::Error::Io(e))
                    if e.to_string().contains("could not acquire lock")
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                other => return Self::from_db(other?, schema),
            }
        }
    }

    /// A store that lives in a temporary directory, removed on drop.
    pub fn temporary(schema: Arc<Schema>) -> Result<Store> {
        Self::from_db(sled::Config::new().temporary(true).open()?, schema)
    }

    fn from_db(db: sled::Db, schema: Arc<Schema>) -> Result<Store> {
        index::ensure(&db, &schema)?;
        let applied = read_meta(&db, keys::APPLIED_SEQ)?;
        let cluster = read_meta(&db, keys::CLUSTER)?;
        let lineage = read_lineage(&db)?;
        Ok(Store {
            inner: Arc::new(Inner {
                db,
                schema,
                applied: AtomicU64::new(applied),
                cluster: AtomicU64::new(cluster),
                lineage: RwLock::new(lineage),
                writer: Mutex::new(()),
                gate: RwLock::new(()),
            }),
        })
    }

    pub fn schema(&self) -> &Schema {
        &self.inner.schema
    }

    /// The seq of the last applied write (0 for a new store).
    pub fn applied_seq(&self) -> u64 {
        self.inner.applied.load(Ordering::Acquire)
    }

    /// The newest epoch this store follows (0 for a new store).
    pub fn epoch(&self) -> u64 {
        self.lineage_ref().epoch()
    }

    /// The history of masters this store's writes come from.
    pub fn lineage(&self) -> Lineage {
        self.lineage_ref().clone()
    }

    fn lineage_ref(&self) -> RwLockReadGuard<'_, Lineage> {
        self.inner
            .lineage
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The cluster this store belongs to, once it has joined one.
    pub fn cluster(&self) -> Option<u64> {
        Some(self.inner.cluster.load(Ordering::Acquire)).filter(|&c| c != 0)
    }

    /// Makes this store a member of `cluster` (durably), or refuses if it
    /// belongs to another: a worker must never mix two clusters' data.
    pub fn join_cluster(&self, cluster: u64) -> Result<()> {
        let _w = lock(&self.inner.writer);
        match self.cluster() {
            Some(c) if c == cluster => Ok(()),
            Some(c) => Err(Error::Storage(format!(
                "this store belongs to cluster {c:016x}, not {cluster:016x}"
            ))),
            None if cluster == 0 => Err(Error::bad("cluster id 0 is reserved")),
            None => {
                self.inner
                    .db
                    .insert(keys::CLUSTER, cluster.to_be_bytes().to_vec())?;
                self.inner.db.flush()?;
                self.inner.cluster.store(cluster, Ordering::Release);
                Ok(())
            }
        }
    }

    /// Begins `epoch` as master after the writes applied so far, durably
    /// (flushed): a master must not forget after a crash that it was
    /// promoted. Beginning the current epoch again keeps its base; an
    /// older epoch is refused (a store's epoch never goes down).
    pub fn begin_epoch(&self, epoch: u64) -> Result<()> {
        let _w = lock(&self.inner.writer);
        let mut lineage = self.lineage();
        if !lineage.begin(epoch, self.applied_seq()) {
            return Err(Error::Fenced {
                got: epoch,
                current: lineage.epoch(),
            });
        }
        let mut batch = sled::Batch::default();
        put_lineage(&mut batch, &lineage)?;
        self.inner.db.apply_batch(batch)?;
        self.inner.db.flush()?;
        self.set_lineage_cache(lineage);
        Ok(())
    }

    fn set_lineage_cache(&self, lineage: Lineage) {
        *self
            .inner
            .lineage
            .write()
            .unwrap_or_else(PoisonError::into_inner) = lineage;
    }

    /// Applies write `op` as sequence number `seq` atomically (one sled
    /// batch: the effect, the new applied seq, and the request's answer).
    /// `seq` must be `applied_seq() + 1`. If the op fails, nothing at all is
    /// written and the applied seq is unchanged.
    pub fn apply(&self, seq: u64, request_id: u128, op: &WriteOp) -> Result<WriteResult> {
        let mut group = self.group();
        let result = group.apply(seq, request_id, op)?;
        group.commit()?;
        Ok(result)
    }

    /// The answer logged for this request id (among the last
    /// [`REMEMBERED_WRITES`] requests), refusals included.
    pub fn answer(&self, request_id: u128) -> Option<Recorded> {
        let found = self.inner.db.get(request_key(request_id));
        recorded(
            found.map(|v| v.map(|v| v.to_vec())).map_err(Error::from),
            request_id,
        )
    }

    /// If a write with this request id was applied (among the last
    /// [`REMEMBERED_WRITES`]), its seq and result.
    pub fn replay(&self, request_id: u128) -> Option<WriteReply> {
        self.answer(request_id)?.into_reply().ok()
    }

    pub fn read(&self, op: &ReadOp) -> Result<ReadResult> {
        let _r = self.read_gate();
        read::read(&Tx::new(&self.inner.db), &self.inner.schema, op)
    }

    /// How many index entries the store holds (for checks and metrics).
    pub fn index_entries(&self) -> Result<u64> {
        let _r = self.read_gate();
        let mut n = 0;
        for entry in self.inner.db.scan_prefix([keys::INDEX]) {
            entry?;
            n += 1;
        }
        Ok(n)
    }

    /// Makes every applied write durable.
    pub fn flush(&self) -> Result<()> {
        self.inner.db.flush()?;
        Ok(())
    }

    /// Keeps readers out while a batch is applied.
    fn write_gate(&self) -> RwLockWriteGuard<'_, ()> {
        self.inner
            .gate
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn read_gate(&self) -> RwLockReadGuard<'_, ()> {
        self.inner
            .gate
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// An answer as the store logged it: the seq it took and what the master
/// answered (a refusal writes nothing but still takes its seq).
#[derive(Clone, Debug, PartialEq)]
pub struct Recorded {
    pub seq: u64,
    pub answer: Result<WriteResult>,
}

impl Recorded {
    /// The answer as a write reply, or the refusal.
    pub fn into_reply(self) -> Result<WriteReply> {
        let seq = self.seq;
        self.answer.map(|result| WriteReply { seq, result })
    }
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("applied_seq", &self.applied_seq())
            .field("epoch", &self.epoch())
            .finish_non_exhaustive()
    }
}

/// The answer recorded for `request_id`, from what looking it up gave.
/// An unreadable record is logged and treated as absent: the caller then
/// applies the write again, which beats refusing it forever.
fn recorded(found: Result<Option<Vec<u8>>>, request_id: u128) -> Option<Recorded> {
    let reply = found.and_then(|bytes| match bytes {
        Some(bytes) => decode_record(&bytes).map(Some),
        None => Ok(None),
    });
    reply.unwrap_or_else(|e| {
        tracing::warn!(request_id, "unreadable request record: {e}");
        None
    })
}

fn read_meta(db: &sled::Db, key: &[u8]) -> Result<u64> {
    match db.get(key)? {
        Some(bytes) => decode_u64(&bytes),
        None => Ok(0),
    }
}

/// The lineage on disk; a store of an older version has only its epoch,
/// which began (as far as it knows) at seq 0.
fn read_lineage(db: &sled::Db) -> Result<Lineage> {
    if let Some(bytes) = db.get(keys::LINEAGE)? {
        return keys::decode_lineage(&bytes);
    }
    let mut lineage = Lineage::default();
    let epoch = read_meta(db, keys::EPOCH)?;
    if epoch > 0 {
        lineage.begin(epoch, 0);
    }
    Ok(lineage)
}

/// Puts the lineage, and its newest epoch, into a batch.
fn put_lineage(batch: &mut sled::Batch, lineage: &Lineage) -> Result<()> {
    batch.insert(keys::LINEAGE, keys::encode_lineage(lineage)?);
    batch.insert(keys::EPOCH, lineage.epoch().to_be_bytes().to_vec());
    Ok(())
}

/// Adds the bookkeeping of answer `seq` to its batch: the request-id
/// record and its index entry, and forgets the record of the answer
/// [`REMEMBERED_WRITES`] seqs ago so the records stay bounded. (The group
/// records the applied seq once, when it commits.)
fn record(
    tx: &mut Tx,
    seq: u64,
    request_id: u128,
    answer: std::result::Result<&WriteResult, &Error>,
) -> Result<()> {
    tx.put(request_key(request_id), keys::encode_record(seq, answer)?);
    tx.put(request_seq_key(seq), request_id.to_be_bytes().to_vec());
    match seq.checked_sub(REMEMBERED_WRITES) {
        Some(old) if old > 0 => forget(tx, old),
        _ => Ok(()),
    }
}

fn forget(tx: &mut Tx, old_seq: u64) -> Result<()> {
    let index_key = request_seq_key(old_seq);
    let Some(id) = tx.get(&index_key)? else {
        return Ok(());
    };
    tx.remove(index_key);
    let record_key = request_key(decode_u128(&id)?);
    // The same id may have been applied again since; keep that record.
    if let Some(bytes) = tx.get(&record_key)? {
        match decode_record(&bytes) {
            Ok(rec) if rec.seq != old_seq => {}
            _ => tx.remove(record_key),
        }
    }
    Ok(())
}
