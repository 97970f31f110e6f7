//! The `rideshare` workload: each virtual user first adds two users and
//! creates a ride, then runs the mix of RideShare calls through the gateway,
//! remembering a bounded number of the users and rides it made.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use dbaas::rideshare::{areas, timestamp};
use reqwest::header::HeaderValue;
use reqwest::{Client, Method, Url};

use super::{exchange, request, Check, RideShared, PASSWORD};
use crate::drive::ErrorLog;
use crate::report::Failure;

/// A virtual user of `rideshare` remembers at most this many users and rides.
const REMEMBERED: usize = 256;

/// Operations of `rideshare`, as indexes into [`RIDESHARE_OPS`].
const ADD_USER: usize = 0;
const CREATE_RIDE: usize = 1;
const LIST_RIDES: usize = 2;
const JOIN_RIDE: usize = 3;
const RIDE_DETAILS: usize = 4;
pub(super) const RIDESHARE_OPS: &[&str] = &[
    "add_user",
    "create_ride",
    "list_rides",
    "join_ride",
    "ride_details",
];

/// A ride a virtual user created.
struct Ride {
    creator: usize,
    source: u16,
    destination: u16,
    url: Url,
}

/// The state of one `rideshare` virtual user.
pub(super) struct Rider {
    shared: Arc<RideShared>,
    /// Users it made; never fewer once two exist (full: replaced at random).
    users: Vec<String>,
    rides: Vec<Ride>,
    made: u64,
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

impl Rider {
    pub(super) fn new(shared: Arc<RideShared>) -> Rider {
        Rider {
            shared,
            users: Vec::new(),
            rides: Vec::new(),
            made: 0,
        }
    }

    /// The next operation: two users and a ride first, then the mix.
    pub(super) fn choose(&self, rng: &mut fastrand::Rng) -> usize {
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

    pub(super) async fn run(
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

#[cfg(test)]
mod tests {
    use super::super::{url, Shared, Workload};
    use super::*;

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
