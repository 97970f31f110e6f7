//! The RideShare servers started in-process, on port-0 listeners, on a
//! thread of their own; stopped on drop. Used where `dbaas up` cannot
//! show a behaviour (an upstream or the orchestrator being down).

use std::net::TcpListener;
use std::sync::mpsc;
use std::thread::JoinHandle;

use actix_web::dev::{Server, ServerHandle};
use actix_web::{web, App, HttpServer};
use dbaas::http::common::BodyLimit;
use dbaas::http::{gateway, rides, users};

use super::fake_orchestrator::{self, FakeDb};
use super::Urls;

/// Running servers, stopped on drop.
pub struct Servers {
    handles: Vec<ServerHandle>,
    thread: Option<JoinHandle<()>>,
}

impl Servers {
    /// Runs the servers `make` builds on a new thread with its own actix
    /// system; returns once they are listening.
    pub fn start<F>(make: F) -> Servers
    where
        F: FnOnce() -> std::io::Result<Vec<Server>> + Send + 'static,
    {
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                let servers = make().expect("the servers start");
                tx.send(servers.iter().map(Server::handle).collect())
                    .expect("the starter waits");
                futures::future::join_all(servers).await;
            })
        });
        let handles = rx.recv().expect("the servers started");
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

/// The in-memory orchestrator on `listener`.
pub fn fake_orchestrator(listener: TcpListener) -> std::io::Result<Server> {
    let fake = web::Data::new(FakeDb::default());
    Ok(HttpServer::new(move || {
        App::new()
            .app_data(fake.clone())
            .app_data(BodyLimit(1 << 20))
            .configure(fake_orchestrator::configure)
    })
    .workers(1)
    .disable_signals()
    .listen(listener)?
    .run())
}

/// Gateway, users and rides services over the in-memory orchestrator.
pub struct Stack {
    pub urls: Urls,
    _servers: Servers,
}

impl Stack {
    pub fn start(body_limit: usize) -> Stack {
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
        let servers = Servers::start(move || {
            Ok(vec![
                fake_orchestrator(lo)?,
                users::server(lu, &u.orchestrator, body_limit)?,
                rides::server(lr, &u.orchestrator, body_limit)?,
                gateway::server(lg, &u.users, &u.rides, body_limit)?,
            ])
        });
        Stack {
            urls,
            _servers: servers,
        }
    }
}
