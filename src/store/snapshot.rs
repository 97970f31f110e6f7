//! Whole-store transfer (snapshot, install) and the data checksum.

use std::sync::atomic::Ordering;

use crate::error::{Error, Result};
use crate::model::wire::Snapshot;
use crate::model::Lineage;

use super::keys::{self, decode_u64};
use super::tx::Tx;
use super::{aggregate, index, lock, Store};

impl Store {
    /// All entries (data and meta) at `applied_seq()`, but the indexes
    /// and the row counts: the installing store builds its own from the
    /// rows. Holding the
    /// writer lock keeps any apply out while the tree is copied.
    pub fn snapshot(&self) -> Result<Snapshot> {
        let _w = lock(&self.inner.writer);
        let mut entries = Vec::new();
        for entry in self.inner.db.iter() {
            let (k, v) = entry?;
            if !index::is_index_key(&k) && !aggregate::is_aggregate_key(&k) {
                entries.push((k.to_vec(), v.to_vec()));
            }
        }
        Ok(Snapshot {
            seq: self.applied_seq(),
            entries,
        })
    }

    /// Replaces the whole content with the snapshot's, and this store's
    /// indexes of its rows, in one batch, then flushes. The snapshot's
    /// lineage comes along with the rest; a snapshot of another cluster is
    /// refused.
    pub fn install(&self, snap: &Snapshot) -> Result<()> {
        let _w = lock(&self.inner.writer);
        let meta = check(snap)?;
        if let (Some(mine), Some(theirs)) = (self.cluster(), meta.cluster) {
            if mine != theirs {
                return Err(Error::Storage(format!(
                    "a snapshot of cluster {theirs:016x} offered to cluster {mine:016x}"
                )));
            }
        }
        let mut tx = Tx::new(&self.inner.db);
        for key in self.inner.db.iter().keys() {
            tx.remove(key?.to_vec());
        }
        for (k, v) in &snap.entries {
            // Indexes and counts are this store's own, built below.
            if !index::is_index_key(k) && !aggregate::is_aggregate_key(k) {
                tx.put(k.clone(), v.clone());
            }
        }
        tx.put(keys::APPLIED_SEQ.to_vec(), snap.seq.to_be_bytes().to_vec());
        if let Some(cluster) = self.cluster() {
            tx.put(keys::CLUSTER.to_vec(), cluster.to_be_bytes().to_vec());
        }
        index::rebuild(&mut tx, self.schema())?;
        aggregate::rebuild(&mut tx, self.schema(), snap.seq)?;
        {
            let _g = self.write_gate();
            self.inner.db.apply_batch(tx.into_batch())?;
            self.inner.applied.store(snap.seq, Ordering::Release);
            if let Some(cluster) = meta.cluster {
                self.inner.cluster.store(cluster, Ordering::Release);
            }
            self.set_lineage_cache(meta.lineage);
        }
        self.inner.db.flush()?;
        Ok(())
    }

    /// A digest of all rows (no meta): equal on two stores holding equal
    /// rows, and (but for a 64-bit hash collision) only then.
    pub fn checksum(&self) -> Result<u64> {
        let _r = self.read_gate();
        let mut h = Fnv::default();
        for entry in self.inner.db.scan_prefix([keys::DATA]) {
            let (k, v) = entry?;
            // Length prefixes keep ("ab","c") and ("a","bc") apart.
            h.write(&(k.len() as u64).to_be_bytes());
            h.write(&k);
            h.write(&(v.len() as u64).to_be_bytes());
            h.write(&v);
        }
        Ok(h.0)
    }
}

/// What a snapshot says of its store.
struct Meta {
    cluster: Option<u64>,
    lineage: Lineage,
}

/// Refuses snapshots the store could not have produced, and returns the
/// cluster and lineage the snapshot carries.
fn check(snap: &Snapshot) -> Result<Meta> {
    let mut meta = Meta {
        cluster: None,
        lineage: Lineage::default(),
    };
    let mut epoch = 0;
    for (k, v) in &snap.entries {
        if !keys::is_known(k) {
            return Err(Error::Storage(format!(
                "snapshot holds a foreign key {:?}",
                String::from_utf8_lossy(k)
            )));
        }
        if k == keys::EPOCH {
            epoch = decode_u64(v)?;
        }
        if k == keys::LINEAGE {
            meta.lineage = keys::decode_lineage(v)?;
        }
        if k == keys::CLUSTER {
            meta.cluster = Some(decode_u64(v)?);
        }
        if k == keys::APPLIED_SEQ && decode_u64(v)? != snap.seq {
            return Err(Error::Storage(format!(
                "snapshot of seq {} holds applied seq {}",
                snap.seq,
                decode_u64(v)?
            )));
        }
    }
    // A snapshot of an older version carries only its epoch.
    if meta.lineage.epoch() == 0 && epoch > 0 {
        meta.lineage.begin(epoch, 0);
    }
    Ok(meta)
}

/// 64-bit FNV-1a: a hash fixed by its definition (unlike std's hasher),
/// so that workers built by different compilers agree.
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}
