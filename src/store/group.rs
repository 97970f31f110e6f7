//! Groups of writes: applied in sequence order, committed as one sled
//! batch.

use super::*;

impl Store {
    /// Starts a group of writes that reach sled as one batch: cheaper than
    /// a batch each (sled writes its log out for every batch), and still
    /// all or nothing across a crash. Other writers wait until the group
    /// is committed or dropped.
    ///
    /// Its records are stamped with the wall clock's time now; see
    /// [`Store::group_at`].
    pub fn group(&self) -> WriteGroup<'_> {
        self.group_at(wall_clock_ms())
    }

    /// Like [`Store::group`], its records made at `now_ms` (wall-clock ms;
    /// see the module docs on how long records are kept).
    pub fn group_at(&self, now_ms: u64) -> WriteGroup<'_> {
        let guard = lock(&self.inner.writer);
        let forgotten = self.forgotten_through_ms();
        WriteGroup {
            store: self,
            _writer: guard,
            tx: Tx::over(self.base()),
            next: self.applied_seq().saturating_add(1),
            lineage: None,
            now_ms,
            limits: self.record_limits(),
            forget_from: 0,
            oldest: None,
            forgotten,
            forgotten_before: forgotten,
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
    /// When its records are made (wall-clock ms).
    now_ms: u64,
    limits: RecordLimits,
    /// The lowest seq whose record may still be kept (what the group
    /// forgot is below it).
    forget_from: u64,
    /// The oldest record kept (seq, request id, made at), as last read:
    /// within a group the records only grow at the newest end and the
    /// clock stands still, so it stays the oldest until forgotten, and
    /// one read of it serves every write of the group (a range read in
    /// sled costs more than the rest of recording).
    oldest: Option<(u64, u128, u64)>,
    /// When the newest forgotten record was made, this group's included,
    /// and before the group.
    forgotten: u64,
    forgotten_before: u64,
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
        // A write that panics (a bug no test found yet, on some input) is
        // refused like a bad one, its changes undone: left to unwind, it
        // would fail the whole group, which the master sends again and
        // again, and no write would pass it.
        let (tx, schema) = (&mut self.tx, &self.store.inner.schema);
        let applied = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            write::apply_op(tx, schema, op)
        }))
        .unwrap_or_else(|_| {
            Err(Error::bad(
                "this write cannot be applied: it met an internal error; nothing was written",
            ))
        });
        let result =
            applied.and_then(|result| self.record(seq, request_id, Ok(&result)).map(|()| result));
        self.settle(result, after)
    }

    /// Keeps what a step wrote (the next seq is then `after`) or, if it
    /// failed, undoes it.
    fn settle(&mut self, result: Result<WriteResult>, after: u64) -> Result<WriteResult> {
        match result {
            Ok(result) => {
                self.tx.commit();
                self.next = after;
                Ok(result)
            }
            Err(e) => {
                self.tx.rollback();
                // What the step read as the oldest record may be its own.
                self.oldest = None;
                Err(e)
            }
        }
    }

    /// Replaces every row and auto-key counter with `entries` (a backup's,
    /// checked with [`super::check_backup`]) as `seq` (which must be
    /// [`WriteGroup::next_seq`]), and rebuilds the indexes and counts; the
    /// answer is recorded under `request_id` like a write's. Meta and the
    /// request records stay this store's: a request answered before the
    /// restore is still answered from its record, not applied on top of
    /// the restored rows. If it fails, the group is as it was before.
    pub fn restore(
        &mut self,
        seq: u64,
        request_id: u128,
        entries: &[(Vec<u8>, Vec<u8>)],
    ) -> Result<WriteResult> {
        let after = self.check_seq(seq)?;
        let rows = super::check_backup(self.schema(), entries)?
            .iter()
            .map(|(_, n)| n)
            .sum();
        self.tx.begin();
        let result = self.replace_rows(seq, entries).and_then(|()| {
            let result = WriteResult::Restored { rows };
            self.record(seq, request_id, Ok(&result)).map(|()| result)
        });
        self.settle(result, after)
    }

    fn replace_rows(&mut self, seq: u64, entries: &[(Vec<u8>, Vec<u8>)]) -> Result<()> {
        let schema = self.store.inner.schema.clone();
        for k in self.tx.keys(&[keys::DATA])? {
            self.tx.remove(k);
        }
        for k in self.tx.keys(keys::COUNTER)? {
            self.tx.remove(k);
        }
        for (k, v) in entries {
            if super::backup::is_backed_up(k) {
                self.tx.put(k.clone(), v.clone());
            }
        }
        self.tx
            .put(keys::RESTORED.to_vec(), seq.to_be_bytes().to_vec());
        index::rebuild(&mut self.tx, &schema)?;
        aggregate::rebuild(&mut self.tx, &schema, seq)
    }

    /// Logs `refusal` as the answer to `request_id` under `seq` (which must
    /// be [`WriteGroup::next_seq`]): nothing else is written, but the seq
    /// is taken, so the refusal replicates like a write.
    pub fn refuse(&mut self, seq: u64, request_id: u128, refusal: &Error) -> Result<()> {
        let after = self.check_seq(seq)?;
        self.record(seq, request_id, Err(refusal))?;
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

    /// Whether a request sent at `sent_ms` (the sender's wall clock) with
    /// no record may be one whose record was forgotten: sent at or before
    /// the newest forgotten record was made, or more than the record
    /// window ago. The master refuses such a request rather than apply it,
    /// maybe a second time (see the module docs).
    pub fn stale(&self, sent_ms: u64) -> bool {
        sent_ms <= self.forgotten || sent_ms.saturating_add(self.limits.window_ms) <= self.now_ms
    }

    /// Adds the bookkeeping of answer `seq` to the group: the request-id
    /// record and its index entry, stamped with the group's time; and
    /// forgets the oldest records the limits no longer keep (a few at
    /// most). (The group records the applied seq once, when it commits.)
    fn record(
        &mut self,
        seq: u64,
        request_id: u128,
        answer: std::result::Result<&WriteResult, &Error>,
    ) -> Result<()> {
        let tx = &mut self.tx;
        tx.put(request_key(request_id), keys::encode_record(seq, answer)?);
        tx.put(
            request_seq_key(seq),
            keys::encode_index(request_id, self.now_ms),
        );
        for _ in 0..FORGET_STEP {
            if !self.forget_oldest(seq)? {
                break;
            }
        }
        Ok(())
    }

    /// Forgets the oldest record if it is past the window, or one too
    /// many with `newest` recorded; false when there is none to forget.
    fn forget_oldest(&mut self, newest: u64) -> Result<bool> {
        let (seq, id, made) = match self.oldest {
            Some(known) => known,
            None => {
                let mut oldest = None;
                let from = request_seq_key(self.forget_from);
                let hi = tx::successor(&[keys::REQUEST_SEQ]);
                self.tx
                    .scan_range(&from, hi.as_ref().map(Vec::as_slice), |k, v| {
                        let (id, made) = keys::decode_index(v)?;
                        oldest = Some((decode_u64(&k[1..])?, id, made));
                        Ok(false)
                    })?;
                // None: no record yet; the group's first is read next time.
                let Some(found) = oldest else {
                    return Ok(false);
                };
                self.oldest = Some(found);
                found
            }
        };
        let too_old = made.saturating_add(self.limits.window_ms) <= self.now_ms;
        let too_many = newest.saturating_sub(seq) >= self.limits.count;
        if seq >= newest || !(too_old || too_many) {
            return Ok(false);
        }
        forget(&mut self.tx, seq, id)?;
        self.oldest = None;
        self.forget_from = seq.saturating_add(1);
        self.forgotten = self.forgotten.max(made);
        Ok(true)
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
            let (k, v) = aggregate::counted_at(last);
            tx.put(k, v);
            if self.forgotten != self.forgotten_before {
                tx.put(
                    keys::FORGOTTEN.to_vec(),
                    self.forgotten.to_be_bytes().to_vec(),
                );
            }
            let mut changes = tx.into_changes();
            if let Some(l) = &lineage {
                put_lineage(&mut changes, l)?;
            }
            let store = self.store;
            store.commit_changes(changes, || {
                store.inner.applied.store(last, Ordering::Release);
                if let Some(l) = lineage {
                    store.set_lineage_cache(l);
                }
            })?;
        }
        Ok(self.store.applied_seq())
    }
}
