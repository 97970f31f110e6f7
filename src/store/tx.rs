//! A write transaction: an in-memory overlay over the sled tree.
//!
//! A write (even a batch of many ops) only touches the overlay, so each op
//! sees the effects of the ops before it, and a failing op leaves the tree
//! untouched. Several writes can share one overlay (a group): each runs
//! between [`Tx::begin`] and [`Tx::commit`] or [`Tx::rollback`], and a
//! rolled back write leaves the overlay as it found it. The overlay becomes
//! one `sled::Batch`, which sled applies atomically (also across a crash).
//!
//! What the overlay lies over is the sled tree, or, while a store's
//! install is still being written to sled, the image in memory that
//! stands for it ([`super::memory`]).

use std::collections::BTreeMap;
use std::ops::Bound;

use crate::error::Result;

use super::memory::Image;

/// The smallest key greater than every key starting with `prefix`.
pub(super) fn successor(prefix: &[u8]) -> Bound<Vec<u8>> {
    let mut k = prefix.to_vec();
    while let Some(last) = k.pop() {
        if last < u8::MAX {
            k.push(last + 1);
            return Bound::Excluded(k);
        }
    }
    Bound::Unbounded
}

/// A pending change: `Some` is an insert, `None` a removal.
type Change = Option<Vec<u8>>;

/// Changes to apply together, in key order (an overlay let go of).
pub(super) type Changes = Vec<(Vec<u8>, Change)>;

/// The changes as one sled batch.
pub(super) fn to_batch(changes: &[(Vec<u8>, Change)]) -> sled::Batch {
    let mut batch = sled::Batch::default();
    for (k, v) in changes {
        match v {
            Some(v) => batch.insert(k.as_slice(), v.as_slice()),
            None => batch.remove(k.as_slice()),
        }
    }
    batch
}

/// What a transaction reads beneath its overlay: the tree, unless the
/// image is live.
#[derive(Clone, Copy)]
pub(super) struct Base<'a> {
    pub(super) tree: &'a sled::Tree,
    pub(super) image: Option<&'a Image>,
}

impl<'a> Base<'a> {
    pub(super) fn tree(tree: &'a sled::Tree) -> Self {
        Base { tree, image: None }
    }

    pub(super) fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        if let Some(found) = self.image.and_then(|i| i.with(|m| m.get(key).cloned())) {
            return Ok(found);
        }
        Ok(self.tree.get(key)?.map(|v| v.to_vec()))
    }

    fn contains(&self, key: &[u8]) -> Result<bool> {
        if let Some(found) = self.image.and_then(|i| i.with(|m| m.contains_key(key))) {
            return Ok(found);
        }
        Ok(self.tree.contains_key(key)?)
    }
}

pub(super) struct Tx<'a> {
    base: Base<'a>,
    overlay: BTreeMap<Vec<u8>, Change>,
    /// While a write runs (`begin` to `commit`): what its changes replaced
    /// in the overlay (the outer `None`: the key was not in it), to undo
    /// them in reverse order. `None` outside a write: nothing is logged.
    undo: Option<Vec<(Vec<u8>, Option<Change>)>>,
}

impl<'a> Tx<'a> {
    pub(super) fn new(tree: &'a sled::Tree) -> Self {
        Self::over(Base::tree(tree))
    }

    pub(super) fn over(base: Base<'a>) -> Self {
        Tx {
            base,
            overlay: BTreeMap::new(),
            undo: None,
        }
    }

    /// Starts a write: its changes can be undone until [`Tx::commit`].
    pub(super) fn begin(&mut self) {
        self.undo = Some(Vec::new());
    }

    /// Keeps the changes since [`Tx::begin`].
    pub(super) fn commit(&mut self) {
        self.undo = None;
    }

    /// Undoes the changes since [`Tx::begin`].
    pub(super) fn rollback(&mut self) {
        let undo = self.undo.take().unwrap_or_default();
        for (key, before) in undo.into_iter().rev() {
            match before {
                Some(v) => self.overlay.insert(key, v),
                None => self.overlay.remove(&key),
            };
        }
    }

    fn set(&mut self, key: Vec<u8>, value: Change) {
        match &mut self.undo {
            Some(undo) => {
                let before = self.overlay.insert(key.clone(), value);
                undo.push((key, before));
            }
            None => {
                self.overlay.insert(key, value);
            }
        }
    }

    pub(super) fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        match self.overlay.get(key) {
            Some(pending) => Ok(pending.clone()),
            None => self.base.get(key),
        }
    }

    pub(super) fn contains(&self, key: &[u8]) -> Result<bool> {
        match self.overlay.get(key) {
            Some(pending) => Ok(pending.is_some()),
            None => self.base.contains(key),
        }
    }

    pub(super) fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.set(key, Some(value));
    }

    pub(super) fn remove(&mut self, key: Vec<u8>) {
        self.set(key, None);
    }

    /// Calls `f` on every live entry whose key starts with `prefix`, in key
    /// order, merging the overlay over the tree; stops when `f` says false.
    pub(super) fn scan(
        &self,
        prefix: &[u8],
        mut f: impl FnMut(&[u8], &[u8]) -> Result<bool>,
    ) -> Result<()> {
        let hi = successor(prefix);
        self.scan_range(prefix, hi.as_ref().map(Vec::as_slice), &mut f)
    }

    /// Calls `f` on every live entry from `lo` (included) to `hi`, in key
    /// order, merging the overlay over the tree; stops when `f` says false.
    pub(super) fn scan_range(
        &self,
        lo: &[u8],
        hi: Bound<&[u8]>,
        mut f: impl FnMut(&[u8], &[u8]) -> Result<bool>,
    ) -> Result<()> {
        // A start past the end holds nothing (a `BTreeMap` range panics
        // on it: conditions such as `t > 10` and `t < 5` make one).
        let empty = match hi {
            Bound::Included(h) => lo > h,
            Bound::Excluded(h) => lo >= h,
            Bound::Unbounded => false,
        };
        if empty {
            return Ok(());
        }
        let range = (Bound::Included(lo), hi);
        let from_image = self.base.image.and_then(|image| {
            image.with(|m| {
                let it = m.range::<[u8], _>(range).map(|(k, v)| Ok((k, v)));
                self.merge(it, range, &mut f)
            })
        });
        match from_image {
            Some(done) => done,
            None => {
                let it = self
                    .base
                    .tree
                    .range::<&[u8], _>(range)
                    .map(|e| e.map_err(Into::into));
                self.merge(it, range, &mut f)
            }
        }
    }

    /// Merges the overlay's entries in `range` over the base's (`base`).
    fn merge<K: AsRef<[u8]>, V: AsRef<[u8]>>(
        &self,
        mut base: impl Iterator<Item = Result<(K, V)>>,
        range: (Bound<&[u8]>, Bound<&[u8]>),
        f: &mut impl FnMut(&[u8], &[u8]) -> Result<bool>,
    ) -> Result<()> {
        let mut over_it = self.overlay.range::<[u8], _>(range).peekable();
        let mut next_base = base.next().transpose()?;
        loop {
            // The overlay entry goes first when its key is not after the
            // base's; on equal keys it shadows the base's entry.
            let over = over_it.next_if(|(ok, _)| match &next_base {
                Some((bk, _)) => ok.as_slice() <= bk.as_ref(),
                None => true,
            });
            let go_on = if let Some((ok, ov)) = over {
                if matches!(&next_base, Some((bk, _)) if bk.as_ref() == ok.as_slice()) {
                    next_base = base.next().transpose()?;
                }
                match ov {
                    Some(v) => f(ok, v)?,
                    None => true,
                }
            } else if let Some((bk, bv)) = next_base.take() {
                next_base = base.next().transpose()?;
                f(bk.as_ref(), bv.as_ref())?
            } else {
                return Ok(());
            };
            if !go_on {
                return Ok(());
            }
        }
    }

    /// The keys of every live entry under `prefix`.
    pub(super) fn keys(&self, prefix: &[u8]) -> Result<Vec<Vec<u8>>> {
        let mut keys = Vec::new();
        self.scan(prefix, |k, _| {
            keys.push(k.to_vec());
            Ok(true)
        })?;
        Ok(keys)
    }

    pub(super) fn into_batch(self) -> sled::Batch {
        let mut batch = sled::Batch::default();
        for (k, v) in self.overlay {
            match v {
                Some(v) => batch.insert(k, v),
                None => batch.remove(k),
            }
        }
        batch
    }

    /// The overlay's changes, in key order.
    pub(super) fn into_changes(self) -> Changes {
        self.overlay.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(tx: &Tx, prefix: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut out = Vec::new();
        tx.scan(prefix, |k, v| {
            out.push((k.to_vec(), v.to_vec()));
            Ok(true)
        })
        .unwrap();
        out
    }

    #[test]
    fn overlay_shadows_and_merges_in_order() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        for k in [b"a1", b"a3", b"a5", b"b1"] {
            db.insert(k, &k[..]).unwrap();
        }
        let mut tx = Tx::new(&db);
        tx.put(b"a0".to_vec(), b"new0".to_vec());
        tx.put(b"a3".to_vec(), b"new3".to_vec());
        tx.remove(b"a5".to_vec());
        tx.put(b"a9".to_vec(), b"new9".to_vec());
        tx.put(b"c".to_vec(), b"c".to_vec());
        let got = entries(&tx, b"a");
        let want: Vec<(Vec<u8>, Vec<u8>)> = [
            (&b"a0"[..], &b"new0"[..]),
            (b"a1", b"a1"),
            (b"a3", b"new3"),
            (b"a9", b"new9"),
        ]
        .iter()
        .map(|(k, v)| (k.to_vec(), v.to_vec()))
        .collect();
        assert_eq!(got, want);
        assert!(!tx.contains(b"a5").unwrap());
        assert_eq!(tx.get(b"a1").unwrap().as_deref(), Some(&b"a1"[..]));
        // Nothing reached the tree before the batch is applied.
        assert!(db.contains_key(b"a5").unwrap());
        db.apply_batch(tx.into_batch()).unwrap();
        assert!(!db.contains_key(b"a5").unwrap());
        assert_eq!(db.get(b"a0").unwrap().as_deref(), Some(&b"new0"[..]));
    }

    #[test]
    fn rollback_restores_the_overlay_of_earlier_writes() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        db.insert(b"t", &b"tree"[..]).unwrap();
        let mut tx = Tx::new(&db);
        tx.begin();
        tx.put(b"a".to_vec(), b"first".to_vec());
        tx.commit();
        tx.begin();
        tx.put(b"a".to_vec(), b"second".to_vec());
        tx.put(b"b".to_vec(), b"second".to_vec());
        tx.remove(b"t".to_vec());
        tx.put(b"b".to_vec(), b"again".to_vec());
        tx.rollback();
        assert_eq!(tx.get(b"a").unwrap().as_deref(), Some(&b"first"[..]));
        assert_eq!(tx.get(b"b").unwrap(), None);
        assert_eq!(tx.get(b"t").unwrap().as_deref(), Some(&b"tree"[..]));
        assert_eq!(tx.overlay.len(), 1);
    }

    #[test]
    fn scan_stops_when_asked() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        for k in [b"a1", b"a2", b"a3"] {
            db.insert(k, &k[..]).unwrap();
        }
        let tx = Tx::new(&db);
        let mut seen = 0;
        tx.scan(b"a", |_, _| {
            seen += 1;
            Ok(seen < 2)
        })
        .unwrap();
        assert_eq!(seen, 2);
    }
}
