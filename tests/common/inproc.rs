//! The RideShare servers started in-process, on port-0 listeners, on a
//! thread of their own with its own actix system; stopped on drop. The
//! `Stack` runs them over the real embedded DBaaS (`Cluster::start` on the
//! in-process broker) in a data dir of its own; other tests run some of
//! the servers alone, to show an upstream or the DBaaS being down.

use std::future::Future;
use std::io;
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

use actix_web::dev::{Server, ServerHandle};
use actix_web::rt::System;
use dbaas::broker::inproc::InProcBroker;
use dbaas::http::orchestrator::OrchestratorState;
use dbaas::http::{gateway, orchestrator, rides, users};
use dbaas::system::Cluster;

use super::Urls;

/// What runs on the servers' thread: the servers, and the embedded
/// cluster under them, if any, stopped once they have stopped.
pub struct Running {
    pub servers: Vec<Server>,
    pub cluster: Option<Cluster>,
}

impl From<Vec<Server>> for Running {
    fn from(servers: Vec<Server>) -> Running {
        Running {
            servers,
            cluster: None,
        }
    }
}

/// Running servers, stopped on drop.
pub struct Servers {
    handles: Vec<ServerHandle>,
    thread: Option<JoinHandle<()>>,
}

impl Servers {
    /// Runs what the async `make` starts on a new thread with its own
    /// actix system; returns once the servers are listening.
    pub fn start<F, Fut, R>(make: F) -> Servers
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = io::Result<R>> + 'static,
        R: Into<Running>,
    {
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            let system = System::new();
            system.block_on(async move {
                let Running { servers, cluster } = match make().await {
                    Ok(running) => running.into(),
                    Err(e) => panic!("the servers do not start: {e}"),
                };
                tx.send(servers.iter().map(Server::handle).collect())
                    .expect("the starter waits");
                futures::future::join_all(servers).await;
                if let Some(cluster) = cluster {
                    cluster.stop().await;
                }
                // Ends the arbiters the cluster's actors run on.
                System::current().stop();
            });
            system.run().expect("the actix system stops cleanly");
        });
        let handles = match rx.recv() {
            Ok(handles) => handles,
            // The thread panicked before the servers listened: say why.
            Err(_) => match thread.join() {
                Err(panic) => std::panic::resume_unwind(panic),
                Ok(()) => panic!("the servers' thread ended before they started"),
            },
        };
        Servers {
            handles,
            thread: Some(thread),
        }
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        for h in &self.handles {
            futures::executor::block_on(h.stop(false));
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A listener on a free port of 127.0.0.1 and its URL.
pub fn listener() -> (TcpListener, String) {
    let l = TcpListener::bind("127.0.0.1:0").expect("a free port");
    let url = format!("http://{}", l.local_addr().expect("an address"));
    (l, url)
}

/// Gateway, users and rides services over the embedded DBaaS: one master
/// and one slave on the in-process broker, and the orchestrator's HTTP API,
/// wired as `dbaas up` wires them.
pub struct Stack {
    pub urls: Urls,
    // Declared before the data dir: the cluster stops before it goes.
    _servers: Servers,
    _dir: tempfile::TempDir,
}

impl Stack {
    pub fn start(body_limit: usize) -> Stack {
        let dir = tempfile::tempdir().expect("a temp dir");
        let data_dir: PathBuf = dir.path().to_owned();
        let (lo, orchestrator) = listener();
        let (lu, users) = listener();
        let (lr, rides) = listener();
        let (lg, gateway) = listener();
        let urls = Urls {
            gateway,
            users,
            rides,
            orchestrator,
        };
        let u = urls.clone();
        let servers = Servers::start(move || async move {
            let broker = Arc::new(InProcBroker::new());
            let mut cluster = Cluster::start(&data_dir, 1, broker)
                .await
                .map_err(|e| io::Error::other(format!("the cluster does not start: {e}")))?;
            // As `dbaas up` runs it.
            cluster.start_scaler(dbaas::actors::scaler::ScalePolicy::default());
            let state = OrchestratorState::of(&cluster);
            let servers = vec![
                orchestrator::server(lo, state, body_limit, 1)?,
                users::server(lu, &u.orchestrator, body_limit)?,
                rides::server(lr, &u.orchestrator, body_limit)?,
                gateway::server(lg, &u.users, &u.rides, body_limit)?,
            ];
            Ok(Running {
                servers,
                cluster: Some(cluster),
            })
        });
        Stack {
            urls,
            _servers: servers,
            _dir: dir,
        }
    }
}
