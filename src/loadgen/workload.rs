//! The workloads: what a virtual user sends next, and which answers count as
//! success (the status codes of the contract, and a glance at the body where
//! it is cheap). `amqp-echo` is set up in [`super::echo`]; its virtual users
//! are here like the others'.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use reqwest::header::{HeaderValue, CONTENT_TYPE, LOCATION};
use reqwest::{Body, Client, Method, Request, Url};

use super::echo::{self, EchoClient};
use super::report::Failure;
use super::{ErrorLog, Workload};
use crate::error::{Error, Result};
use crate::rideshare::{areas, timestamp};

/// The password of every user the load generator makes: 40 hex digits.
pub(super) const PASSWORD: &str = "3d725109c7e7c0bfb9d709836735b56d943d263f";

/// Up to this many `read` bodies are serialized before the run; with more
/// keys each body is built when it is sent.
const MAX_PREBUILT_BODIES: u64 = 1 << 20;

/// A seeding batch stays under this many bytes (the server's default body
/// cap is 64 KiB; a 413 halves the batch anyway).
const SEED_BATCH_BYTES: usize = 56 * 1024;

/// At most this many operations go in one batch (the DB API's limit).
const SEED_BATCH_OPS: u64 = 1000;

/// A virtual user of `rideshare` remembers at most this many users and rides.
const REMEMBERED: usize = 256;

/// Operations of `rideshare`, as indexes into [`RIDESHARE_OPS`].
const ADD_USER: usize = 0;
const CREATE_RIDE: usize = 1;
const LIST_RIDES: usize = 2;
const JOIN_RIDE: usize = 3;
const RIDE_DETAILS: usize = 4;
const RIDESHARE_OPS: &[&str] = &[
    "add_user",
    "create_ride",
    "list_rides",
    "join_ride",
    "ride_details",
];

/// The key of the `i`th seeded row.
fn seeded_key(i: u64) -> String {
    format!("lg-{i}")
}

/// A per-run prefix that keeps the rows of a run apart from every other's.
pub(super) fn run_prefix() -> String {
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    format!("{:x}{:04x}", millis % (1 << 40), fastrand::u16(..))
}

fn url(s: &str) -> Result<Url> {
    Url::parse(s).map_err(|e| Error::bad(format!("{s:?} is not a URL: {e}")))
}

/// What every virtual user of a run shares.
pub(super) enum Shared {
    Read(Arc<ReadShared>),
    Write(Arc<WriteShared>),
    Rideshare(Arc<RideShared>),
    Echo(Arc<EchoClient>),
}

pub(super) struct ReadShared {
    url: Url,
    keys: u64,
    /// `bodies[i]` looks up key `i`; `None` with too many keys to keep.
    bodies: Option<Vec<&'static str>>,
}

pub(super) struct WriteShared {
    url: Url,
    prefix: String,
}

pub(super) struct RideShared {
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
    pub(super) fn new(workload: Workload, target: &str, keys: u64, eventual: bool) -> Result<Self> {
        Ok(match workload {
            Workload::AmqpEcho => {
                return Err(Error::bad("amqp-echo is set up by loadgen::echo::start"))
            }
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
    pub(super) fn op_names(&self) -> &'static [&'static str] {
        match self {
            Shared::Read(_) => &["get"],
            Shared::Write(_) => &["insert"],
            Shared::Rideshare(_) => RIDESHARE_OPS,
            Shared::Echo(_) => &["echo"],
        }
    }
}

/// A ride a virtual user created.
struct Ride {
    creator: usize,
    source: u16,
    destination: u16,
    url: Url,
}

/// The state of one `rideshare` virtual user.
struct Rider {
    shared: Arc<RideShared>,
    /// Users it made; never fewer once two exist (full: replaced at random).
    users: Vec<String>,
    rides: Vec<Ride>,
    made: u64,
}

enum Kind {
    Read(Arc<ReadShared>),
    Write { shared: Arc<WriteShared>, n: u64 },
    Rideshare(Box<Rider>),
    Echo { client: Arc<EchoClient>, n: u64 },
}

/// One virtual user.
pub(super) struct Task {
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

/// The ride id at the end of a `Location` header.
fn ride_id(location: &HeaderValue) -> Option<u64> {
    let s = location.to_str().ok()?;
    let (path, id) = s.rsplit_once('/')?;
    if !path.ends_with("/api/v1/rides") {
        return None;
    }
    id.parse().ok()
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl Task {
    pub(super) fn new(shared: &Shared, client: Client, id: usize) -> Task {
        let kind = match shared {
            Shared::Read(s) => Kind::Read(s.clone()),
            Shared::Write(s) => Kind::Write {
                shared: s.clone(),
                n: 0,
            },
            Shared::Rideshare(s) => Kind::Rideshare(Box::new(Rider {
                shared: s.clone(),
                users: Vec::new(),
                rides: Vec::new(),
                made: 0,
            })),
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

    pub(super) fn op_count(&self) -> usize {
        match self.kind {
            Kind::Read(_) | Kind::Write { .. } | Kind::Echo { .. } => 1,
            Kind::Rideshare(_) => RIDESHARE_OPS.len(),
        }
    }

    /// Sends the next request; answers which operation it was and how it
    /// went.
    pub(super) async fn step(&mut self, log: &ErrorLog) -> (usize, Result<(), Failure>) {
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

impl Rider {
    /// The next operation: two users and a ride first, then the mix.
    fn choose(&self, rng: &mut fastrand::Rng) -> usize {
        if self.users.len() < 2 {
            return ADD_USER;
        }
        if self.rides.is_empty() {
            return CREATE_RIDE;
        }
        match rng.u32(0..100) {
            0..10 => ADD_USER,
            10..30 => CREATE_RIDE,
            30..70 => LIST_RIDES,
            70..85 => JOIN_RIDE,
            _ => RIDE_DETAILS,
        }
    }

    fn remember<T>(list: &mut Vec<T>, item: T, rng: &mut fastrand::Rng) {
        if list.len() < REMEMBERED {
            list.push(item);
        } else {
            let i = rng.usize(..list.len());
            list[i] = item;
        }
    }

    fn random_pair(rng: &mut fastrand::Rng) -> (u16, u16) {
        let areas = areas::count() as u16;
        let source = rng.u16(1..=areas);
        let mut destination = rng.u16(1..areas);
        if destination >= source {
            destination += 1;
        }
        (source, destination)
    }

    async fn run(
        &mut self,
        op: usize,
        client: &Client,
        rng: &mut fastrand::Rng,
        id: usize,
        log: &ErrorLog,
    ) -> Result<(), Failure> {
        let s = self.shared.clone();
        match op {
            ADD_USER => {
                let name = format!("lg-{}-{id}-{}", s.prefix, self.made);
                self.made += 1;
                let body = format!(r#"{{"username":"{name}","password":"{PASSWORD}"}}"#);
                let req = request(Method::PUT, s.users.clone(), Some(body.into()));
                exchange(client, log, "PUT /api/v1/users", req, |status, _, _| {
                    if status == 201 {
                        Ok(())
                    } else {
                        Err(Check::Status)
                    }
                })
                .await?;
                // A replaced user may have created rides: they keep its
                // index, which now names a user who is not their creator, so
                // joins stay valid (merely never by that user).
                Self::remember(&mut self.users, name, rng);
                Ok(())
            }
            CREATE_RIDE => {
                let creator = rng.usize(..self.users.len());
                let (source, destination) = Self::random_pair(rng);
                let at = now_secs() + rng.i64(3600..=365 * 86_400);
                let at = timestamp::format(at).unwrap_or_default();
                let body = format!(
                    r#"{{"created_by":"{}","timestamp":"{at}","source":{source},"destination":{destination}}}"#,
                    self.users[creator]
                );
                let req = request(Method::POST, s.rides.clone(), Some(body.into()));
                let ride_id = exchange(
                    client,
                    log,
                    "POST /api/v1/rides",
                    req,
                    |status, location, _| {
                        if status != 201 {
                            return Err(Check::Status);
                        }
                        location
                            .and_then(ride_id)
                            .ok_or(Check::Body("no Location: /api/v1/rides/{id} header"))
                    },
                )
                .await?;
                let url = Url::parse(&format!("{}/api/v1/rides/{ride_id}", s.base))
                    .map_err(|_| Failure::Body(201))?;
                let ride = Ride {
                    creator,
                    source,
                    destination,
                    url,
                };
                Self::remember(&mut self.rides, ride, rng);
                Ok(())
            }
            LIST_RIDES => {
                // Half the searches name the route of a known ride (some
                // answer 200), half a random one (mostly 204).
                let (source, destination) = if rng.bool() {
                    let ride = &self.rides[rng.usize(..self.rides.len())];
                    (ride.source, ride.destination)
                } else {
                    Self::random_pair(rng)
                };
                let mut url = s.rides.clone();
                let mut query = String::with_capacity(32);
                let _ = write!(query, "source={source}&destination={destination}");
                url.set_query(Some(&query));
                let req = request(Method::GET, url, None);
                exchange(
                    client,
                    log,
                    "GET /api/v1/rides?",
                    req,
                    |status, _, body| match status {
                        200 if body.starts_with(b"[") => Ok(()),
                        200 => Err(Check::Body("not a list")),
                        204 => Ok(()),
                        _ => Err(Check::Status),
                    },
                )
                .await
            }
            JOIN_RIDE => {
                let ride = &self.rides[rng.usize(..self.rides.len())];
                let mut joiner = rng.usize(..self.users.len() - 1);
                if joiner >= ride.creator {
                    joiner += 1;
                }
                let body = format!(r#"{{"username":"{}"}}"#, self.users[joiner]);
                let req = request(Method::POST, ride.url.clone(), Some(body.into()));
                exchange(
                    client,
                    log,
                    "POST /api/v1/rides/{id}",
                    req,
                    |status, _, _| {
                        if status == 200 {
                            Ok(())
                        } else {
                            Err(Check::Status)
                        }
                    },
                )
                .await
            }
            _ => {
                let ride = &self.rides[rng.usize(..self.rides.len())];
                let req = request(Method::GET, ride.url.clone(), None);
                exchange(
                    client,
                    log,
                    "GET /api/v1/rides/{id}",
                    req,
                    |status, _, body| match status {
                        200 if body.starts_with(b"{") => Ok(()),
                        200 => Err(Check::Body("not an object")),
                        _ => Err(Check::Status),
                    },
                )
                .await
            }
        }
    }
}

/// The ops of a seeding batch for rows `from..to`: inserts, or with
/// `replace` a delete before each insert (rows an earlier run left).
fn seed_batch(from: u64, to: u64, replace: bool) -> String {
    let mut body = String::with_capacity((to - from) as usize * 160 + 32);
    body.push_str(r#"{"op":"batch","ops":["#);
    for i in from..to {
        if i > from {
            body.push(',');
        }
        let key = seeded_key(i);
        if replace {
            let _ = write!(body, r#"{{"op":"delete","table":"users","key":"{key}"}},"#);
        }
        // 16 hex digits of the index and 24 fixed ones: 40 in all.
        let _ = write!(
            body,
            r#"{{"op":"insert","table":"users","row":{{"username":"{key}","password":"{i:016x}{}"}}}}"#,
            &PASSWORD[16..]
        );
    }
    body.push_str("]}");
    body
}

/// Seeds rows `lg-0` .. `lg-<keys-1>` of `users` through `db/write`
/// batches. Rows an earlier run left are replaced (a batch answered 409 is
/// sent again as delete-and-insert pairs).
pub(super) async fn seed(client: &Client, target: &str, keys: u64) -> Result<()> {
    let write = url(&format!("{target}/api/v1/db/write"))?;
    let per_row = seed_batch(keys - 1, keys, false).len() as u64;
    let rows = (SEED_BATCH_BYTES as u64 / per_row).clamp(1, SEED_BATCH_OPS);
    // (from, to, replace), popped from the end: lowest rows first.
    let mut work: Vec<(u64, u64, bool)> = (0..keys)
        .step_by(rows as usize)
        .map(|from| (from, (from + rows).min(keys), false))
        .collect();
    work.reverse();
    while let Some((from, to, replace)) = work.pop() {
        let body = seed_batch(from, to, replace);
        let req = request(Method::POST, write.clone(), Some(body.into()));
        let resp = client
            .execute(req)
            .await
            .map_err(|e| Error::Unavailable(format!("seeding: {}", causes(&e))))?;
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        let half = |replace| {
            let mid = from + (to - from) / 2;
            [(mid, to, replace), (from, mid, replace)]
        };
        match status {
            200 => {}
            // Replacing needs two ops a row: halve to stay under the caps.
            409 if !replace => work.extend(half(true)),
            413 if to - from > 1 => work.extend(half(replace)),
            _ => {
                return Err(Error::Unavailable(format!(
                    "seeding rows {from}..{to}: {write} answered {status}: {}",
                    snippet(text.as_bytes())
                )))
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{validate_read, validate_write, ReadOp, Schema, WriteOp};

    #[test]
    fn bodies_are_valid_db_requests() {
        let schema = Schema::rideshare();
        let mut b = String::new();
        get_body(&mut b, 42);
        let op: ReadOp = serde_json::from_str(&b).unwrap();
        validate_read(&schema, &op).unwrap();
        for replace in [false, true] {
            let op: WriteOp = serde_json::from_str(&seed_batch(7, 10, replace)).unwrap();
            validate_write(&schema, &op).unwrap();
            let WriteOp::Batch { ops } = op else {
                panic!("a batch")
            };
            assert_eq!(ops.len(), if replace { 6 } else { 3 });
        }
        let body = seed_batch(u64::MAX - 1, u64::MAX, false);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let pw = v["ops"][0]["row"]["password"].as_str().unwrap();
        assert_eq!(pw.len(), 40);
        assert!(pw.bytes().all(|c| c.is_ascii_hexdigit()));
    }

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

    #[test]
    fn ride_ids_come_from_the_location() {
        let h = |s: &'static str| HeaderValue::from_static(s);
        assert_eq!(ride_id(&h("/api/v1/rides/17")), Some(17));
        assert_eq!(ride_id(&h("http://x:1/api/v1/rides/3")), Some(3));
        assert_eq!(ride_id(&h("/api/v1/rides/")), None);
        assert_eq!(ride_id(&h("/api/v1/users/3")), None);
    }

    #[test]
    fn random_pairs_are_distinct_areas() {
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..10_000 {
            let (s, d) = Rider::random_pair(&mut rng);
            assert_ne!(s, d);
            assert!(areas::is_area(s.into()) && areas::is_area(d.into()));
        }
    }

    #[test]
    fn the_mix_starts_with_two_users_and_a_ride() {
        let Shared::Rideshare(s) =
            Shared::new(Workload::Rideshare, "http://h:1", 0, false).unwrap()
        else {
            panic!("rideshare")
        };
        let mut rider = Rider {
            shared: s,
            users: vec![],
            rides: vec![],
            made: 0,
        };
        let mut rng = fastrand::Rng::with_seed(1);
        assert_eq!(rider.choose(&mut rng), ADD_USER);
        rider.users = vec!["a".into(), "b".into()];
        assert_eq!(rider.choose(&mut rng), CREATE_RIDE);
        rider.rides.push(Ride {
            creator: 0,
            source: 1,
            destination: 2,
            url: url("http://h:1/api/v1/rides/1").unwrap(),
        });
        let mut seen = [0u32; 5];
        for _ in 0..100_000 {
            seen[rider.choose(&mut rng)] += 1;
        }
        let share = |op: usize| f64::from(seen[op]) / 100_000.0;
        assert!((share(ADD_USER) - 0.10).abs() < 0.01);
        assert!((share(CREATE_RIDE) - 0.20).abs() < 0.01);
        assert!((share(LIST_RIDES) - 0.40).abs() < 0.01);
        assert!((share(JOIN_RIDE) - 0.15).abs() < 0.01);
        assert!((share(RIDE_DETAILS) - 0.15).abs() < 0.01);
    }
}
