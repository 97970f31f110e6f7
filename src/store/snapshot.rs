//! Whole-store transfer (snapshot, install) and the data checksum.

use std::sync::atomic::Ordering;

use crate::error::{Error, Result};
use crate::model::wire::Snapshot;
use crate::model::Lineage;

use super::keys::{self, decode_u64};
use super::tx::{to_batch, Changes, Tx};
use super::{aggregate, index, lock, Store};

impl Store {
    /// All entries (data and meta) at `applied_seq()`, but the indexes
    /// and the row counts: the installing store builds its own from the
    /// rows. Holding the
    /// writer lock keeps any apply out while the tree is copied.
    pub fn snapshot(&self) -> Result<Snapshot> {
        let _w = lock(&self.inner.writer);
        let mut entries = Vec::new();
        Tx::over(self.base()).scan(&[], |k, v| {
            if !index::is_index_key(k) && !aggregate::is_aggregate_key(k) {
                entries.push((k.to_vec(), v.to_vec()));
            }
            Ok(true)
        })?;
        Ok(Snapshot {
            seq: self.applied_seq(),
            entries,
        })
    }

    /// Replaces the whole content with the snapshot's, and this store's
    /// indexes of its rows, in one batch, then flushes. The snapshot's
    /// lineage comes along with the rest; a snapshot of another cluster is
    /// refused.
    ///
    /// A blank store (a new worker's: no write applied, no row, no
    /// record) installs it in parts of a few hundred entries instead,
    /// so that memory stays bounded whatever the snapshot's size (one
    /// batch of a million rides took tens of GB in sled). Atomic all the
    /// same: a marker goes first (flushed), then the rows, records and
    /// index entries in parts, then every meta entry, the counts and the
    /// applied seq in one last batch that removes the marker. A store
    /// opened with the marker still there was cut off mid-install: its
    /// rows, records and index entries are removed, which leaves it blank
    /// as it was before ([`Store::open`]). Readers wait throughout, as
    /// for one batch.
    pub fn install(&self, snap: &Snapshot) -> Result<()> {
        self.install_parts(snap, usize::MAX)
    }

    /// [`Store::install`], stopping (as if cut off) after `parts` parts
    /// of an install in parts.
    fn install_parts(&self, snap: &Snapshot, parts: usize) -> Result<()> {
        self.undo_failed_persist()?;
        let _w = self.writer_when_written()?;
        let meta = check(snap)?;
        self.check_cluster(meta.cluster)?;
        self.install_checked(snap, meta, parts)
    }

    /// [`Store::install_parts`] of a snapshot checked, the writer lock
    /// held and no early install being written.
    pub(super) fn install_checked(&self, snap: &Snapshot, meta: Meta, parts: usize) -> Result<()> {
        if self.is_blank()? {
            return self.install_in_parts(snap, meta, parts);
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
            self.installed(snap.seq, meta);
        }
        self.inner.db.flush()?;
        Ok(())
    }

    /// Refuses a snapshot of another cluster than this store's.
    pub(super) fn check_cluster(&self, theirs: Option<u64>) -> Result<()> {
        match (self.cluster(), theirs) {
            (Some(mine), Some(theirs)) if mine != theirs => Err(Error::Storage(format!(
                "a snapshot of cluster {theirs:016x} offered to cluster {mine:016x}"
            ))),
            _ => Ok(()),
        }
    }

    /// No write applied, and no row, record or index entry: only meta
    /// entries (its cluster, an epoch learned).
    pub(super) fn is_blank(&self) -> Result<bool> {
        if self.applied_seq() != 0 {
            return Ok(false);
        }
        for prefix in BULK {
            if self
                .inner
                .db
                .scan_prefix([prefix])
                .next()
                .transpose()?
                .is_some()
            {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// See [`Store::install`]; the writer lock is held. Stops after
    /// `parts` parts, as a crash would.
    fn install_in_parts(&self, snap: &Snapshot, meta: Meta, parts: usize) -> Result<()> {
        let _g = self.write_gate();
        let mut done = 0;
        if self.write_blank_install(snap, &mut || {
            done += 1;
            done <= parts
        })? {
            self.installed(snap.seq, meta);
            self.inner.db.flush()?;
        }
        Ok(())
    }

    /// Writes a blank store's install to sled, asking `go_on` before each
    /// part: true once all of it is written (and the marker flushed
    /// first), false if `go_on` said stop, as a crash would.
    pub(super) fn write_blank_install(
        &self,
        snap: &Snapshot,
        go_on: &mut dyn FnMut() -> bool,
    ) -> Result<bool> {
        let db = &self.inner.db;
        let mut finished = false;
        self.blank_install_steps(snap, |step, changes| {
            if step == Step::Part && !go_on() {
                return Ok(false);
            }
            db.apply_batch(to_batch(&changes))?;
            match step {
                Step::Marker => {
                    db.flush()?;
                }
                Step::Part => {}
                Step::Last => finished = true,
            }
            Ok(true)
        })?;
        Ok(finished)
    }

    /// The changes that make this blank store hold `snap`, handed to
    /// `emit` in order (it says whether to go on): a marker first; then
    /// the rows, records and index entries in parts; then every meta
    /// entry, the counts and the applied seq, removing the marker.
    pub(super) fn blank_install_steps(
        &self,
        snap: &Snapshot,
        mut emit: impl FnMut(Step, Changes) -> Result<bool>,
    ) -> Result<()> {
        let marker = vec![(
            keys::INSTALLING.to_vec(),
            Some(snap.seq.to_be_bytes().to_vec()),
        )];
        if !emit(Step::Marker, marker)? {
            return Ok(());
        }
        // Each table's row prefix, and the rows installed of it.
        let mut tables: Vec<_> = self
            .schema()
            .tables()
            .map(|t| (keys::table_prefix(&t.name), t, 0u64))
            .collect();
        let mut last = Tx::new(&self.inner.db);
        // Every meta entry this store has goes; the snapshot's replace
        // them, in the last batch.
        for key in self.inner.db.scan_prefix([keys::META]).keys() {
            last.remove(key?.to_vec());
        }
        let mut bulk = snap
            .entries
            .iter()
            .filter(|(k, _)| !index::is_index_key(k) && !aggregate::is_aggregate_key(k))
            .peekable();
        while bulk.peek().is_some() {
            let mut part = Changes::with_capacity(INSTALL_PART * 2);
            for (k, v) in bulk.by_ref().take(INSTALL_PART) {
                if k.first() == Some(&keys::META) {
                    if k != keys::INSTALLING {
                        last.put(k.clone(), v.clone());
                    }
                    continue;
                }
                if let Some((_, t, n)) = tables.iter_mut().find(|(p, _, _)| k.starts_with(p)) {
                    let row = keys::decode_row(v)?;
                    for e in index::entries(t, &row, k) {
                        part.push((e, Some(Vec::new())));
                    }
                    *n += 1;
                }
                part.push((k.clone(), Some(v.clone())));
            }
            if !emit(Step::Part, part)? {
                return Ok(());
            }
        }
        last.put(keys::APPLIED_SEQ.to_vec(), snap.seq.to_be_bytes().to_vec());
        if let Some(cluster) = self.cluster() {
            last.put(keys::CLUSTER.to_vec(), cluster.to_be_bytes().to_vec());
        }
        last.put(keys::INDEX_DEFS.to_vec(), index::definitions(self.schema()));
        for (_, t, n) in &tables {
            if *n > 0 {
                last.put(aggregate::count_key(&t.name), n.to_be_bytes().to_vec());
            }
        }
        let (k, v) = aggregate::counted_at(snap.seq);
        last.put(k, v);
        last.remove(keys::INSTALLING.to_vec());
        emit(Step::Last, last.into_changes())?;
        Ok(())
    }

    /// What the store keeps in memory follows an installed snapshot.
    pub(super) fn installed(&self, seq: u64, meta: Meta) {
        self.inner.applied.store(seq, Ordering::Release);
        if let Some(cluster) = meta.cluster {
            self.inner.cluster.store(cluster, Ordering::Release);
        }
        self.set_lineage_cache(meta.lineage);
    }

    /// A digest of all rows (no meta): equal on two stores holding equal
    /// rows, and (but for a 64-bit hash collision) only then.
    pub fn checksum(&self) -> Result<u64> {
        let _r = self.read_gate();
        let mut h = crate::model::fnv::Fnv64::default();
        Tx::over(self.base()).scan(&[keys::DATA], |k, v| {
            // Length prefixes keep ("ab","c") and ("a","bc") apart.
            h.write(&(k.len() as u64).to_be_bytes());
            h.write(k);
            h.write(&(v.len() as u64).to_be_bytes());
            h.write(v);
            Ok(true)
        })?;
        Ok(h.0)
    }
}

/// Entries of a blank store's install written in one sled batch each.
/// sled keeps the garbage of a batch's page updates until the batch
/// ends: installing a million rides took a peak of 11-13 GB in parts of
/// 8,192 entries (flushing every 16 parts changed nothing), 1.6 GB in
/// parts of 256, in about the same time.
pub(crate) const INSTALL_PART: usize = 256;

/// The prefixes of a store's bulk: rows, records, index entries.
const BULK: [u8; 4] = [keys::DATA, keys::REQUEST, keys::REQUEST_SEQ, keys::INDEX];

/// Makes a store cut off in the middle of an install in parts blank
/// again (see [`Store::install`]): called on open, before anything reads
/// it.
pub(super) fn finish_cut_install(tree: &sled::Tree) -> Result<()> {
    if tree.get(keys::INSTALLING)?.is_none() {
        return Ok(());
    }
    for prefix in BULK {
        loop {
            let mut batch = sled::Batch::default();
            let mut n = 0;
            for key in tree.scan_prefix([prefix]).keys().take(INSTALL_PART) {
                batch.remove(key?);
                n += 1;
            }
            if n == 0 {
                break;
            }
            tree.apply_batch(batch)?;
        }
    }
    tree.remove(keys::INSTALLING)?;
    tree.flush()?;
    Ok(())
}

/// A step of a blank store's install ([`Store::blank_install_steps`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Step {
    Marker,
    Part,
    Last,
}

/// What a snapshot says of its store.
pub(super) struct Meta {
    pub(super) cluster: Option<u64>,
    lineage: Lineage,
}

/// Refuses snapshots the store could not have produced, and returns the
/// cluster and lineage the snapshot carries.
pub(super) fn check(snap: &Snapshot) -> Result<Meta> {
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

#[cfg(test)]
pub(super) mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::model::{Row, Schema, Value, WriteOp};

    /// A new user `name` (the store's other tests use it too).
    pub(in crate::store) fn user(name: &str) -> WriteOp {
        let row: Row = [
            ("username".to_string(), Value::from(name)),
            ("password".to_string(), Value::from("pw")),
        ]
        .into_iter()
        .collect();
        WriteOp::Insert {
            table: "users".into(),
            row,
        }
    }

    /// A blank store cut off in the middle of an install in parts is
    /// blank again when opened, and installs the snapshot afresh.
    #[test]
    fn an_install_in_parts_cut_off_leaves_the_store_blank() {
        let schema = Arc::new(Schema::rideshare());
        let src = Store::temporary(schema.clone()).unwrap();
        let mut group = src.group();
        for n in 0..(3 * INSTALL_PART as u64 + 7) {
            let seq = group.next_seq();
            group
                .apply(seq, u128::from(seq), &user(&format!("u{n}")))
                .unwrap();
        }
        group.commit().unwrap();
        let snap = src.snapshot().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let blank_sum = {
            let dst = Store::open(dir.path(), schema.clone()).unwrap();
            dst.begin_epoch(1).unwrap();
            let sum = dst.checksum().unwrap();
            dst.install_parts(&snap, 2).unwrap();
            // Cut off: two parts are in, the rest and the meta are not.
            assert!(dst.inner.db.get(keys::INSTALLING).unwrap().is_some());
            dst.flush().unwrap();
            sum
        };
        let dst = Store::open(dir.path(), schema).unwrap();
        assert_eq!((dst.applied_seq(), dst.epoch()), (0, 1));
        assert_eq!(dst.checksum().unwrap(), blank_sum);
        assert!(dst.is_blank().unwrap());
        assert!(dst.inner.db.get(keys::INSTALLING).unwrap().is_none());
        dst.install(&snap).unwrap();
        assert_eq!(dst.checksum().unwrap(), src.checksum().unwrap());
        assert_eq!(dst.snapshot().unwrap(), snap);
    }
}
