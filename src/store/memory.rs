//! A new store that serves before its install reaches sled.
//!
//! Installing a snapshot into sled costs a few microseconds a key, and a
//! ride is several keys (its row, its index entries, records): over a
//! second for 100,000 rides, while the same entries go into a map in
//! memory in a tenth of that. So a blank store (a new worker's) may take
//! a snapshot *early* ([`Store::install_early`]): the store's whole
//! content is built as an image in memory, which reads and writes use at
//! once, while a background thread writes the same install to sled (in
//! parts, as [`Store::install`] does for a blank store), then every group
//! of writes committed meanwhile, in order, then flushes and lets the
//! image go, all under the writer lock and the read gate so that no
//! reader or writer sees the switch.
//!
//! What it keeps:
//! - reads and writes see one store throughout: the image holds exactly
//!   what sled will, and a write commits to the image and is queued for
//!   sled in one step, under the writer lock and the read gate;
//! - durability is the same as before where it is asked for:
//!   [`Store::flush`] returns only once sled holds, flushed, every write
//!   the image held when it was called (it waits for the thread), and so
//!   do [`Store::begin_epoch`] and [`Store::join_cluster`]. Only writes
//!   not yet flushed are at risk in a crash, as sled's own unflushed
//!   writes always were: a store cut off mid-install opens blank (the
//!   install's marker), one cut off later opens at some applied seq with
//!   every write up to it;
//! - a snapshot holding a restore is installed into sled before the
//!   install returns, as before: a restore is acknowledged once a
//!   replica installed it, and then it must be on that replica's disk;
//! - memory is bounded: only a snapshot of at most
//!   [`MEMORY_INSTALL_BYTES`] of keys and values is taken early.
//!
//! Locks: an image read takes the image's lock for one lookup or one
//! scan; a scan's callback may look up again. Only a commit and the
//! switch write it, each holding the writer lock and the read gate, so
//! no image write ever waits while a reader (gate shared) or the writer
//! (lock held) reads it again from inside a scan.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, RwLock};

use crate::error::{Error, Result};
use crate::model::wire::Snapshot;

use super::tx::{to_batch, Changes};
use super::{keys, lock, Store};

/// The largest snapshot (keys and values, in bytes) a blank store takes
/// early: about 250,000 rides, whose image takes some 150 MB for the few
/// seconds sled needs to catch up (well within a drain's and a stop's
/// time, which wait for it).
pub const MEMORY_INSTALL_BYTES: usize = 32 << 20;

/// Rounds of writing what was committed meanwhile with writes let in,
/// before the last one under the writer lock.
const CATCH_UP_ROUNDS: usize = 2;

pub(super) type Map = BTreeMap<Vec<u8>, Vec<u8>>;

/// The store's content in memory while its install is written to sled.
pub(super) struct Image {
    /// Set while the map is the store's content (read first, so that a
    /// store without an image pays one load for it).
    live: AtomicBool,
    map: RwLock<Option<Map>>,
}

impl Image {
    pub(super) fn new() -> Self {
        Image {
            live: AtomicBool::new(false),
            map: RwLock::new(None),
        }
    }

    /// `f` of the map while the image is live; `None` otherwise (read
    /// sled then: it holds the same).
    pub(super) fn with<R>(&self, f: impl FnOnce(&Map) -> R) -> Option<R> {
        if !self.live.load(Ordering::Acquire) {
            return None;
        }
        let map = self.map.read().unwrap_or_else(PoisonError::into_inner);
        map.as_ref().map(f)
    }

    fn is_live(&self) -> bool {
        self.live.load(Ordering::Acquire)
    }

    fn start(&self, map: Map) {
        *self.map.write().unwrap_or_else(PoisonError::into_inner) = Some(map);
        self.live.store(true, Ordering::Release);
    }

    /// Ends the image; its map, to free.
    fn end(&self) -> Option<Map> {
        self.live.store(false, Ordering::Release);
        self.map
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    /// Applies `changes` to the image, if live.
    fn apply(&self, changes: &Changes) {
        let mut map = self.map.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(map) = map.as_mut() {
            apply_to(map, changes);
        }
    }
}

fn apply_to(map: &mut Map, changes: &Changes) {
    for (k, v) in changes {
        match v {
            Some(v) => map.insert(k.clone(), v.clone()),
            None => map.remove(k),
        };
    }
}

/// The background writing of an early install.
pub(super) struct Persist {
    state: Mutex<State>,
    done: Condvar,
    /// Held (tests), the writing waits before each step.
    hold: Arc<(Mutex<bool>, Condvar)>,
    /// The largest snapshot taken early.
    limit: AtomicUsize,
    /// The store's directory (none: a temporary store).
    dir: Mutex<Option<PathBuf>>,
    /// Tests: the next writing fails at once.
    #[cfg(test)]
    fail: AtomicBool,
}

/// Directories whose stores' early installs wait before each step
/// ([`hold_persisting_in`]), and the signal that one was let go.
static HELD_DIRS: (Mutex<Vec<PathBuf>>, Condvar) = (Mutex::new(Vec::new()), Condvar::new());

/// While the guard lives, the early install of any store opened in `dir`
/// (now or later, in this process) waits before its next step: tests
/// hold a worker's store that its runtime opens, to fault it at the worst
/// moment.
#[doc(hidden)]
pub fn hold_persisting_in(dir: &Path) -> HeldDir {
    let (dirs, _) = &HELD_DIRS;
    dirs.lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(dir.to_path_buf());
    HeldDir(dir.to_path_buf())
}

/// See [`hold_persisting_in`].
#[doc(hidden)]
pub struct HeldDir(PathBuf);

impl Drop for HeldDir {
    fn drop(&mut self) {
        let (dirs, released) = &HELD_DIRS;
        let mut dirs = dirs.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(i) = dirs.iter().position(|d| *d == self.0) {
            dirs.swap_remove(i);
        }
        released.notify_all();
    }
}

#[derive(Default)]
struct State {
    /// Groups committed to the image, still to write to sled, in order.
    pending: Vec<Changes>,
    running: bool,
    failed: Option<String>,
}

impl Persist {
    pub(super) fn new() -> Self {
        Persist {
            state: Mutex::new(State::default()),
            done: Condvar::new(),
            hold: Arc::default(),
            limit: AtomicUsize::new(MEMORY_INSTALL_BYTES),
            dir: Mutex::new(None),
            #[cfg(test)]
            fail: AtomicBool::new(false),
        }
    }

    pub(super) fn set_dir(&self, dir: &Path) {
        *self.dir.lock().unwrap_or_else(PoisonError::into_inner) = Some(dir.to_path_buf());
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn held(&self) {
        let (held, released) = &*self.hold;
        let mut h = held.lock().unwrap_or_else(PoisonError::into_inner);
        while *h {
            h = released.wait(h).unwrap_or_else(PoisonError::into_inner);
        }
        drop(h);
        let dir = self
            .dir
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if let Some(dir) = dir {
            let (dirs, released) = &HELD_DIRS;
            let mut dirs = dirs.lock().unwrap_or_else(PoisonError::into_inner);
            while dirs.contains(&dir) {
                dirs = released.wait(dirs).unwrap_or_else(PoisonError::into_inner);
            }
        }
    }
}

/// While it lives, an early install's writing waits before its next step
/// ([`Store::hold_persisting`]).
#[doc(hidden)]
pub struct Hold(Arc<(Mutex<bool>, Condvar)>);

impl Drop for Hold {
    fn drop(&mut self) {
        let (held, released) = &*self.0;
        *held.lock().unwrap_or_else(PoisonError::into_inner) = false;
        released.notify_all();
    }
}

impl Store {
    /// Installs `snap` like [`Store::install`], but a blank store (a new
    /// worker's) given a snapshot of at most [`MEMORY_INSTALL_BYTES`] and
    /// no restore returns as soon as the snapshot is in memory, serving
    /// from there while a background thread writes it to sled: see the
    /// module docs. It is durable once [`Store::flush`] returns.
    pub fn install_early(&self, snap: Snapshot) -> Result<()> {
        self.undo_failed_persist()?;
        let _w = self.writer_when_written()?;
        let meta = super::snapshot::check(&snap)?;
        self.check_cluster(meta.cluster)?;
        let small = snap
            .entries
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum::<usize>()
            <= self.inner.persist.limit.load(Ordering::Relaxed);
        let restored = snap.entries.iter().any(|(k, _)| k == keys::RESTORED);
        if !small || restored || !self.is_blank()? {
            return self.install_checked(&snap, meta, usize::MAX);
        }
        let mut map = Map::new();
        for entry in self.inner.db.iter() {
            let (k, v) = entry?;
            map.insert(k.to_vec(), v.to_vec());
        }
        self.blank_install_steps(&snap, |_, changes| {
            apply_to(&mut map, &changes);
            Ok(true)
        })?;
        // Running before the image is live: a flush from now on waits.
        self.inner.persist.state().running = true;
        {
            let _g = self.write_gate();
            self.inner.image.start(map);
            self.installed(snap.seq, meta);
        }
        let store = self.clone();
        let spawned = std::thread::Builder::new()
            .name("dbaas-persist".into())
            .spawn(move || store.persist(&snap));
        if let Err(e) = spawned {
            self.persisted(Err(Error::Storage(format!(
                "cannot start writing the install: {e}"
            ))));
        }
        Ok(())
    }

    /// The writer lock, taken once no early install is being written
    /// (checked under it, so that none begins in between); the failure
    /// of the last one, if it failed.
    pub(super) fn writer_when_written(&self) -> Result<MutexGuard<'_, ()>> {
        loop {
            self.wait_persisted()?;
            let w = lock(&self.inner.writer);
            if !self.persisting() {
                return Ok(w);
            }
        }
    }

    /// After an early install whose writing failed (its image still
    /// serving, its writes refused): lets the image go and makes sled
    /// what a cut-off install leaves (blank, or the prefix written), so
    /// that an install (a replica resyncing) starts afresh.
    pub(super) fn undo_failed_persist(&self) -> Result<()> {
        let _ = self.wait_persisted();
        let _w = lock(&self.inner.writer);
        if self.inner.persist.state().failed.is_none() {
            return Ok(());
        }
        let map = {
            let _g = self.write_gate();
            self.inner.image.end()
        };
        drop(map);
        super::snapshot::finish_cut_install(&self.inner.db)?;
        self.reload_meta()?;
        let mut state = self.inner.persist.state();
        state.failed = None;
        state.pending.clear();
        Ok(())
    }

    /// Whether an early install is still being written to sled.
    pub fn persisting(&self) -> bool {
        self.inner.persist.state().running
    }

    /// Takes snapshots of at most `bytes` early (0: none; for tests and
    /// measurements).
    pub fn set_memory_install_limit(&self, bytes: usize) {
        self.inner.persist.limit.store(bytes, Ordering::Relaxed);
    }

    /// Holds the writing of an early install before its next step until
    /// the guard is dropped (tests: a crash at the worst moment).
    #[doc(hidden)]
    pub fn hold_persisting(&self) -> Hold {
        let hold = self.inner.persist.hold.clone();
        *hold.0.lock().unwrap_or_else(PoisonError::into_inner) = true;
        Hold(hold)
    }

    /// Flushes, waiting at most `within` for an early install still being
    /// written (a worker stopping: bounded, where [`Store::flush`] is
    /// not); past it, flushes what has reached sled. True if everything
    /// applied is durable.
    pub fn flush_within(&self, within: std::time::Duration) -> Result<bool> {
        let p = &self.inner.persist;
        let deadline = std::time::Instant::now() + within;
        let mut state = p.state();
        while state.running {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                drop(state);
                self.flush_written()?;
                return Ok(false);
            }
            state = p
                .done
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        drop(state);
        self.flush()?;
        Ok(true)
    }

    /// Waits until no early install is being written; its failure, if it
    /// failed. Never called with the writer lock held (the writing takes
    /// it to finish).
    pub(super) fn wait_persisted(&self) -> Result<()> {
        let p = &self.inner.persist;
        let mut state = p.state();
        while state.running {
            state = p.done.wait(state).unwrap_or_else(PoisonError::into_inner);
        }
        match &state.failed {
            Some(why) => Err(Error::Storage(format!(
                "the store's install was not written: {why}"
            ))),
            None => Ok(()),
        }
    }

    /// Commits a group's changes (the writer lock held): to the image
    /// while it is live, queued for sled; else to sled. `then` runs
    /// before readers are let in again. Refused once the image's writing
    /// failed: nothing written after could be made durable.
    pub(super) fn commit_changes(&self, changes: Changes, then: impl FnOnce()) -> Result<()> {
        let _g = self.write_gate();
        if self.inner.image.is_live() {
            if let Some(why) = &self.inner.persist.state().failed {
                return Err(Error::Storage(format!(
                    "the store's install was not written: {why}"
                )));
            }
            self.inner.image.apply(&changes);
            self.inner.persist.state().pending.push(changes);
        } else {
            self.inner.db.apply_batch(to_batch(&changes))?;
        }
        then();
        Ok(())
    }

    /// The background thread of an early install.
    fn persist(self, snap: &Snapshot) {
        let outcome = self.write_image(snap);
        if let Err(e) = &outcome {
            tracing::error!("writing a store's install: {e}");
        }
        self.persisted(outcome.map(|_| ()));
    }

    /// Writes the install, then what was committed meanwhile; lets the
    /// image go once sled holds it all, flushed. False: every other
    /// handle on the store was dropped first (the store opens blank, or
    /// at the seq last written, next time).
    fn write_image(&self, snap: &Snapshot) -> Result<bool> {
        let p = &self.inner.persist;
        #[cfg(test)]
        if p.fail.swap(false, Ordering::SeqCst) {
            return Err(Error::Storage("a planted failure".into()));
        }
        let wanted = || Arc::strong_count(&self.inner) > 1;
        let installed = self.write_blank_install(snap, &mut || {
            p.held();
            wanted()
        })?;
        if !installed {
            return Ok(false);
        }
        // What was committed meanwhile, with writes let in; then the
        // rest under the writer lock (so commits cannot keep it from
        // ending), and the switch.
        for _ in 0..CATCH_UP_ROUNDS {
            p.held();
            if !wanted() {
                return Ok(false);
            }
            let pending = std::mem::take(&mut p.state().pending);
            if pending.is_empty() {
                break;
            }
            self.write_pending(&pending)?;
        }
        p.held();
        if !wanted() {
            return Ok(false);
        }
        let _w = lock(&self.inner.writer);
        let pending = std::mem::take(&mut p.state().pending);
        self.write_pending(&pending)?;
        self.inner.db.flush()?;
        let map = {
            let _g = self.write_gate();
            self.inner.image.end()
        };
        // Freed with readers let in.
        drop(map);
        Ok(true)
    }

    fn write_pending(&self, pending: &[Changes]) -> Result<()> {
        for changes in pending {
            self.inner.db.apply_batch(to_batch(changes))?;
        }
        Ok(())
    }

    fn persisted(&self, outcome: Result<()>) {
        let p = &self.inner.persist;
        let mut state = p.state();
        state.running = false;
        state.failed = outcome.err().map(|e| e.to_string());
        p.done.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::super::snapshot::tests::user;
    use super::*;
    use crate::model::{ReadOp, ReadResult, Schema, Value, WriteOp};

    /// Writes `n` users to `store` as one group, made at time 1.
    fn add_users(store: &Store, from: u64, n: u64) {
        let mut group = store.group_at(1);
        for i in from..from + n {
            let seq = group.next_seq();
            group
                .apply(seq, u128::from(i), &user(&format!("u{i}")))
                .unwrap();
        }
        group.commit().unwrap();
    }

    fn users(store: &Store) -> u64 {
        let op = ReadOp::Count {
            table: "users".into(),
            filter: Vec::new(),
        };
        match store.read(&op).unwrap() {
            ReadResult::Count(n) => n,
            other => panic!("a count answered {other:?}"),
        }
    }

    /// A source of `n` users (over three parts of an install) and a blank
    /// store on disk.
    fn source_and_blank(n: u64) -> (Store, tempfile::TempDir, Store) {
        let schema = Arc::new(Schema::rideshare());
        let src = Store::temporary(schema.clone()).unwrap();
        add_users(&src, 0, n);
        let dir = tempfile::tempdir().unwrap();
        let dst = Store::open(dir.path(), schema).unwrap();
        (src, dir, dst)
    }

    fn same(a: &Store, b: &Store) {
        assert_eq!(a.applied_seq(), b.applied_seq());
        assert_eq!(a.checksum().unwrap(), b.checksum().unwrap());
        assert_eq!(a.index_entries().unwrap(), b.index_entries().unwrap());
        assert_eq!(a.request_records().unwrap(), b.request_records().unwrap());
        assert_eq!(users(a), users(b));
    }

    /// A blank store serves an early install before any of it is on disk,
    /// takes writes meanwhile, and holds all of it once flushed, also
    /// when opened again.
    #[test]
    fn an_early_install_serves_at_once_and_reaches_disk_with_the_writes_after_it() {
        let n = 3 * super::super::snapshot::INSTALL_PART as u64 + 7;
        let (src, dir, dst) = source_and_blank(n);
        let hold = dst.hold_persisting();
        dst.install_early(src.snapshot().unwrap()).unwrap();
        assert!(dst.persisting());
        same(&dst, &src);
        // No row reached sled (at most the marker did).
        assert!(dst.inner.db.scan_prefix([keys::DATA]).next().is_none());
        add_users(&src, n, 5);
        add_users(&dst, n, 5);
        same(&dst, &src);
        assert_eq!(dst.answer(u128::from(n + 2)).unwrap().seq, n + 3);
        drop(hold);
        dst.flush().unwrap();
        assert!(!dst.persisting());
        assert!(dst.inner.image.with(|_| ()).is_none());
        same(&dst, &src);
        drop(dst);
        let again = Store::open(dir.path(), src.schema().clone().into()).unwrap();
        same(&again, &src);
        assert_eq!(again.answer(u128::from(n + 2)).unwrap().seq, n + 3);
    }

    /// A store let go of while its early install is still being written
    /// opens blank (the writes it took meanwhile were never flushed),
    /// and installs afresh.
    #[test]
    fn a_store_let_go_of_mid_install_opens_blank() {
        let (src, dir, dst) = source_and_blank(600);
        let hold = dst.hold_persisting();
        dst.install_early(src.snapshot().unwrap()).unwrap();
        add_users(&dst, 600, 3);
        drop(dst);
        drop(hold);
        let again = Store::open(dir.path(), src.schema().clone().into()).unwrap();
        assert_eq!(again.applied_seq(), 0);
        assert!(again.is_blank().unwrap());
        again.install_early(src.snapshot().unwrap()).unwrap();
        again.flush().unwrap();
        same(&again, &src);
    }

    /// A snapshot holding a restore, and any snapshot offered to a store
    /// that is not blank, reach disk before the install returns.
    #[test]
    fn a_restore_or_a_store_not_blank_installs_on_disk_at_once() {
        let (src, _dir, dst) = source_and_blank(10);
        let backup = crate::store::backup_entries(src.snapshot().unwrap().entries);
        let mut group = src.group_at(1);
        let seq = group.next_seq();
        group.restore(seq, 99, &backup).unwrap();
        group.commit().unwrap();
        dst.install_early(src.snapshot().unwrap()).unwrap();
        assert!(!dst.persisting());
        same(&dst, &src);

        let (src, _dir, dst) = source_and_blank(10);
        add_users(&dst, 100, 1);
        dst.install_early(src.snapshot().unwrap()).unwrap();
        assert!(!dst.persisting());
        same(&dst, &src);
    }

    /// A snapshot past the limit installs on disk at once.
    #[test]
    fn a_snapshot_past_the_limit_installs_on_disk_at_once() {
        let (src, _dir, dst) = source_and_blank(10);
        dst.set_memory_install_limit(100);
        dst.install_early(src.snapshot().unwrap()).unwrap();
        assert!(!dst.persisting());
        same(&dst, &src);
    }

    /// Beginning an epoch (a slave promoted) waits for the install's
    /// writing: an epoch is durable only with the writes under it.
    #[test]
    fn beginning_an_epoch_waits_for_the_install() {
        let (src, dir, dst) = source_and_blank(300);
        dst.install_early(src.snapshot().unwrap()).unwrap();
        add_users(&dst, 300, 2);
        dst.begin_epoch(3).unwrap();
        assert!(!dst.persisting());
        drop(dst);
        let again = Store::open(dir.path(), src.schema().clone().into()).unwrap();
        assert_eq!((again.applied_seq(), again.epoch()), (302, 3));
    }

    /// Upcoming rides between two areas, later than 10 and earlier than 5:
    /// an index range whose start is past its end.
    fn inverted() -> Vec<crate::model::Cond> {
        use crate::model::{CmpOp, Cond};
        let c = |column: &str, op, v: i64| Cond {
            column: column.into(),
            op,
            value: Value::Int(v),
        };
        vec![
            c("source", CmpOp::Eq, 1),
            c("destination", CmpOp::Eq, 2),
            c("timestamp", CmpOp::Gt, 10),
            c("timestamp", CmpOp::Lt, 5),
        ]
    }

    /// A range whose start is past its end matches nothing in an early
    /// install's image (a `BTreeMap` range panics on it) or in sled.
    #[test]
    fn an_inverted_range_matches_nothing_in_the_image() {
        let (src, _dir, dst) = source_and_blank(10);
        let hold = dst.hold_persisting();
        dst.install_early(src.snapshot().unwrap()).unwrap();
        let select = ReadOp::Select {
            table: "rides".into(),
            filter: inverted(),
            columns: None,
            order_by: None,
            limit: None,
        };
        assert_eq!(dst.read(&select).unwrap(), ReadResult::Rows(Vec::new()));
        drop(hold);
        dst.flush().unwrap();
        assert_eq!(dst.read(&select).unwrap(), ReadResult::Rows(Vec::new()));
    }

    /// The same range in a group holding writes of its own (a master's
    /// group of several clients' writes): panicked before this store had
    /// images, as soon as the group's overlay held anything.
    #[test]
    fn an_inverted_range_matches_nothing_in_a_groups_own_writes() {
        let (src, _dir, _) = source_and_blank(10);
        let mut group = src.group_at(1);
        let seq = group.next_seq();
        group.apply(seq, 500, &user("in-the-group")).unwrap();
        let delete = WriteOp::Delete {
            table: "rides".into(),
            key: None,
            filter: Some(inverted()),
        };
        let seq = group.next_seq();
        group.apply(seq, 501, &delete).unwrap();
        group.commit().unwrap();
        assert_eq!(users(&src), 11);
    }

    /// An early install whose writing failed refuses writes and flushes
    /// (nothing after it could be made durable) but still serves what it
    /// holds; the next install (a replica resyncing) starts afresh.
    #[test]
    fn a_failed_writing_refuses_writes_until_an_install_starts_afresh() {
        let (src, dir, dst) = source_and_blank(300);
        dst.inner.persist.fail.store(true, Ordering::SeqCst);
        dst.install_early(src.snapshot().unwrap()).unwrap();
        assert!(dst.flush().is_err());
        assert_eq!(users(&dst), 300);
        let mut group = dst.group_at(1);
        let seq = group.next_seq();
        group.apply(seq, 1_000, &user("late")).unwrap();
        assert!(group.commit().is_err());
        assert_eq!(users(&dst), 300);
        add_users(&src, 300, 2);
        dst.install_early(src.snapshot().unwrap()).unwrap();
        dst.flush().unwrap();
        same(&dst, &src);
        drop(dst);
        let again = Store::open(dir.path(), src.schema().clone().into()).unwrap();
        same(&again, &src);
    }

    /// A write that panics is refused like a bad one and changes nothing;
    /// the group goes on and commits the writes around it.
    #[test]
    fn a_write_that_panics_is_refused_and_the_group_goes_on() {
        let (src, _dir, _) = source_and_blank(3);
        let mut group = src.group_at(1);
        let seq = group.next_seq();
        group.apply(seq, 10, &user("first")).unwrap();
        super::super::write::PANIC_NEXT.with(|p| p.set(true));
        let seq = group.next_seq();
        let refused = group.apply(seq, 11, &user("planted"));
        assert!(matches!(refused, Err(Error::BadRequest(_))), "{refused:?}");
        assert_eq!(group.next_seq(), seq);
        group.refuse(seq, 11, &refused.unwrap_err()).unwrap();
        let seq = group.next_seq();
        group.apply(seq, 12, &user("last")).unwrap();
        assert_eq!(group.commit().unwrap(), 6);
        assert_eq!(users(&src), 5);
        assert!(src.answer(11).unwrap().answer.is_err());
    }
}
