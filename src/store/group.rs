//! Groups of writes: applied in sequence order, committed as one sled
//! batch.

use super::*;

impl Store {
    /// Starts a group of writes that reach sled as one batch: cheaper than
    /// a batch each (sled writes its log out for every batch), and still
    /// all or nothing across a crash. Other writers wait until the group
    /// is committed or dropped.
    pub fn group(&self) -> WriteGroup<'_> {
        let guard = lock(&self.inner.writer);
        WriteGroup {
            store: self,
            _writer: guard,
            tx: Tx::new(&self.inner.db),
            next: self.applied_seq().saturating_add(1),
            lineage: None,
        }
    }
}

/// Writes applied together, in sequence order, and committed as one sled
/// batch ([`Store::group`]). Dropping it uncommitted writes nothing.
pub struct WriteGroup<'s> {
    store: &'s Store,
    _writer: MutexGuard<'s, ()>,
    tx: Tx<'s>,
    /// The seq the next write must have.
    next: u64,
    /// A lineage learned meanwhile, written with the group.
    lineage: Option<Lineage>,
}

impl WriteGroup<'_> {
    pub fn schema(&self) -> &Schema {
        self.store.schema()
    }

    /// The seq the next write must have.
    pub fn next_seq(&self) -> u64 {
        self.next
    }

    /// Writes in the group so far.
    pub fn len(&self) -> u64 {
        (self.next - 1).saturating_sub(self.store.applied_seq())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Applies `op` as `seq` (which must be [`WriteGroup::next_seq`]) on
    /// top of the group's earlier writes. If it fails, the group is as it
    /// was before, and `seq` is still the next.
    pub fn apply(&mut self, seq: u64, request_id: u128, op: &WriteOp) -> Result<WriteResult> {
        let after = self.check_seq(seq)?;
        self.tx.begin();
        let result = write::apply_op(&mut self.tx, &self.store.inner.schema, op)
            .and_then(|result| record(&mut self.tx, seq, request_id, Ok(&result)).map(|()| result));
        match result {
            Ok(result) => {
                self.tx.commit();
                self.next = after;
                Ok(result)
            }
            Err(e) => {
                self.tx.rollback();
                Err(e)
            }
        }
    }

    /// Logs `refusal` as the answer to `request_id` under `seq` (which must
    /// be [`WriteGroup::next_seq`]): nothing else is written, but the seq
    /// is taken, so the refusal replicates like a write.
    pub fn refuse(&mut self, seq: u64, request_id: u128, refusal: &Error) -> Result<()> {
        let after = self.check_seq(seq)?;
        record(&mut self.tx, seq, request_id, Err(refusal))?;
        self.next = after;
        Ok(())
    }

    /// The seq after `seq`, if `seq` is the next.
    fn check_seq(&self, seq: u64) -> Result<u64> {
        if seq != self.next {
            return Err(Error::Storage(format!(
                "write seq {seq} out of order: {} is next",
                self.next
            )));
        }
        seq.checked_add(1)
            .ok_or_else(|| Error::Storage("sequence numbers exhausted".into()))
    }

    /// Like [`Store::answer`], seeing the group's own writes too.
    pub fn answer(&self, request_id: u128) -> Option<Recorded> {
        recorded(self.tx.get(&request_key(request_id)), request_id)
    }

    /// Like [`Store::replay`], seeing the group's own writes too.
    pub fn replay(&self, request_id: u128) -> Option<WriteReply> {
        self.answer(request_id)?.into_reply().ok()
    }

    /// Records `lineage` (a replica learned an epoch) with the group.
    pub fn set_lineage(&mut self, lineage: Lineage) {
        self.lineage = Some(lineage);
    }

    /// Writes the group to sled as one batch; returns the applied seq.
    pub fn commit(self) -> Result<u64> {
        let last = self.next.saturating_sub(1);
        let lineage = self.lineage.filter(|l| *l != *self.store.lineage_ref());
        if last > self.store.applied_seq() || lineage.is_some() {
            let mut tx = self.tx;
            tx.put(keys::APPLIED_SEQ.to_vec(), last.to_be_bytes().to_vec());
            let mut batch = tx.into_batch();
            if let Some(l) = &lineage {
                put_lineage(&mut batch, l)?;
            }
            let _g = self.store.write_gate();
            self.store.inner.db.apply_batch(batch)?;
            self.store.inner.applied.store(last, Ordering::Release);
            if let Some(l) = lineage {
                self.store.set_lineage_cache(l);
            }
        }
        Ok(self.store.applied_seq())
    }
}
