//! The behaviour every coordinator implementation must share, as one
//! suite of checks run against each (the in-process twin in unit tests,
//! ZooKeeper in `tests/coord.rs`). `open` makes a new session on the
//! coordinator under test, all of them under the same root; each check
//! works under a fresh node of its own and closes the sessions it opened.
//!
//! Nothing waits by sleeping: a watch that must fire is awaited with a
//! deadline, and one that must not has had a later event of the same
//! session delivered first.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;

use super::{CoordError, Coordinator, NodeData, NodeKind, SessionState, Watch, WatchEvent};

/// Opens a new session on the coordinator under test.
pub type Open =
    dyn Fn() -> Pin<Box<dyn Future<Output = Arc<dyn Coordinator>> + Send>> + Send + Sync;

const WAIT: Duration = Duration::from_secs(10);

/// Runs every check.
pub async fn run_all(open: &Open) {
    create_needs_a_parent_and_refuses_a_duplicate(open).await;
    ensure_makes_parents_and_is_idempotent(open).await;
    get_of_a_missing_node_is_none(open).await;
    set_compares_versions(open).await;
    delete_compares_versions_and_refuses_parents(open).await;
    children_are_sorted(open).await;
    ephemeral_is_seen_by_others_and_goes_with_its_session(open).await;
    any_session_may_delete_an_ephemeral(open).await;
    data_watch_fires_on_create_change_and_delete(open).await;
    data_watch_fires_for_its_node_only(open).await;
    children_watch_fires_on_add_and_remove(open).await;
    change_right_after_the_read_is_not_missed(open).await;
    closed_session_ends_its_calls_and_watches(open).await;
}

/// A fresh node for one check, made by `c`.
async fn fresh(c: &dyn Coordinator, check: &str) -> String {
    let dir = format!("/{check}-{}", fastrand::u64(..));
    c.ensure(&dir).await.expect("a fresh node for the check");
    dir
}

/// Awaits a watch that must fire.
async fn fired(w: Watch) -> WatchEvent {
    tokio::time::timeout(WAIT, w)
        .await
        .expect("the watch fires within the deadline")
}

/// Awaits a session state.
async fn reaches(c: &dyn Coordinator, want: SessionState) {
    let mut state = c.state();
    let reached = tokio::time::timeout(WAIT, state.wait_for(|s| *s == want))
        .await
        .is_ok_and(|r| r.is_ok());
    let now = *c.state().borrow();
    assert!(reached, "the session reaches {want:?}, not {now:?}");
}

fn node(data: &[u8], version: i32) -> Option<NodeData> {
    Some(NodeData {
        data: data.to_vec(),
        version,
    })
}

/// A node is created only under an existing parent, and only once.
pub async fn create_needs_a_parent_and_refuses_a_duplicate(open: &Open) {
    let c = open().await;
    let dir = fresh(&*c, "create").await;
    let orphan = format!("{dir}/missing/child");
    let made = c.create(&orphan, b"x", NodeKind::Persistent).await;
    assert_eq!(made, Err(CoordError::NoNode));
    let n = format!("{dir}/n");
    c.create(&n, b"x", NodeKind::Persistent).await.unwrap();
    let again = c.create(&n, b"y", NodeKind::Persistent).await;
    assert_eq!(again, Err(CoordError::NodeExists));
    assert_eq!(c.get(&n).await.unwrap(), node(b"x", 0));
    assert_eq!(
        c.create("/", b"", NodeKind::Persistent).await,
        Err(CoordError::NodeExists)
    );
    c.close().await;
}

/// `ensure` makes missing parents, and leaves existing nodes alone.
pub async fn ensure_makes_parents_and_is_idempotent(open: &Open) {
    let c = open().await;
    let dir = fresh(&*c, "ensure").await;
    let deep = format!("{dir}/a/b/c");
    c.ensure(&deep).await.unwrap();
    c.ensure(&deep).await.unwrap();
    assert_eq!(c.get(&deep).await.unwrap(), node(b"", 0));
    c.set(&dir, b"kept", None).await.unwrap();
    c.ensure(&dir).await.unwrap();
    assert_eq!(c.get(&dir).await.unwrap(), node(b"kept", 1));
    c.ensure("/").await.unwrap();
    c.close().await;
}

/// Reading a node that does not exist is not an error.
pub async fn get_of_a_missing_node_is_none(open: &Open) {
    let c = open().await;
    let dir = fresh(&*c, "get").await;
    assert_eq!(c.get(&format!("{dir}/none")).await.unwrap(), None);
    assert_eq!(c.get(&format!("{dir}/no/ne")).await.unwrap(), None);
    c.close().await;
}

/// Every set bumps the version; a set with a version is compare-and-set.
pub async fn set_compares_versions(open: &Open) {
    let c = open().await;
    let dir = fresh(&*c, "set").await;
    let n = format!("{dir}/n");
    assert_eq!(c.set(&n, b"x", None).await, Err(CoordError::NoNode));
    c.create(&n, b"0", NodeKind::Persistent).await.unwrap();
    assert_eq!(c.set(&n, b"1", None).await, Ok(1));
    assert_eq!(c.set(&n, b"2", Some(1)).await, Ok(2));
    assert_eq!(
        c.set(&n, b"stale", Some(1)).await,
        Err(CoordError::BadVersion)
    );
    assert_eq!(c.get(&n).await.unwrap(), node(b"2", 2));
    c.close().await;
}

/// A delete with a version is conditional; a node with children stays.
pub async fn delete_compares_versions_and_refuses_parents(open: &Open) {
    let c = open().await;
    let dir = fresh(&*c, "delete").await;
    let (n, child) = (format!("{dir}/n"), format!("{dir}/n/child"));
    c.ensure(&child).await.unwrap();
    assert_eq!(c.delete(&n, None).await, Err(CoordError::NotEmpty));
    assert_eq!(c.delete(&child, Some(5)).await, Err(CoordError::BadVersion));
    c.delete(&child, Some(0)).await.unwrap();
    c.set(&n, b"x", None).await.unwrap();
    assert_eq!(c.delete(&n, Some(0)).await, Err(CoordError::BadVersion));
    c.delete(&n, Some(1)).await.unwrap();
    assert_eq!(c.delete(&n, None).await, Err(CoordError::NoNode));
    assert_eq!(c.get(&n).await.unwrap(), None);
    c.close().await;
}

/// Children come sorted by name; a missing node has none to list.
pub async fn children_are_sorted(open: &Open) {
    let c = open().await;
    let dir = fresh(&*c, "children").await;
    assert_eq!(c.children(&dir).await.unwrap(), Vec::<String>::new());
    for name in ["w3", "w10", "a", "w1"] {
        let p = format!("{dir}/{name}");
        c.create(&p, b"", NodeKind::Persistent).await.unwrap();
    }
    c.ensure(&format!("{dir}/a/deeper")).await.unwrap();
    assert_eq!(c.children(&dir).await.unwrap(), ["a", "w1", "w10", "w3"]);
    let missing = c.children(&format!("{dir}/none")).await;
    assert_eq!(missing, Err(CoordError::NoNode));
    c.close().await;
}

/// Another session sees an ephemeral node; it goes when its session is
/// closed, at once (a watch sees it go).
pub async fn ephemeral_is_seen_by_others_and_goes_with_its_session(open: &Open) {
    let (owner, other) = (open().await, open().await);
    assert_ne!(owner.session_id(), other.session_id());
    let dir = fresh(&*owner, "ephemeral").await;
    let e = format!("{dir}/e");
    owner.create(&e, b"me", NodeKind::Ephemeral).await.unwrap();
    let (seen, gone) = other.watch_data(&e).await.unwrap();
    assert_eq!(seen, node(b"me", 0));
    owner.close().await;
    assert_eq!(fired(gone).await, WatchEvent::Changed);
    assert_eq!(other.get(&e).await.unwrap(), None);
    assert_eq!(other.children(&dir).await.unwrap(), Vec::<String>::new());
    other.close().await;
}

/// Any session may delete another's ephemeral node.
pub async fn any_session_may_delete_an_ephemeral(open: &Open) {
    let (owner, other) = (open().await, open().await);
    let dir = fresh(&*owner, "deleteephemeral").await;
    let e = format!("{dir}/e");
    owner.create(&e, b"", NodeKind::Ephemeral).await.unwrap();
    other.delete(&e, None).await.unwrap();
    assert_eq!(owner.get(&e).await.unwrap(), None);
    owner
        .create(&e, b"again", NodeKind::Ephemeral)
        .await
        .unwrap();
    owner.close().await;
    other.close().await;
}

/// A data watch fires once on the node's creation, on a change, on its
/// deletion; re-armed each time, it shows what the change did.
pub async fn data_watch_fires_on_create_change_and_delete(open: &Open) {
    let (c, writer) = (open().await, open().await);
    let dir = fresh(&*c, "datawatch").await;
    let n = format!("{dir}/n");
    let (none, w) = c.watch_data(&n).await.unwrap();
    assert_eq!(none, None);
    writer.create(&n, b"0", NodeKind::Persistent).await.unwrap();
    assert_eq!(fired(w).await, WatchEvent::Changed);
    let (created, w) = c.watch_data(&n).await.unwrap();
    assert_eq!(created, node(b"0", 0));
    writer.set(&n, b"1", None).await.unwrap();
    writer.set(&n, b"2", None).await.unwrap();
    assert_eq!(fired(w).await, WatchEvent::Changed);
    // Fired once for two changes; the read that re-arms sees both.
    let (changed, w) = c.watch_data(&n).await.unwrap();
    assert_eq!(changed, node(b"2", 2));
    writer.delete(&n, None).await.unwrap();
    assert_eq!(fired(w).await, WatchEvent::Changed);
    assert_eq!(c.watch_data(&n).await.unwrap().0, None);
    c.close().await;
    writer.close().await;
}

/// A data watch does not fire for another node's change, nor for a
/// change of its node's children.
pub async fn data_watch_fires_for_its_node_only(open: &Open) {
    let (c, writer) = (open().await, open().await);
    let dir = fresh(&*c, "datawatchonly").await;
    let (a, b) = (format!("{dir}/a"), format!("{dir}/b"));
    c.ensure(&a).await.unwrap();
    c.ensure(&b).await.unwrap();
    let (_, mut on_a) = c.watch_data(&a).await.unwrap();
    let (_, on_b) = c.watch_data(&b).await.unwrap();
    writer.ensure(&format!("{a}/child")).await.unwrap();
    writer.set(&b, b"x", None).await.unwrap();
    assert_eq!(fired(on_b).await, WatchEvent::Changed);
    assert!(
        (&mut on_a).now_or_never().is_none(),
        "a's watch is still armed"
    );
    writer.set(&a, b"x", None).await.unwrap();
    assert_eq!(fired(on_a).await, WatchEvent::Changed);
    c.close().await;
    writer.close().await;
}

/// A children watch fires when a child comes or goes, and when its node
/// is deleted.
pub async fn children_watch_fires_on_add_and_remove(open: &Open) {
    let (c, writer) = (open().await, open().await);
    let dir = fresh(&*c, "childwatch").await;
    let (kids, w) = c.watch_children(&dir).await.unwrap();
    assert!(kids.is_empty());
    let child = format!("{dir}/k");
    writer
        .create(&child, b"", NodeKind::Ephemeral)
        .await
        .unwrap();
    assert_eq!(fired(w).await, WatchEvent::Changed);
    let (kids, w) = c.watch_children(&dir).await.unwrap();
    assert_eq!(kids, ["k"]);
    writer.delete(&child, None).await.unwrap();
    assert_eq!(fired(w).await, WatchEvent::Changed);
    let (kids, w) = c.watch_children(&dir).await.unwrap();
    assert!(kids.is_empty());
    writer.delete(&dir, None).await.unwrap();
    assert_eq!(fired(w).await, WatchEvent::Changed);
    let gone = c.watch_children(&dir).await.map(|(k, _)| k);
    assert_eq!(gone, Err(CoordError::NoNode));
    c.close().await;
    writer.close().await;
}

/// A change made right after the read that set a watch fires it.
pub async fn change_right_after_the_read_is_not_missed(open: &Open) {
    let (c, writer) = (open().await, open().await);
    let dir = fresh(&*c, "afterread").await;
    let n = format!("{dir}/n");
    let (_, on_missing) = c.watch_data(&n).await.unwrap();
    writer.create(&n, b"", NodeKind::Persistent).await.unwrap();
    let (_, on_data) = c.watch_data(&n).await.unwrap();
    writer.set(&n, b"x", None).await.unwrap();
    let (_, on_kids) = c.watch_children(&dir).await.unwrap();
    writer
        .create(&format!("{dir}/k"), b"", NodeKind::Persistent)
        .await
        .unwrap();
    for w in [on_missing, on_data, on_kids] {
        assert_eq!(fired(w).await, WatchEvent::Changed);
    }
    c.close().await;
    writer.close().await;
}

/// A session is connected until closed; then it is closed, its pending
/// watches resolve, every call says the session ended, and closing again
/// changes nothing.
pub async fn closed_session_ends_its_calls_and_watches(open: &Open) {
    let c = open().await;
    assert_eq!(*c.state().borrow(), SessionState::Connected);
    let dir = fresh(&*c, "close").await;
    let n = format!("{dir}/n");
    let (_, on_data) = c.watch_data(&n).await.unwrap();
    let (_, on_kids) = c.watch_children(&dir).await.unwrap();
    c.close().await;
    reaches(&*c, SessionState::Closed).await;
    assert_eq!(fired(on_data).await, WatchEvent::SessionEnded);
    assert_eq!(fired(on_kids).await, WatchEvent::SessionEnded);
    all_calls_say_ended(&*c, &n).await;
    c.close().await;
    assert_eq!(*c.state().borrow(), SessionState::Closed);
}

/// Every call of an ended session fails with `SessionEnded`.
pub async fn all_calls_say_ended(c: &dyn Coordinator, path: &str) {
    let errors = [
        c.create(path, b"", NodeKind::Persistent).await.err(),
        c.ensure(path).await.err(),
        c.get(path).await.err(),
        c.set(path, b"", None).await.err(),
        c.delete(path, None).await.err(),
        c.children(path).await.err(),
        c.watch_data(path).await.err(),
        c.watch_children(path).await.err(),
    ];
    for (call, e) in errors.into_iter().enumerate() {
        assert_eq!(e, Some(CoordError::SessionEnded), "call {call}");
    }
}
