//! The workloads: what a virtual user sends next, and which answers count as
//! success (the status codes of the contract, and a glance at the body where
//! it is cheap). The RideShare mix is in [`rideshare`], the seeding of
//! `read` in [`seed`]; `amqp-echo` is set up in `echo.rs`, its virtual users
//! are here like the others'.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use reqwest::header::{HeaderValue, CONTENT_TYPE, LOCATION};
use reqwest::{Body, Client, Method, Request, Url};

use crate::args::Workload;
use crate::drive::ErrorLog;
use crate::echo::{self, EchoClient};
use crate::error::{Error, Result};
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

fn url(s: &str) -> Result<Url> {
    Url::parse(s).map_err(|e| Error::usage(format!("{s:?} is not a URL: {e}")))
}

/// What every virtual user of a run shares.
pub(crate) enum Shared {
    Read(Arc<ReadShared>),
    Write(Arc<WriteShared>),
    Rideshare(Arc<RideShared>),
    Echo(Arc<EchoClient>),
}

pub(crate) struct ReadShared {
    url: Url,
    keys: u64,
    /// `bodies[i]` looks up key `i`; `None` with too many keys to keep.
    bodies: Option<Vec<&'static str>>,
}

pub(crate) struct WriteShared {
    url: Url,
    prefix: String,
}

pub(crate) struct RideShared {
    base: String,
    users: Url,
    rides: Url,
    prefix: String,
}

fn get_body(out: &mut String, key: u64) {
    let _ = write!(out, r#"{{"op":"get","table":"users","key":"lg-{key}"}}"#);
}

impl Shared {
    /// The shared state of an HTTP workload (`amqp-echo` comes from
    /// [`echo::start`]).
    pub(crate) fn new(workload: Workload, target: &str, keys: u64, eventual: bool) -> Result<Self> {
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
                    url: url(&format!("{target}/api/v1/db/read{query}"))?,
                    keys,
                    bodies,
                }))
            }
            Workload::Write => Shared::Write(Arc::new(WriteShared {
                url: url(&format!("{target}/api/v1/db/write"))?,
                prefix: run_prefix(),
            })),
            Workload::Rideshare => Shared::Rideshare(Arc::new(RideShared {
                base: target.to_owned(),
                users: url(&format!("{target}/api/v1/users"))?,
                rides: url(&format!("{target}/api/v1/rides"))?,
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
    Read(Arc<ReadShared>),
    Write { shared: Arc<WriteShared>, n: u64 },
    Rideshare(Box<Rider>),
    Echo { client: Arc<EchoClient>, n: u64 },
}

/// One virtual user.
pub(crate) struct Task {
    client: Client,
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

fn request(method: Method, url: Url, body: Option<Body>) -> Request {
    let mut req = Request::new(method, url);
    if let Some(body) = body {
        req.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        *req.body_mut() = Some(body);
    }
    req
}

/// An error with its causes: reqwest's own message leaves out why.
fn causes(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    out
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

/// Sends `req` and checks the answer. A failure is classified and (the
/// first few) logged.
async fn exchange<T>(
    client: &Client,
    log: &ErrorLog,
    what: &'static str,
    req: Request,
    check: impl FnOnce(u16, Option<&HeaderValue>, &[u8]) -> Result<T, Check>,
) -> Result<T, Failure> {
    let resp = match client.execute(req).await {
        Ok(resp) => resp,
        Err(e) => {
            log.note(|| format!("{what}: {}", causes(&e)));
            return Err(Failure::Transport);
        }
    };
    let status = resp.status().as_u16();
    let location = resp.headers().get(LOCATION).cloned();
    let body = match resp.bytes().await {
        Ok(body) => body,
        Err(e) => {
            log.note(|| format!("{what}: answer {status} cut: {}", causes(&e)));
            return Err(Failure::Transport);
        }
    };
    match check(status, location.as_ref(), &body) {
        Ok(t) => Ok(t),
        Err(Check::Status) => {
            log.note(|| format!("{what}: unexpected {status}: {}", snippet(&body)));
            Err(Failure::Status(status))
        }
        Err(Check::Body(why)) => {
            log.note(|| format!("{what}: {status} but {why}: {}", snippet(&body)));
            Err(Failure::Body(status))
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

impl Task {
    pub(crate) fn new(shared: &Shared, client: Client, id: usize) -> Task {
        let kind = match shared {
            Shared::Read(s) => Kind::Read(s.clone()),
            Shared::Write(s) => Kind::Write {
                shared: s.clone(),
                n: 0,
            },
            Shared::Rideshare(s) => Kind::Rideshare(Box::new(Rider::new(s.clone()))),
            Shared::Echo(c) => Kind::Echo {
                client: c.clone(),
                n: 0,
            },
        };
        Task {
            client,
            rng: fastrand::Rng::new(),
            id,
            kind,
        }
    }

    pub(crate) fn op_count(&self) -> usize {
        match self.kind {
            Kind::Read(_) | Kind::Write { .. } | Kind::Echo { .. } => 1,
            Kind::Rideshare(_) => RIDESHARE_OPS.len(),
        }
    }

    /// Sends the next request; answers which operation it was and how it
    /// went.
    pub(crate) async fn step(&mut self, log: &ErrorLog) -> (usize, Result<(), Failure>) {
        match &mut self.kind {
            Kind::Read(s) => {
                let key = self.rng.u64(..s.keys);
                let body = match &s.bodies {
                    Some(bodies) => Body::from(bodies[key as usize]),
                    None => {
                        let mut b = String::with_capacity(48);
                        get_body(&mut b, key);
                        Body::from(b)
                    }
                };
                let req = request(Method::POST, s.url.clone(), Some(body));
                let outcome = exchange(
                    &self.client,
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
            Kind::Write { shared, n } => {
                let mut body = String::with_capacity(128);
                let _ = write!(
                    body,
                    r#"{{"op":"insert","table":"users","row":{{"username":"lg-w{}-{}-{}","password":"{PASSWORD}"}}}}"#,
                    shared.prefix, self.id, n
                );
                *n += 1;
                let req = request(Method::POST, shared.url.clone(), Some(body.into()));
                let outcome = exchange(&self.client, log, "POST db/write", req, |status, _, _| {
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
                let outcome = rider
                    .run(op, &self.client, &mut self.rng, self.id, log)
                    .await;
                (op, outcome)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prebuilt_read_bodies_name_their_key() {
        let Shared::Read(s) = Shared::new(Workload::Read, "http://h:1", 12, true).unwrap() else {
            panic!("read")
        };
        assert_eq!(
            s.url.as_str(),
            "http://h:1/api/v1/db/read?consistency=eventual"
        );
        let bodies = s.bodies.as_ref().unwrap();
        assert_eq!(bodies.len(), 12);
        assert_eq!(bodies[11], r#"{"op":"get","table":"users","key":"lg-11"}"#);
    }
}
