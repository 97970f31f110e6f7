//! The workloads: what a virtual user sends next, and which answers count as
//! success (the status codes of the contract, and a glance at the body where
//! it is cheap). The RideShare mix is in [`rideshare`], the seeding of
//! `read` in [`seed`]; `amqp-echo` is set up in `echo.rs`, its virtual users
//! are here like the others'.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::args::Workload;
use crate::drive::ErrorLog;
use crate::echo::{self, EchoClient};
use crate::error::{Error, Result};
use crate::http1::{Conn, Method, Origin};
use crate::report::Failure;
use rideshare::{Rider, RIDESHARE_OPS};

mod rideshare;
mod seed;

pub(crate) use seed::seed;

/// The password of every user the load generator makes: 40 hex digits.
pub(crate) const PASSWORD: &str = "3d725109c7e7c0bfb9d709836735b56d943d263f";

/// Up to this many `read` bodies are serialized before the run; with more
/// keys each body is built when it is sent.
const MAX_PREBUILT_BODIES: u64 = 1 << 20;

/// A per-run prefix that keeps the rows of a run apart from every other's.
pub(crate) fn run_prefix() -> String {
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    format!("{:x}{:04x}", millis % (1 << 40), fastrand::u16(..))
}

/// What every virtual user of a run shares.
pub(crate) enum Shared {
    Read(Arc<ReadShared>),
    Write(Arc<WriteShared>),
    Rideshare(Arc<RideShared>),
    Echo(Arc<EchoClient>),
}

pub(crate) struct ReadShared {
    path: String,
    keys: u64,
    /// `bodies[i]` looks up key `i`; `None` with too many keys to keep.
    bodies: Option<Vec<&'static str>>,
}

pub(crate) struct WriteShared {
    path: String,
    prefix: String,
}

pub(crate) struct RideShared {
    origin: Origin,
    users: String,
    rides: String,
    prefix: String,
}

fn get_body(out: &mut String, key: u64) {
    let _ = write!(out, r#"{{"op":"get","table":"users","key":"lg-{key}"}}"#);
}

impl Shared {
    /// The shared state of an HTTP workload against `origin` (`amqp-echo`
    /// comes from [`echo::start`]).
    pub(crate) fn new(
        workload: Workload,
        origin: &Origin,
        keys: u64,
        eventual: bool,
    ) -> Result<Self> {
        Ok(match workload {
            Workload::AmqpEcho => return Err(Error::usage("amqp-echo is set up by echo::start")),
            Workload::Read => {
                let query = if eventual {
                    "?consistency=eventual"
                } else {
                    ""
                };
                let bodies = (keys <= MAX_PREBUILT_BODIES).then(|| {
                    // One buffer for every body, kept for the rest of the
                    // process (a load generator runs once per process), so
                    // that a request's body is a `&'static str`: no copy.
                    let mut all = String::with_capacity(keys as usize * 48);
                    let mut ends = Vec::with_capacity(keys as usize);
                    for i in 0..keys {
                        get_body(&mut all, i);
                        ends.push(all.len());
                    }
                    let all: &'static str = Box::leak(all.into_boxed_str());
                    let mut from = 0;
                    ends.into_iter()
                        .map(|to| {
                            let body = &all[from..to];
                            from = to;
                            body
                        })
                        .collect()
                });
                Shared::Read(Arc::new(ReadShared {
                    path: origin.path(&format!("/api/v1/db/read{query}")),
                    keys,
                    bodies,
                }))
            }
            Workload::Write => Shared::Write(Arc::new(WriteShared {
                path: origin.path("/api/v1/db/write"),
                prefix: run_prefix(),
            })),
            Workload::Rideshare => Shared::Rideshare(Arc::new(RideShared {
                origin: origin.clone(),
                users: origin.path("/api/v1/users"),
                rides: origin.path("/api/v1/rides"),
                prefix: run_prefix(),
            })),
        })
    }

    /// The names of the operations, indexed as [`Task::step`] reports them.
    pub(crate) fn op_names(&self) -> &'static [&'static str] {
        match self {
            Shared::Read(_) => &["get"],
            Shared::Write(_) => &["insert"],
            Shared::Rideshare(_) => RIDESHARE_OPS,
            Shared::Echo(_) => &["echo"],
        }
    }
}

enum Kind {
    Read(Arc<ReadShared>, Conn),
    Write {
        shared: Arc<WriteShared>,
        n: u64,
        conn: Conn,
    },
    Rideshare(Box<Rider>),
    Echo {
        client: Arc<EchoClient>,
        n: u64,
    },
}

/// One virtual user.
pub(crate) struct Task {
    rng: fastrand::Rng,
    id: usize,
    kind: Kind,
}

/// Why an answer is not the expected one.
enum Check {
    /// The status is not one the contract gives for this request.
    Status,
    /// The status is, but the body or headers are not.
    Body(&'static str),
}

fn snippet(body: &[u8]) -> String {
    let cut = &body[..body.len().min(200)];
    let text = String::from_utf8_lossy(cut);
    if cut.len() < body.len() {
        format!("{text}...")
    } else {
        text.into_owned()
    }
}

/// Sends a request on `conn` and checks the answer. A failure is
/// classified and (the first few) logged.
async fn exchange<T>(
    conn: &mut Conn,
    log: &ErrorLog,
    what: &'static str,
    (method, path, body): (Method, &str, Option<&[u8]>),
    check: impl FnOnce(u16, Option<&str>, &[u8]) -> Result<T, Check>,
) -> Result<T, Failure> {
    let answer = match conn.send(method, path, body).await {
        Ok(answer) => answer,
        Err(e) => {
            log.note(|| format!("{what}: {e}"));
            return Err(Failure::Transport);
        }
    };
    let status = answer.status;
    match check(status, answer.location, answer.body) {
        Ok(t) => Ok(t),
        Err(Check::Status) => {
            log.note(|| format!("{what}: unexpected {status}: {}", snippet(answer.body)));
            Err(Failure::Status(status))
        }
        Err(Check::Body(why)) => {
            log.note(|| format!("{what}: {status} but {why}: {}", snippet(answer.body)));
            Err(Failure::Body(status))
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

impl Task {
    /// Virtual user `id`; `conn` (its connection) is not used by
    /// `amqp-echo`.
    pub(crate) fn new(shared: &Shared, conn: Conn, id: usize) -> Task {
        let kind = match shared {
            Shared::Read(s) => Kind::Read(s.clone(), conn),
            Shared::Write(s) => Kind::Write {
                shared: s.clone(),
                n: 0,
                conn,
            },
            Shared::Rideshare(s) => Kind::Rideshare(Box::new(Rider::new(s.clone(), conn))),
            Shared::Echo(c) => Kind::Echo {
                client: c.clone(),
                n: 0,
            },
        };
        Task {
            rng: fastrand::Rng::new(),
            id,
            kind,
        }
    }

    pub(crate) fn op_count(&self) -> usize {
        match self.kind {
            Kind::Read(..) | Kind::Write { .. } | Kind::Echo { .. } => 1,
            Kind::Rideshare(_) => RIDESHARE_OPS.len(),
        }
    }

    /// Sends the next request; answers which operation it was and how it
    /// went.
    pub(crate) async fn step(&mut self, log: &ErrorLog) -> (usize, Result<(), Failure>) {
        match &mut self.kind {
            Kind::Read(s, conn) => {
                let key = self.rng.u64(..s.keys);
                let mut built = String::new();
                let body = match &s.bodies {
                    Some(bodies) => bodies[key as usize],
                    None => {
                        get_body(&mut built, key);
                        &built
                    }
                };
                let req = (Method::Post, s.path.as_str(), Some(body.as_bytes()));
                let outcome =
                    exchange(
                        conn,
                        log,
                        "POST db/read",
                        req,
                        |status, _, body| match status {
                            200 if contains(body, br#""rows":[{"#) => Ok(()),
                            200 => Err(Check::Body("the seeded row is missing")),
                            _ => Err(Check::Status),
                        },
                    )
                    .await;
                (0, outcome)
            }
            Kind::Write { shared, n, conn } => {
                let mut body = String::with_capacity(128);
                let _ = write!(
                    body,
                    r#"{{"op":"insert","table":"users","row":{{"username":"lg-w{}-{}-{}","password":"{PASSWORD}"}}}}"#,
                    shared.prefix, self.id, n
                );
                *n += 1;
                let req = (Method::Post, shared.path.as_str(), Some(body.as_bytes()));
                let outcome = exchange(conn, log, "POST db/write", req, |status, _, _| {
                    if status == 200 {
                        Ok(())
                    } else {
                        Err(Check::Status)
                    }
                })
                .await;
                (0, outcome)
            }
            Kind::Echo { client, n } => {
                let body = echo::body(client.bytes(), self.id, *n);
                *n += 1;
                (0, client.call(&body, log).await)
            }
            Kind::Rideshare(rider) => {
                let op = rider.choose(&mut self.rng);
                let outcome = rider.run(op, &mut self.rng, self.id, log).await;
                (op, outcome)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn prebuilt_read_bodies_name_their_key() {
        let origin = Origin::resolve("http://127.0.0.1:1/base/").await.unwrap();
        let Shared::Read(s) = Shared::new(Workload::Read, &origin, 12, true).unwrap() else {
            panic!("read")
        };
        assert_eq!(s.path, "/base/api/v1/db/read?consistency=eventual");
        let bodies = s.bodies.as_ref().unwrap();
        assert_eq!(bodies.len(), 12);
        assert_eq!(bodies[11], r#"{"op":"get","table":"users","key":"lg-11"}"#);
    }
}
