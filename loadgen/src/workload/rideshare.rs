//! The `rideshare` workload: each virtual user first adds two users and
//! creates a ride, then runs the mix of RideShare calls through the gateway,
//! remembering a bounded number of the users and rides it made.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use super::{exchange, Check, RideShared, PASSWORD};
use crate::drive::ErrorLog;
use crate::http1::{Conn, Method};
use crate::report::Failure;
use dbaas::rideshare::{areas, timestamp};

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
    /// Its path: `/api/v1/rides/{id}`.
    path: String,
}

/// The state of one `rideshare` virtual user.
pub(super) struct Rider {
    shared: Arc<RideShared>,
    conn: Conn,
    /// Users it made; never fewer once two exist (full: replaced at random).
    users: Vec<String>,
    rides: Vec<Ride>,
    made: u64,
}

/// The ride id at the end of a `Location` header.
fn ride_id(location: &str) -> Option<u64> {
    let (path, id) = location.rsplit_once('/')?;
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
    pub(super) fn new(shared: Arc<RideShared>, conn: Conn) -> Rider {
        Rider {
            shared,
            conn,
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
        rng: &mut fastrand::Rng,
        id: usize,
        log: &ErrorLog,
    ) -> Result<(), Failure> {
        let s = self.shared.clone();
        let conn = &mut self.conn;
        match op {
            ADD_USER => {
                let name = format!("lg-{}-{id}-{}", s.prefix, self.made);
                self.made += 1;
                let body = format!(r#"{{"username":"{name}","password":"{PASSWORD}"}}"#);
                let req = (Method::Put, s.users.as_str(), Some(body.as_bytes()));
                exchange(conn, log, "PUT /api/v1/users", req, |status, _, _| {
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
                let req = (Method::Post, s.rides.as_str(), Some(body.as_bytes()));
                let ride_id = exchange(
                    conn,
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
                let ride = Ride {
                    creator,
                    source,
                    destination,
                    path: s.origin.path(&format!("/api/v1/rides/{ride_id}")),
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
                let mut path = String::with_capacity(s.rides.len() + 32);
                let _ = write!(
                    path,
                    "{}?source={source}&destination={destination}",
                    s.rides
                );
                exchange(
                    conn,
                    log,
                    "GET /api/v1/rides?",
                    (Method::Get, &path, None),
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
                let req = (Method::Post, ride.path.as_str(), Some(body.as_bytes()));
                exchange(conn, log, "POST /api/v1/rides/{id}", req, |status, _, _| {
                    if status == 200 {
                        Ok(())
                    } else {
                        Err(Check::Status)
                    }
                })
                .await
            }
            _ => {
                let ride = &self.rides[rng.usize(..self.rides.len())];
                let req = (Method::Get, ride.path.as_str(), None);
                exchange(
                    conn,
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
    use super::super::{Shared, Workload};
    use super::*;
    use crate::http1::Origin;
    use std::time::Duration;

    #[test]
    fn ride_ids_come_from_the_location() {
        assert_eq!(ride_id("/api/v1/rides/17"), Some(17));
        assert_eq!(ride_id("http://x:1/api/v1/rides/3"), Some(3));
        assert_eq!(ride_id("/api/v1/rides/"), None);
        assert_eq!(ride_id("/api/v1/users/3"), None);
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

    #[tokio::test]
    async fn the_mix_starts_with_two_users_and_a_ride() {
        let origin = Origin::resolve("http://127.0.0.1:1").await.unwrap();
        let Shared::Rideshare(s) = Shared::new(Workload::Rideshare, &origin, 0, false).unwrap()
        else {
            panic!("rideshare")
        };
        let mut rider = Rider {
            shared: s,
            conn: Conn::new(origin, Duration::from_secs(1)),
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
            path: "/api/v1/rides/1".into(),
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
