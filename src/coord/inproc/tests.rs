//! The in-process coordinator: the conformance suite, and what only it
//! can do (expire, disconnect and reconnect sessions on cue).

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;

use super::*;
use crate::coord::conformance;

const WAIT: Duration = Duration::from_secs(5);

async fn fired(w: Watch) -> WatchEvent {
    tokio::time::timeout(WAIT, w)
        .await
        .expect("the watch fires")
}

#[actix::test]
async fn keeps_the_coordinator_semantics() {
    let server = InProcServer::new();
    let open = move || {
        let server = server.clone();
        async move {
            let c = server.connect("/dbaas/conformance").expect("a session");
            Arc::new(c) as Arc<dyn Coordinator>
        }
        .boxed()
    };
    conformance::run_all(&open).await;
}

#[actix::test]
async fn expiry_ends_the_session_and_its_ephemerals() {
    let server = InProcServer::new();
    let (victim, other) = (server.connect("/r").unwrap(), server.connect("/r").unwrap());
    victim.create("/e", b"", NodeKind::Ephemeral).await.unwrap();
    let (_, victims_watch) = victim.watch_data("/x").await.unwrap();
    let (_, gone) = other.watch_data("/e").await.unwrap();
    assert!(server.expire(victim.session_id()));
    assert_eq!(fired(gone).await, WatchEvent::Changed);
    assert_eq!(other.get("/e").await.unwrap(), None);
    assert_eq!(fired(victims_watch).await, WatchEvent::SessionEnded);
    assert_eq!(*victim.state().borrow(), SessionState::Expired);
    conformance::all_calls_say_ended(&victim, "/e").await;
    victim.close().await;
    assert_eq!(*victim.state().borrow(), SessionState::Expired);
    assert_eq!(
        server.sessions(),
        [(other.session_id(), SessionState::Connected)]
    );
    assert!(!server.expire(victim.session_id()));
}

#[actix::test]
async fn a_disconnected_session_keeps_its_ephemerals_and_holds_its_watches() {
    let server = InProcServer::new();
    let (c, other) = (server.connect("/r").unwrap(), server.connect("/r").unwrap());
    c.create("/e", b"", NodeKind::Ephemeral).await.unwrap();
    let (_, mut w) = c.watch_data("/n").await.unwrap();
    assert!(server.disconnect(c.session_id()));
    assert_eq!(*c.state().borrow(), SessionState::Disconnected);
    assert!(matches!(c.get("/e").await, Err(CoordError::Unavailable(_))));
    other.create("/n", b"", NodeKind::Persistent).await.unwrap();
    assert!((&mut w).now_or_never().is_none(), "held while disconnected");
    assert!(other.get("/e").await.unwrap().is_some());
    assert!(server.reconnect(c.session_id()));
    assert_eq!(*c.state().borrow(), SessionState::Connected);
    assert_eq!(fired(w).await, WatchEvent::Changed);
    assert!(c.get("/e").await.unwrap().is_some());
}

#[actix::test]
async fn expiry_while_disconnected_is_heard_on_reconnecting() {
    let server = InProcServer::new();
    let (c, other) = (server.connect("/r").unwrap(), server.connect("/r").unwrap());
    c.create("/e", b"", NodeKind::Ephemeral).await.unwrap();
    let (_, w) = c.watch_data("/n").await.unwrap();
    server.disconnect(c.session_id());
    other.create("/n", b"", NodeKind::Persistent).await.unwrap();
    server.expire(c.session_id());
    // Gone for everyone else at once; the cut-off client hears nothing
    // (it cannot reach the coordinator) until it reconnects.
    assert_eq!(other.get("/e").await.unwrap(), None);
    assert_eq!(*c.state().borrow(), SessionState::Disconnected);
    assert!(matches!(c.get("/n").await, Err(CoordError::Unavailable(_))));
    assert!(server.reconnect(c.session_id()));
    assert_eq!(fired(w).await, WatchEvent::SessionEnded);
    assert_eq!(*c.state().borrow(), SessionState::Expired);
    assert!(!server.reconnect(c.session_id()));
}

#[actix::test]
async fn dropping_a_session_closes_it() {
    let server = InProcServer::new();
    let (c, other) = (server.connect("/r").unwrap(), server.connect("/r").unwrap());
    c.create("/e", b"", NodeKind::Ephemeral).await.unwrap();
    let state = c.state();
    drop(c);
    assert_eq!(*state.borrow(), SessionState::Closed);
    assert_eq!(other.get("/e").await.unwrap(), None);
    assert_eq!(server.sessions().len(), 1);
}

#[actix::test]
async fn roots_are_apart_and_nested_in_one_tree() {
    let server = InProcServer::new();
    let (a, b) = (server.connect("/a").unwrap(), server.connect("/b").unwrap());
    let top = server.connect("/").unwrap();
    a.create("/n", b"a", NodeKind::Persistent).await.unwrap();
    assert_eq!(b.get("/n").await.unwrap(), None);
    assert_eq!(
        top.get("/a/n").await.unwrap().map(|n| n.data),
        Some(b"a".to_vec())
    );
    assert_eq!(top.children("/").await.unwrap(), ["a", "b"]);
    top.delete("/a/n", None).await.unwrap();
    top.delete("/a", None).await.unwrap();
    assert_eq!(a.ensure("/m").await, Err(CoordError::NoNode));
}

#[actix::test]
async fn bad_paths_are_refused() {
    let server = InProcServer::new();
    assert!(server.connect("relative").is_err());
    let c = server.connect("/r").unwrap();
    for bad in ["", "n", "/n/", "//n", "/n/../m", "/./n", "/n\0"] {
        let made = c.create(bad, b"", NodeKind::Persistent).await;
        assert!(matches!(made, Err(CoordError::Unavailable(_))), "{bad:?}");
    }
    c.create("/e", b"", NodeKind::Ephemeral).await.unwrap();
    let under = c.create("/e/child", b"", NodeKind::Persistent).await;
    assert!(matches!(under, Err(CoordError::Unavailable(_))));
}
