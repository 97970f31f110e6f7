//! The RideShare HTTP contract (`RIDESHARE_API.md`), row by row and
//! failure by failure, held against the real system: each test starts its
//! own `dbaas up` (own ports, own data dir) and talks to it through the
//! gateway, and to the services' own addresses for `_count` and `db/clear`.
//!
//! The same scripts run against `dbaas up --amqp --zk` on a real RabbitMQ
//! and ZooKeeper (`up_amqp::*`, every worker a child process), and
//! in-process (`in_process::*`): the services
//! and the real embedded DBaaS on threads of the test itself, with no
//! child process, which keeps them quick to iterate on and to debug.
//! Behaviours `up` cannot show (an upstream or the DBaaS being down) are
//! tested in-process only, at the end.
//!
//! Every refusal is checked twice: the status with an `{"error"}` body,
//! and that the data did not change.

mod common;
mod suite;

use common::api::{chunked_status, encode_segment, Api, BODY_LIMIT, FUTURE, PASSWORD, PAST};
use common::inproc::{Servers, Stack};
use common::{closed_port_url, Http, System, Urls};
use serde_json::{json, Value as Json};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Declares each script once, as a test against `dbaas up` and as one
/// against the in-process stack.
macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        mod up {
            $(
                #[tokio::test]
                async fn $name() {
                    let system = crate::System::start();
                    super::$name(&system.urls).await;
                }
            )*
        }
        mod up_amqp {
            $(
                #[tokio::test]
                async fn $name() {
                    let Some(base) = crate::suite::amqp_url() else { return };
                    let Some(zk) = crate::suite::fresh_zk(crate::suite::ZK_SESSION) else {
                        return;
                    };
                    let (_, url) = crate::suite::fresh_vhost(&base);
                    let system = crate::System::start_with(&[
                        "--amqp", &url, "--zk", &zk.hosts, "--zk-root", &zk.root,
                    ]);
                    super::$name(&system.urls).await;
                }
            )*
        }
        mod up_docker {
            /// Every script in turn against one `dbaas up --runtime docker`
            /// (workers in containers), the data and the request counts
            /// cleared between them; then a clean stop leaves no container.
            #[tokio::test]
            async fn every_script_with_worker_containers() {
                let Some(system) = crate::docker_system().await else { return };
                $(
                    crate::fresh_state(&system.urls).await;
                    super::$name(&system.urls).await;
                )*
                crate::stop_docker_system(system).await;
            }
        }
        mod up_swarm {
            /// Every script in turn against one `dbaas up --runtime swarm`
            /// (workers as services of a single-node swarm), the data and
            /// the request counts cleared between them; then a clean stop
            /// leaves no service.
            #[tokio::test]
            async fn every_script_with_worker_services() {
                let Some(system) = crate::swarm_system().await else { return };
                $(
                    crate::fresh_state(&system.urls).await;
                    super::$name(&system.urls).await;
                )*
                crate::stop_swarm_system(system).await;
            }
        }
        mod in_process {
            $(
                #[tokio::test]
                async fn $name() {
                    let stack = crate::Stack::start(crate::BODY_LIMIT);
                    super::$name(&stack.urls).await;
                }
            )*
        }
    };
}

contract!(
    users_are_added_and_listed_sorted,
    adding_a_user_refuses_bad_input,
    users_are_deleted,
    deleting_a_user_deletes_their_rides_and_seats,
    hostile_and_unicode_names_are_plain_data,
    bodies_over_the_cap_are_413,
    rides_are_created_and_shown,
    creating_a_ride_refuses_bad_input,
    ride_ids_increase_from_1_and_restart_after_clear,
    a_new_user_can_create_a_ride_at_once,
    upcoming_rides_are_listed_earliest_first,
    searching_rides_refuses_bad_parameters,
    showing_a_ride_refuses_bad_ids,
    riders_join_in_order_once,
    joining_refuses_bad_input_user_first,
    rides_are_deleted,
    rides_are_counted,
    db_clear_empties_everything_on_either_service,
    users_service_counts_its_requests,
    rides_service_counts_its_requests,
    unsupported_methods_are_405_with_empty_object,
    unknown_routes_are_404,
    db_api_reads_writes_and_lists_workers,
    db_api_refuses_bad_input_and_changes_nothing,
    db_api_conditional_writes_answer_412_and_write_nothing,
    db_api_writes_named_by_an_idempotency_key_apply_once,
    the_services_db_client_moves_on_to_an_orchestrator_that_answers,
    a_gateway_moves_on_to_a_service_it_can_connect_to,
    rideshare_requests_named_by_an_idempotency_key_write_once,
    no_ride_names_a_user_deleted_while_joining_or_creating,
    crash_apis_kill_and_the_cluster_elects_and_replaces,
    metrics_show_every_worker_and_the_batches_in_flight,
    status_prints_every_worker,
);

/// A body that is not a valid new user, each for its own reason.
const BAD_USER_BODIES: &[&str] = &[
    "",
    "not json",
    "{",
    "[]",
    "null",
    r#""newbie""#,
    r#"{}"#,
    r#"{"username":"newbie"}"#,
    r#"{"password":"3d725109c7e7c0bfb9d709836735b56d943d263f"}"#,
    r#"{"username":5,"password":"3d725109c7e7c0bfb9d709836735b56d943d263f"}"#,
    r#"{"username":null,"password":"3d725109c7e7c0bfb9d709836735b56d943d263f"}"#,
    r#"{"username":["a"],"password":"3d725109c7e7c0bfb9d709836735b56d943d263f"}"#,
    r#"{"username":"newbie","password":1234}"#,
    r#"{"username":"newbie","password":"3d725109c7e7c0bfb9d709836735b56d943d263f","admin":true}"#,
    r#"{"username":"","password":"3d725109c7e7c0bfb9d709836735b56d943d263f"}"#,
    r#"{"username":"newbie","password":""}"#,
    r#"{"username":"newbie","password":"3d725109c7e7c0bfb9d709836735b56d943d263"}"#,
    r#"{"username":"newbie","password":"3d725109c7e7c0bfb9d709836735b56d943d263f0"}"#,
    r#"{"username":"newbie","password":"zd725109c7e7c0bfb9d709836735b56d943d263f"}"#,
    r#"{"username":"newbie","password":"3d725109c7e7c0bfb9d709836735b56d943d263f "}"#,
    r#"{"username":"newbie","password":"3d725109c7e7c0bfb9d709836735b56d943d263f"} trailing"#,
];

async fn users_are_added_and_listed_sorted(urls: &Urls) {
    let api = Api::new(urls);
    api.gw.get("/api/v1/users").await.assert_no_content();
    for name in ["bob", "Ämil", "alice", "Zed", "alice2"] {
        api.add_user(name).await;
    }
    // Code point order: upper case before lower case before non-ASCII.
    assert_eq!(
        api.user_list().await,
        ["Zed", "alice", "alice2", "bob", "Ämil"]
    );
    // Lower, upper and mixed case passwords are all 40 hex digits.
    for (name, password) in [
        ("l", "abcdef0123abcdef0123abcdef0123abcdef0123"),
        ("u", "ABCDEF0123ABCDEF0123ABCDEF0123ABCDEF0123"),
    ] {
        let body = json!({ "username": name, "password": password });
        let r = api.gw.json("PUT", "/api/v1/users", body).await;
        r.assert_json(201, json!({}));
    }
}

async fn adding_a_user_refuses_bad_input(urls: &Urls) {
    let api = Api::new(urls);
    api.add_user("alice").await;
    for body in BAD_USER_BODIES {
        let r = api.gw.raw("PUT", "/api/v1/users", body).await;
        r.assert_error(400);
    }
    // Taken, case-sensitively: "Alice" is another user.
    let again = json!({ "username": "alice", "password": PASSWORD });
    api.gw
        .json("PUT", "/api/v1/users", again)
        .await
        .assert_error(400);
    assert_eq!(api.user_list().await, ["alice"]);
    api.add_user("Alice").await;
    assert_eq!(api.user_list().await, ["Alice", "alice"]);
}

async fn users_are_deleted(urls: &Urls) {
    let api = Api::new(urls);
    api.add_user("alice").await;
    api.add_user("bob").await;
    let r = api.gw.delete("/api/v1/users/alice").await;
    r.assert_json(200, json!({}));
    assert_eq!(api.user_list().await, ["bob"]);
    api.gw.delete("/api/v1/users/alice").await.assert_error(400);
    api.gw
        .delete("/api/v1/users/nobody")
        .await
        .assert_error(400);
    api.gw.delete("/api/v1/users/Bob").await.assert_error(400);
    assert_eq!(api.user_list().await, ["bob"]);
    api.gw
        .delete("/api/v1/users/bob")
        .await
        .assert_json(200, json!({}));
    api.gw.get("/api/v1/users").await.assert_no_content();
    // The name is free again.
    api.add_user("alice").await;
}

async fn deleting_a_user_deletes_their_rides_and_seats(urls: &Urls) {
    let api = Api::new(urls);
    for name in ["alice", "bob", "carol"] {
        api.add_user(name).await;
    }
    let a1 = api.add_ride("alice", FUTURE, 1, 2).await;
    let a2 = api.add_ride("alice", PAST, 3, 4).await;
    let b1 = api.add_ride("bob", FUTURE, 1, 2).await;
    api.join(b1, "alice").await.assert_json(200, json!({}));
    api.join(b1, "carol").await.assert_json(200, json!({}));
    api.join(a1, "carol").await.assert_json(200, json!({}));

    api.gw
        .delete("/api/v1/users/alice")
        .await
        .assert_json(200, json!({}));
    assert_eq!(api.user_list().await, ["bob", "carol"]);
    assert_eq!(api.ride_count().await, 1);
    for gone in [a1, a2] {
        let r = api.gw.get(&format!("/api/v1/rides/{gone}")).await;
        r.assert_no_content();
    }
    assert_eq!(api.ride(b1).await["users"], json!(["carol"]));
    let r = api.gw.get("/api/v1/rides?source=1&destination=2").await;
    assert_eq!(
        r.json(),
        json!([{"rideId": b1, "username": "bob", "timestamp": FUTURE}])
    );
}

async fn hostile_and_unicode_names_are_plain_data(urls: &Urls) {
    let api = Api::new(urls);
    let names = [
        "a'; DROP TABLE users;--",
        "\"); DELETE FROM rides; --",
        "Ünïcødé 用户 🚗",
        "a/b",
        "a%2Fb",
        "?x=1&y#z",
        " ",
        "...",
        "tab\there",
        "nul\u{0}byte",
        "{\"$ne\": null}",
    ];
    for name in names {
        api.add_user(name).await;
    }
    let mut want: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    want.sort();
    assert_eq!(api.user_list().await, want);
    // Each name works as a creator, a rider and a path segment.
    let id = api.add_ride(names[0], FUTURE, 7, 8).await;
    api.join(id, names[2]).await.assert_json(200, json!({}));
    assert_eq!(api.ride(id).await["created_by"], json!(names[0]));
    assert_eq!(api.ride(id).await["users"], json!([names[2]]));
    for name in names {
        let r = api
            .gw
            .delete(&format!("/api/v1/users/{}", encode_segment(name)))
            .await;
        r.assert_json(200, json!({}));
    }
    api.gw.get("/api/v1/users").await.assert_no_content();
    assert_eq!(api.ride_count().await, 0);

    // Very long strings under the cap: accepted, or a clear 400; never 500.
    let long = "x".repeat(BODY_LIMIT - 200);
    let body = json!({ "username": long, "password": PASSWORD });
    let r = api.gw.json("PUT", "/api/v1/users", body).await;
    match r.status {
        201 => assert_eq!(api.user_list().await, std::slice::from_ref(&long)),
        _ => {
            r.assert_error(400);
            api.gw.get("/api/v1/users").await.assert_no_content();
        }
    }
    let body = json!({ "username": "p", "password": "a".repeat(BODY_LIMIT - 200) });
    api.gw
        .json("PUT", "/api/v1/users", body)
        .await
        .assert_error(400);
    let ride = json!({"created_by": long, "timestamp": FUTURE, "source": 1, "destination": 2});
    let r = api.post_ride(ride).await;
    assert_ne!(r.status / 100, 5, "{}", r.text());
}

async fn bodies_over_the_cap_are_413(urls: &Urls) {
    let api = Api::new(urls);
    api.add_user("alice").await;
    let id = api.add_ride("alice", FUTURE, 1, 2).await;
    let padding = " ".repeat(BODY_LIMIT);
    let user = format!(r#"{{"username":"big","password":"{PASSWORD}"}}{padding}"#);
    let ride = format!(
        r#"{{"created_by":"alice","timestamp":"{FUTURE}","source":1,"destination":2}}{padding}"#
    );
    let join = format!(r#"{{"username":"alice"}}{padding}"#);
    for (service, path, body) in [
        (&api.gw, "/api/v1/users".to_owned(), &user),
        (&api.users, "/api/v1/users".to_owned(), &user),
        (&api.gw, "/api/v1/rides".to_owned(), &ride),
        (&api.rides, "/api/v1/rides".to_owned(), &ride),
        (&api.gw, format!("/api/v1/rides/{id}"), &join),
    ] {
        let method = if path == "/api/v1/users" {
            "PUT"
        } else {
            "POST"
        };
        service.raw(method, &path, body).await.assert_error(413);
    }
    // Without a Content-Length: the cap holds while the body streams in.
    for base in [&urls.gateway, &urls.users] {
        assert_eq!(
            chunked_status(base, "PUT", "/api/v1/users", BODY_LIMIT + 1),
            413
        );
    }
    assert_eq!(
        chunked_status(&urls.gateway, "POST", "/api/v1/rides", 4 * BODY_LIMIT),
        413
    );
    assert_eq!(api.user_list().await, ["alice"]);
    assert_eq!(api.ride_count().await, 1);
    assert_eq!(api.ride(id).await["users"], json!([]));
}

async fn rides_are_created_and_shown(urls: &Urls) {
    let api = Api::new(urls);
    api.add_user("alice").await;
    let at = "29-02-2096:07-08-23";
    let r = api
        .post_ride(json!({"created_by": "alice", "timestamp": at, "source": 1, "destination": 198}))
        .await;
    r.assert_json(201, json!({}));
    assert_eq!(r.header("location"), Some("/api/v1/rides/1"));
    let want = json!({
        "rideId": 1, "created_by": "alice", "users": [], "timestamp": at,
        "source": 1, "destination": 198
    });
    api.gw.get("/api/v1/rides/1").await.assert_json(200, want);
    // A time in the past is accepted (it is simply never upcoming).
    assert_eq!(api.add_ride("alice", PAST, 198, 1).await, 2);
    assert_eq!(api.ride(2).await["timestamp"], json!(PAST));
}

async fn creating_a_ride_refuses_bad_input(urls: &Urls) {
    let api = Api::new(urls);
    api.add_user("alice").await;
    api.add_ride("alice", FUTURE, 1, 2).await;
    let ok =
        r#"{"created_by":"alice","timestamp":"01-01-2099:00-00-00","source":1,"destination":2}"#;
    let bad: Vec<String> = [
        ("\"alice\"", "\"ghost\""),
        ("\"alice\"", "\"\""),
        ("\"alice\"", "\"a'; DROP TABLE rides;--\""),
        ("\"alice\"", "null"),
        ("\"alice\"", "5"),
        ("\"01-01-2099:00-00-00\"", "\"31-02-2099:00-00-00\""),
        ("\"01-01-2099:00-00-00\"", "\"29-02-2099:00-00-00\""),
        ("\"01-01-2099:00-00-00\"", "\"01-01-2099:00-00-24\""),
        ("\"01-01-2099:00-00-00\"", "\"01-01-2099:00-60-00\""),
        ("\"01-01-2099:00-00-00\"", "\"01-01-2099:60-00-00\""),
        ("\"01-01-2099:00-00-00\"", "\"2099-01-01 00:00:00\""),
        ("\"01-01-2099:00-00-00\"", "\"1-1-2099:0-0-0\""),
        ("\"01-01-2099:00-00-00\"", "\"01-01-2099:00-00-00 \""),
        ("\"01-01-2099:00-00-00\"", "\"٠١-01-2099:00-00-00\""),
        ("\"01-01-2099:00-00-00\"", "\"\""),
        ("\"01-01-2099:00-00-00\"", "4102444800"),
        ("\"source\":1", "\"source\":0"),
        ("\"source\":1", "\"source\":199"),
        ("\"source\":1", "\"source\":-1"),
        ("\"source\":1", "\"source\":\"1\""),
        ("\"source\":1", "\"source\":1.0"),
        ("\"source\":1", "\"source\":1e0"),
        ("\"source\":1", "\"source\":true"),
        ("\"source\":1", "\"source\":null"),
        ("\"source\":1", "\"source\":[1]"),
        ("\"source\":1", "\"source\":99999999999999999999"),
        ("\"source\":1", "\"source\":-99999999999999999999"),
        ("\"source\":1", "\"source\":2"),
        ("\"destination\":2", "\"destination\":199"),
        ("\"destination\":2", "\"destination\":\"2\""),
        ("\"destination\":2", "\"destination\":2.5"),
        ("\"destination\":2", "\"destination\":1"),
        (",\"destination\":2", ""),
        ("\"source\":1,", ""),
        ("\"created_by\":\"alice\",", ""),
        ("\"timestamp\":\"01-01-2099:00-00-00\",", ""),
        ("\"destination\":2", "\"destination\":2,\"users\":[]"),
        ("\"destination\":2", "\"destination\":2,\"rideId\":7"),
    ]
    .iter()
    .map(|(from, to)| {
        assert!(ok.contains(from), "{from}");
        ok.replacen(from, to, 1)
    })
    .chain(["", "{}", "[]", "not json", "{\"created_by\":"].map(String::from))
    .chain([ok.replacen("\"source\":1", "\"source\":1,\"source\":3", 1)])
    .collect();
    for body in &bad {
        let r = api.gw.raw("POST", "/api/v1/rides", body).await;
        assert!(r.header("location").is_none(), "{body}");
        r.assert_error(400);
    }
    assert_eq!(api.ride_count().await, 1);
    assert_eq!(
        api.add_ride("alice", FUTURE, 1, 2).await,
        2,
        "no id was used up"
    );
}

async fn ride_ids_increase_from_1_and_restart_after_clear(urls: &Urls) {
    let api = Api::new(urls);
    api.add_user("alice").await;
    for want in 1..=3 {
        assert_eq!(api.add_ride("alice", FUTURE, 1, 2).await, want);
    }
    api.gw
        .delete("/api/v1/rides/3")
        .await
        .assert_json(200, json!({}));
    api.gw
        .delete("/api/v1/rides/2")
        .await
        .assert_json(200, json!({}));
    // Never reused after a delete.
    assert_eq!(api.add_ride("alice", FUTURE, 1, 2).await, 4);
    api.gw
        .raw("POST", "/api/v1/db/clear", "")
        .await
        .assert_json(200, json!({}));
    api.add_user("alice").await;
    assert_eq!(api.add_ride("alice", FUTURE, 1, 2).await, 1);
    assert_eq!(api.add_ride("alice", FUTURE, 1, 2).await, 2);
}

async fn a_new_user_can_create_a_ride_at_once(urls: &Urls) {
    let api = Api::new(urls);
    for i in 1..=50 {
        let name = format!("user{i}");
        api.add_user(&name).await;
        assert_eq!(
            api.add_ride(&name, FUTURE, 1 + i % 198, 198 - i % 197)
                .await,
            i
        );
    }
    assert_eq!(api.ride_count().await, 50);
}

async fn upcoming_rides_are_listed_earliest_first(urls: &Urls) {
    let api = Api::new(urls);
    api.add_user("alice").await;
    api.add_user("bob").await;
    let late = api.add_ride("alice", "01-01-2099:00-00-12", 1, 2).await;
    let early = api.add_ride("bob", "31-12-2098:59-59-23", 1, 2).await;
    api.add_ride("alice", PAST, 1, 2).await;
    let back = api.add_ride("alice", FUTURE, 2, 1).await;
    api.add_ride("alice", FUTURE, 1, 3).await;

    let want = json!([
        {"rideId": early, "username": "bob", "timestamp": "31-12-2098:59-59-23"},
        {"rideId": late, "username": "alice", "timestamp": "01-01-2099:00-00-12"},
    ]);
    for query in [
        "source=1&destination=2",
        "destination=2&source=1",
        "source=1&destination=2&unknown=x&page=2",
        "source=%31&destination=2",
        "source=001&destination=02",
    ] {
        let r = api.gw.get(&format!("/api/v1/rides?{query}")).await;
        r.assert_json(200, want.clone());
    }
    let r = api.gw.get("/api/v1/rides?source=2&destination=1").await;
    r.assert_json(
        200,
        json!([{"rideId": back, "username": "alice", "timestamp": FUTURE}]),
    );
    api.gw
        .get("/api/v1/rides?source=5&destination=6")
        .await
        .assert_no_content();
    api.gw
        .get("/api/v1/rides?source=3&destination=3")
        .await
        .assert_no_content();
    // Only the past ride goes from 1 to 2 once the upcoming ones are gone.
    api.gw
        .delete(&format!("/api/v1/rides/{late}"))
        .await
        .assert_json(200, json!({}));
    api.gw
        .delete(&format!("/api/v1/rides/{early}"))
        .await
        .assert_json(200, json!({}));
    api.gw
        .get("/api/v1/rides?source=1&destination=2")
        .await
        .assert_no_content();
}

async fn searching_rides_refuses_bad_parameters(urls: &Urls) {
    let api = Api::new(urls);
    api.add_user("alice").await;
    api.add_ride("alice", FUTURE, 1, 2).await;
    for query in [
        "",
        "?",
        "?source=1",
        "?destination=2",
        "?source=&destination=2",
        "?source=1&destination=",
        "?source=a&destination=2",
        "?source=1.0&destination=2",
        "?source=1e0&destination=2",
        "?source=+1&destination=2",
        "?source=%2B1&destination=2",
        "?source=-1&destination=2",
        "?source=0&destination=2",
        "?source=199&destination=2",
        "?source=1&destination=199",
        "?source=99999999999999999999&destination=2",
        "?source=%201&destination=2",
        "?source=0x1&destination=2",
        "?source=%D9%A1&destination=2",
        "?source=true&destination=2",
        "?SOURCE=1&DESTINATION=2",
    ] {
        let r = api.gw.get(&format!("/api/v1/rides{query}")).await;
        assert_eq!(r.status, 400, "{query}: {}", r.text());
        r.assert_error(400);
    }
}

async fn showing_a_ride_refuses_bad_ids(urls: &Urls) {
    let api = Api::new(urls);
    for missing in ["999", "0", "9223372036854775807", "00001"] {
        let r = api.gw.get(&format!("/api/v1/rides/{missing}")).await;
        r.assert_no_content();
    }
    for bad in [
        "abc",
        "-1",
        "%2B1",
        "1.0",
        "1e3",
        "0x1",
        "9223372036854775808",
        "99999999999999999999",
        "%201",
        "%D9%A1",
    ] {
        let path = format!("/api/v1/rides/{bad}");
        api.gw.get(&path).await.assert_error(400);
        api.gw.delete(&path).await.assert_error(400);
        let join = json!({"username": "alice"});
        api.gw.json("POST", &path, join).await.assert_error(400);
    }
}

async fn riders_join_in_order_once(urls: &Urls) {
    let api = Api::new(urls);
    for name in ["alice", "bob", "carol"] {
        api.add_user(name).await;
    }
    let id = api.add_ride("alice", FUTURE, 1, 2).await;
    api.join(id, "carol").await.assert_json(200, json!({}));
    api.join(id, "bob").await.assert_json(200, json!({}));
    // Joining twice is a no-op, still 200.
    api.join(id, "carol").await.assert_json(200, json!({}));
    let want = json!({
        "rideId": id, "created_by": "alice", "users": ["carol", "bob"],
        "timestamp": FUTURE, "source": 1, "destination": 2
    });
    api.gw
        .get(&format!("/api/v1/rides/{id}"))
        .await
        .assert_json(200, want);
}

async fn joining_refuses_bad_input_user_first(urls: &Urls) {
    let api = Api::new(urls);
    api.add_user("alice").await;
    api.add_user("bob").await;
    let id = api.add_ride("alice", FUTURE, 1, 2).await;
    let path = format!("/api/v1/rides/{id}");
    // The creator joining their own ride; a user who does not exist.
    api.join(id, "alice").await.assert_error(400);
    api.join(id, "ghost").await.assert_error(400);
    api.join(id, "").await.assert_error(400);
    for body in [
        "",
        "not json",
        "{}",
        "[]",
        r#"{"username":5}"#,
        r#"{"username":null}"#,
        r#"{"username":["bob"]}"#,
        r#"{"user":"bob"}"#,
        r#"{"username":"bob","extra":1}"#,
    ] {
        api.gw.raw("POST", &path, body).await.assert_error(400);
    }
    assert_eq!(api.ride(id).await["users"], json!([]));
    // No such ride: 204, but only once the body and the user are good.
    api.join(999, "bob").await.assert_no_content();
    api.join(999, "ghost").await.assert_error(400);
    api.gw
        .raw("POST", "/api/v1/rides/999", "{}")
        .await
        .assert_error(400);
    api.gw.get("/api/v1/rides/999").await.assert_no_content();
}

async fn rides_are_deleted(urls: &Urls) {
    let api = Api::new(urls);
    api.add_user("alice").await;
    let keep = api.add_ride("alice", FUTURE, 1, 2).await;
    let gone = api.add_ride("alice", FUTURE, 1, 2).await;
    let path = format!("/api/v1/rides/{gone}");
    api.gw.delete(&path).await.assert_json(200, json!({}));
    api.gw.get(&path).await.assert_no_content();
    api.gw.delete(&path).await.assert_error(400);
    api.gw.delete("/api/v1/rides/999").await.assert_error(400);
    assert_eq!(api.ride_count().await, 1);
    assert_eq!(api.ride(keep).await["rideId"], json!(keep));
    // Its creator is untouched.
    assert_eq!(api.user_list().await, ["alice"]);
}

async fn rides_are_counted(urls: &Urls) {
    let api = Api::new(urls);
    api.gw
        .get("/api/v1/rides/count")
        .await
        .assert_json(200, json!([0]));
    api.add_user("alice").await;
    let first = api.add_ride("alice", FUTURE, 1, 2).await;
    api.add_ride("alice", PAST, 1, 2).await;
    api.gw
        .get("/api/v1/rides/count")
        .await
        .assert_json(200, json!([2]));
    api.gw
        .delete(&format!("/api/v1/rides/{first}"))
        .await
        .assert_json(200, json!({}));
    assert_eq!(api.ride_count().await, 1);
    for method in ["POST", "PUT", "DELETE", "PATCH"] {
        let r = api.gw.raw(method, "/api/v1/rides/count", "{}").await;
        r.assert_json(405, json!({}));
    }
    assert_eq!(api.ride_count().await, 1);
}

async fn db_clear_empties_everything_on_either_service(urls: &Urls) {
    let api = Api::new(urls);
    for clear in [&api.gw, &api.users, &api.rides] {
        api.add_user("alice").await;
        let id = api.add_ride("alice", FUTURE, 1, 2).await;
        api.add_user("bob").await;
        api.join(id, "bob").await.assert_json(200, json!({}));
        clear
            .send("POST", "/api/v1/db/clear", None)
            .await
            .assert_json(200, json!({}));
        api.gw.get("/api/v1/users").await.assert_no_content();
        assert_eq!(api.ride_count().await, 0);
        api.gw
            .get("/api/v1/rides?source=1&destination=2")
            .await
            .assert_no_content();
    }
    // Clearing an empty database is fine too.
    api.gw
        .send("POST", "/api/v1/db/clear", None)
        .await
        .assert_json(200, json!({}));
}

async fn users_service_counts_its_requests(urls: &Urls) {
    let api = Api::new(urls);
    assert_eq!(Api::count(&api.users).await, 0);
    let big = "x".repeat(BODY_LIMIT + 1);
    let alice = r#"{"username":"alice","password":"3d725109c7e7c0bfb9d709836735b56d943d263f"}"#;
    // Through the gateway, except the oversized body: the gateway itself
    // refuses that one, so it is sent to the service directly.
    let calls: Vec<(&Http, &str, &str, Option<&str>, u16)> = vec![
        (&api.gw, "GET", "/api/v1/users", None, 204),
        (&api.gw, "PUT", "/api/v1/users", Some(alice), 201),
        (&api.gw, "PUT", "/api/v1/users", Some("not json"), 400),
        (&api.gw, "DELETE", "/api/v1/users/nobody", None, 400),
        (&api.gw, "PATCH", "/api/v1/users", None, 405),
        (&api.gw, "GET", "/api/v1/users/alice", None, 405),
        (&api.users, "PUT", "/api/v1/users", Some(&big), 413),
        (&api.gw, "GET", "/api/v1/users/a/b", None, 404),
        (&api.users, "GET", "/api/v1/users", None, 200),
    ];
    assert_counted(&api.users, &calls).await;
    // Neither _count nor db/clear counts, nor do the rides service's routes.
    assert_eq!(Api::count(&api.users).await, 9);
    api.users
        .send("POST", "/api/v1/db/clear", None)
        .await
        .assert_json(200, json!({}));
    api.users
        .send("PUT", "/api/v1/_count", None)
        .await
        .assert_json(405, json!({}));
    api.gw
        .get("/api/v1/rides/count")
        .await
        .assert_json(200, json!([0]));
    assert_eq!(Api::count(&api.users).await, 9);
    // Only DELETE resets.
    api.users
        .delete("/api/v1/_count")
        .await
        .assert_json(200, json!({}));
    assert_eq!(Api::count(&api.users).await, 0);
    api.users.get("/api/v1/users").await.assert_no_content();
    assert_eq!(Api::count(&api.users).await, 1);
}

async fn rides_service_counts_its_requests(urls: &Urls) {
    let api = Api::new(urls);
    // Through the gateway, _count reaches the rides service.
    assert_eq!(Api::count(&api.gw).await, 0);
    api.add_user("alice").await;
    let ride =
        r#"{"created_by":"alice","timestamp":"01-01-2099:00-00-00","source":1,"destination":2}"#;
    let big = "x".repeat(BODY_LIMIT + 1);
    let calls: Vec<(&Http, &str, &str, Option<&str>, u16)> = vec![
        (&api.gw, "POST", "/api/v1/rides", Some(ride), 201),
        (&api.gw, "POST", "/api/v1/rides", Some("{}"), 400),
        (&api.rides, "POST", "/api/v1/rides", Some(&big), 413),
        (
            &api.gw,
            "GET",
            "/api/v1/rides?source=1&destination=2",
            None,
            200,
        ),
        (&api.gw, "GET", "/api/v1/rides?source=1", None, 400),
        (&api.gw, "GET", "/api/v1/rides/1", None, 200),
        (&api.gw, "GET", "/api/v1/rides/2", None, 204),
        (&api.gw, "GET", "/api/v1/rides/x", None, 400),
        (
            &api.gw,
            "POST",
            "/api/v1/rides/1",
            Some(r#"{"username":"alice"}"#),
            400,
        ),
        (&api.gw, "PUT", "/api/v1/rides/1", None, 405),
        (&api.gw, "GET", "/api/v1/rides/count", None, 200),
        (&api.gw, "DELETE", "/api/v1/rides/count", None, 405),
        (&api.rides, "GET", "/api/v1/rides/1/x", None, 404),
        (&api.gw, "DELETE", "/api/v1/rides/1", None, 200),
    ];
    assert_counted(&api.rides, &calls).await;
    api.gw
        .send("POST", "/api/v1/db/clear", None)
        .await
        .assert_json(200, json!({}));
    api.add_user("bob").await;
    assert_eq!(Api::count(&api.gw).await, 14);
    assert_eq!(
        Api::count(&api.users).await,
        2,
        "users counted its own two PUTs"
    );
    api.gw
        .delete("/api/v1/_count")
        .await
        .assert_json(200, json!({}));
    assert_eq!(Api::count(&api.rides).await, 0);
}

/// Makes each call, checks its status, and that `counter` counted it.
async fn assert_counted(counter: &Http, calls: &[(&Http, &str, &str, Option<&str>, u16)]) {
    let before = Api::count(counter).await;
    for (i, (to, method, path, body, status)) in calls.iter().enumerate() {
        let r = to
            .send(method, path, body.map(|b| b.as_bytes().to_vec()))
            .await;
        assert_eq!(r.status, *status, "{method} {path}: {}", r.text());
        let want = before + i as u64 + 1;
        assert_eq!(Api::count(counter).await, want, "{method} {path}");
    }
}

async fn unsupported_methods_are_405_with_empty_object(urls: &Urls) {
    let api = Api::new(urls);
    let routes: [(&Http, &str, &[&str]); 9] = [
        (&api.gw, "/api/v1/users", &["POST", "DELETE", "PATCH"]),
        (
            &api.gw,
            "/api/v1/users/alice",
            &["GET", "PUT", "POST", "PATCH"],
        ),
        (&api.gw, "/api/v1/rides", &["PUT", "DELETE", "PATCH"]),
        (&api.gw, "/api/v1/rides/1", &["PUT", "PATCH"]),
        (&api.gw, "/api/v1/rides/count", &["POST", "PUT", "DELETE"]),
        (&api.gw, "/api/v1/db/clear", &["GET", "PUT", "DELETE"]),
        (&api.gw, "/api/v1/_count", &["POST", "PUT", "PATCH"]),
        (&api.users, "/api/v1/db/clear", &["GET", "DELETE"]),
        (&api.users, "/api/v1/_count", &["POST", "PUT"]),
    ];
    api.add_user("alice").await;
    for (service, path, methods) in routes {
        for method in methods {
            let r = service.raw(method, path, "{}").await;
            assert_eq!(r.status, 405, "{method} {path}: {}", r.text());
            assert_eq!(r.json(), json!({}), "{method} {path}");
        }
    }
    assert_eq!(api.user_list().await, ["alice"]);
}

async fn unknown_routes_are_404(urls: &Urls) {
    let api = Api::new(urls);
    for (service, path) in [
        (&api.gw, "/"),
        (&api.gw, "/api/v1/nothing"),
        (&api.gw, "/api/v2/users"),
        (&api.gw, "/api/v1/users/a/b"),
        (&api.gw, "/api/v1/usersx"),
        (&api.gw, "/api/v1/rides/1/x"),
        (&api.gw, "/api/v1/ride"),
        (&api.users, "/api/v1/rides"),
        (&api.rides, "/api/v1/users"),
    ] {
        let r = service.get(path).await;
        r.assert_error(404);
    }
}

/// The DBaaS's own HTTP API on the orchestrator's address.
async fn db_api_reads_writes_and_lists_workers(urls: &Urls) {
    let db = Http::new(&urls.orchestrator);
    let user = json!({"op": "insert", "table": "users",
                      "row": {"username": "dana", "password": PASSWORD}});
    let w = db.json("POST", "/api/v1/db/write", user).await;
    assert_eq!(w.status, 200, "{}", w.text());
    let seq = w.json()["seq"].as_u64().expect("a write answers its seq");
    let get = json!({"op": "get", "table": "users", "key": "dana", "columns": ["username"]});
    for query in ["", "?consistency=strong", "?consistency=eventual"] {
        let r = db
            .json("POST", &format!("/api/v1/db/read{query}"), get.clone())
            .await;
        assert_eq!(r.status, 200, "{query}: {}", r.text());
        assert_eq!(r.json()["rows"], json!([{"username": "dana"}]), "{query}");
    }
    let strong = db.json("POST", "/api/v1/db/read", get).await.json();
    assert!(strong["seq"].as_u64().is_some_and(|s| s >= seq), "{strong}");
    // Every worker's pid, master included, ascending.
    let pids = db.get("/api/v1/worker/list").await;
    assert_eq!(pids.status, 200, "{}", pids.text());
    let pids: Vec<u64> = serde_json::from_value(pids.json()).expect("a list of pids");
    assert!(pids.len() >= 2, "master and slave: {pids:?}");
    assert!(pids.windows(2).all(|w| w[0] < w[1]), "{pids:?}");
    db.raw("POST", "/api/v1/db/clear", "")
        .await
        .assert_json(200, json!({}));
    let count = json!({"op": "count", "table": "users"});
    let r = db.json("POST", "/api/v1/db/read", count).await;
    assert_eq!(r.json()["count"], json!(0), "{}", r.text());
    for (method, path) in [
        ("GET", "/api/v1/db/read"),
        ("PUT", "/api/v1/db/write"),
        ("GET", "/api/v1/db/clear"),
        ("POST", "/api/v1/worker/list"),
        ("POST", "/api/v1/workers"),
        ("POST", "/metrics"),
        ("POST", "/healthz"),
    ] {
        let r = db.raw(method, path, "{}").await;
        r.assert_json(405, json!({}));
    }
    db.get("/api/v1/nothing").await.assert_error(404);
}

/// A write sent with an `Idempotency-Key` header (again, as after an
/// answer lost on the way) is applied once, and its repeats get the first
/// answer; a malformed key is a 400 that writes nothing.
async fn db_api_writes_named_by_an_idempotency_key_apply_once(urls: &Urls) {
    let http = reqwest::Client::new();
    let write = format!("{}/api/v1/db/write", urls.orchestrator);
    let send = |key: &str, name: &str| {
        let body = json!({"op": "insert", "table": "users",
                          "row": {"username": name, "password": PASSWORD}});
        http.post(&write)
            .header("Idempotency-Key", key)
            .json(&body)
            .send()
    };
    let key = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0";
    let first = send(key, "once").await.unwrap();
    assert_eq!(first.status(), 200);
    let first: Json = first.json().await.unwrap();
    for again in [key, "0F1E2D3C4B5A69788796A5B4C3D2E1F0"] {
        let r = send(again, "once").await.unwrap();
        assert_eq!(r.status(), 200, "the same key, the first answer");
        assert_eq!(r.json::<Json>().await.unwrap(), first);
    }
    // Another key is another write: this one a duplicate.
    let other = send("00000000-0000-0000-0000-000000000001", "once")
        .await
        .unwrap();
    assert_eq!(other.status(), 409);
    for bad in [
        "",
        "once",
        "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f",
        "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f00",
        "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1fg",
        "--0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0",
        "----0f1e2d3c4b5a69788796a5b4c3d2e1f0",
        "0f1e2d3c4b5a-6978-8796-a5b4c3d2e1f0",
        "{0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0}",
    ] {
        let r = send(bad, "never").await.unwrap();
        assert_eq!(r.status(), 400, "key {bad:?}");
        let body: Json = r.json().await.unwrap();
        assert!(body["error"].is_string(), "{body}");
    }
    // Two keys at once: which one would it be?
    let twice = http
        .post(&write)
        .header("Idempotency-Key", "00000000-0000-0000-0000-000000000002")
        .header("Idempotency-Key", "00000000-0000-0000-0000-000000000003")
        .json(&json!({"op": "insert", "table": "users",
                      "row": {"username": "never", "password": PASSWORD}}))
        .send()
        .await
        .unwrap();
    assert_eq!(twice.status(), 400, "two keys");
    // A key names one write: another write under it is another write,
    // applied, not answered with the first one's answer.
    let other = send(key, "other").await.unwrap();
    assert_eq!(other.status(), 200);
    let other: Json = other.json().await.unwrap();
    assert_ne!(other, first, "another write, another answer");
    let db = Http::new(&urls.orchestrator);
    let got = json!({"op": "get", "table": "users", "key": "other", "columns": ["username"]});
    let r = db.json("POST", "/api/v1/db/read", got).await;
    assert_eq!(
        r.json()["rows"],
        json!([{"username": "other"}]),
        "{}",
        r.text()
    );
    let get = json!({"op": "get", "table": "users", "key": "never"});
    let r = db.json("POST", "/api/v1/db/read", get).await;
    assert_eq!(r.json()["rows"], json!([]), "{}", r.text());
    let count = json!({"op": "count", "table": "users",
                       "where": [{"column": "username", "op": "=", "value": "once"}]});
    let r = db.json("POST", "/api/v1/db/read", count).await;
    assert_eq!(r.json()["count"], json!(1), "{}", r.text());
}

/// The services' client of the DBaaS, given an orchestrator that cannot
/// be reached before one that can, moves on to the one that answers, for
/// reads and writes; given none that can, it fails as unavailable.
async fn the_services_db_client_moves_on_to_an_orchestrator_that_answers(urls: &Urls) {
    use dbaas::http::dbclient::DbClient;
    use dbaas::model::{ReadOp, ReadResult, WriteOp};
    let db = DbClient::new(&format!("{},{}", closed_port_url(), urls.orchestrator));
    let op: WriteOp = serde_json::from_value(json!({"op": "insert", "table": "users",
        "row": {"username": "mover", "password": PASSWORD}}))
    .unwrap();
    db.write(&op).await.expect("written through the second");
    let count: ReadOp = serde_json::from_value(json!({"op": "count", "table": "users",
        "where": [{"column": "username", "op": "=", "value": "mover"}]}))
    .unwrap();
    let read = db.read(&count).await.expect("read through the second");
    assert_eq!(read.result, ReadResult::Count(1));
    let none = DbClient::new(&format!("{},{}", closed_port_url(), closed_port_url()));
    let err = none
        .read(&count)
        .await
        .expect_err("no orchestrator answers");
    assert_eq!(err.status(), 503, "{err}");
}

/// A gateway given, for each service, an instance nothing listens at
/// before the system's own moves on to the one it can connect to, for
/// reads and writes alike.
async fn a_gateway_moves_on_to_a_service_it_can_connect_to(urls: &Urls) {
    let users = format!("{},{}", closed_port_url(), urls.users);
    let rides = format!("{},{}", closed_port_url(), urls.rides);
    let (_gateway, api) = gateway_in_front(urls, users, rides);
    api.add_user("mover").await;
    let id = api.add_ride("mover", FUTURE, 1, 2).await;
    assert_eq!(api.ride(id).await["created_by"], json!("mover"));
    assert!(api.user_list().await.contains(&"mover".to_owned()));
}

/// A gateway of its own in front of the services at `users` and `rides`
/// (lists of URLs), and the API through it to the system at `urls`.
fn gateway_in_front(urls: &Urls, users: String, rides: String) -> (Servers, Api) {
    let (listener, gateway) = common::inproc::listener();
    let servers = Servers::start(move || async move {
        Ok(vec![dbaas::http::gateway::server(
            listener, &users, &rides, BODY_LIMIT,
        )?])
    });
    let api = Api::new(&Urls {
        gateway,
        ..urls.clone()
    });
    (servers, api)
}

/// A RideShare request sent again with the same `Idempotency-Key` writes
/// nothing twice and gets the first answer; a malformed key is a 400 that
/// writes nothing.
async fn rideshare_requests_named_by_an_idempotency_key_write_once(urls: &Urls) {
    let http = reqwest::Client::new();
    let send = |method: reqwest::Method, path: &str, key: &str, body: Json| {
        http.request(method, format!("{}{path}", urls.gateway))
            .header("Idempotency-Key", key)
            .json(&body)
            .send()
    };
    let user = json!({"username": "keyed", "password": PASSWORD});
    let ride = json!({"created_by": "keyed", "timestamp": FUTURE, "source": 1, "destination": 2});
    let mut locations = Vec::new();
    for (method, path, key, body) in [
        (
            reqwest::Method::PUT,
            "/api/v1/users",
            "11111111-2222-3333-4444-555555555555",
            &user,
        ),
        (
            reqwest::Method::POST,
            "/api/v1/rides",
            "21111111-2222-3333-4444-555555555555",
            &ride,
        ),
    ] {
        for _ in 0..2 {
            let r = send(method.clone(), path, key, body.clone()).await.unwrap();
            assert_eq!(r.status(), 201, "{path}: done, then the first answer again");
            let location = r.headers().get("location").cloned();
            locations.push(location.map(|l| l.to_str().unwrap().to_owned()));
        }
    }
    assert!(locations[2].is_some());
    assert_eq!(locations[2], locations[3], "one ride, named twice");
    let api = Api::new(urls);
    assert_eq!(api.ride_count().await, 1);
    // Without a key, the same user again is the contract's refusal.
    api.gw
        .json("PUT", "/api/v1/users", user.clone())
        .await
        .assert_error(400);
    let r = send(
        reqwest::Method::PUT,
        "/api/v1/users",
        "not-a-uuid",
        json!({"username": "nokey", "password": PASSWORD}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 400);
    assert!(!api.user_list().await.contains(&"nokey".to_owned()));
}

/// Bad requests to the DB API: 400 (413 over the cap) with `{"error"}`,
/// and nothing reaches storage (promise 8 of DBAAS.md).
async fn db_api_refuses_bad_input_and_changes_nothing(urls: &Urls) {
    let db = Http::new(&urls.orchestrator);
    let writes = [
        "",
        "not json",
        "[]",
        r#"{"op":"drop","table":"users"}"#,
        r#"{"op":"insert","table":"nope","row":{"a":1}}"#,
        r#"{"op":"insert","table":"users","row":{"username":"x"},"extra":1}"#,
        r#"{"op":"insert","table":"users","row":{"username":5,"password":"p"}}"#,
        r#"{"op":"insert","table":"users","row":{"username":"x","password":"p","1st":2}}"#,
        r#"{"op":"insert","table":"users","row":{"username":"x","password":"p","naïve":2}}"#,
        r#"{"op":"delete","table":"users"}"#,
        r#"{"op":"update","table":"users","key":"x","set":{"username":"y"},"where":[]}"#,
        r#"{"op":"clear","table":"users; drop"}"#,
        r#"{"op":"require","table":"users","key":"x"}"#,
        r#"{"op":"batch","ops":[{"op":"require","table":"users","key":5}]}"#,
        r#"{"op":"batch","ops":[{"op":"require","table":"nope","key":"x"}]}"#,
    ];
    for body in writes {
        let r = db.raw("POST", "/api/v1/db/write", body).await;
        r.assert_error(400);
    }
    let reads = [
        ("", "{"),
        ("", r#"{"op":"get","table":"users"}"#),
        (
            "",
            r#"{"op":"get","table":"users","key":"a","columns":["a b"]}"#,
        ),
        (
            "",
            r#"{"op":"select","table":"users","where":[{"column":"username","cmp":"like","value":"a"}]}"#,
        ),
        ("", r#"{"op":"count","table":"users","limit":"x"}"#),
        ("?consistency=bogus", r#"{"op":"count","table":"users"}"#),
        ("?other=1", r#"{"op":"count","table":"users"}"#),
    ];
    for (query, body) in reads {
        let r = db
            .raw("POST", &format!("/api/v1/db/read{query}"), body)
            .await;
        r.assert_error(400);
    }
    let long = format!(
        r#"{{"op":"insert","table":"users","row":{{"username":"big","password":"{}"}}}}"#,
        "x".repeat(BODY_LIMIT)
    );
    db.raw("POST", "/api/v1/db/write", &long)
        .await
        .assert_error(413);
    // Nothing was written.
    let count = json!({"op": "count", "table": "users"});
    let r = db.json("POST", "/api/v1/db/read", count).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["count"], json!(0), "{}", r.text());
}

/// A batch with preconditions (`require`) on the DB API: applied when they
/// hold; 412 naming the failed one, and nothing written, when one does not.
async fn db_api_conditional_writes_answer_412_and_write_nothing(urls: &Urls) {
    let db = Http::new(&urls.orchestrator);
    let dana = json!({"username": "dana", "password": PASSWORD});
    let first = json!({"op": "batch", "ops": [
        {"op": "require", "table": "users", "key": "dana", "exists": false},
        {"op": "insert", "table": "users", "row": dana},
        {"op": "require", "table": "users", "key": "dana"},
    ]});
    let w = db.json("POST", "/api/v1/db/write", first).await;
    assert_eq!(w.status, 200, "{}", w.text());
    assert_eq!(
        w.json()["result"],
        json!({"batch": ["checked", {"inserted": {"key": "dana"}}, "checked"]})
    );
    let ride = json!({"created_by": "ghost", "timestamp": 1, "source": 1,
                      "destination": 2, "users": []});
    let ghost = json!({"op": "batch", "ops": [
        {"op": "insert", "table": "users",
         "row": {"username": "ghost", "password": PASSWORD}},
        {"op": "delete", "table": "users", "key": "ghost"},
        {"op": "require", "table": "users", "key": "ghost", "exists": true},
        {"op": "insert_auto", "table": "rides", "row": ride},
    ]});
    let r = db.json("POST", "/api/v1/db/write", ghost).await;
    r.assert_error(412);
    assert_eq!(
        r.json()["error"],
        json!(r#"precondition failed: users "ghost" does not exist"#)
    );
    // Nothing of the batch was written.
    let count = json!({"op": "count", "table": "rides"});
    let r = db.json("POST", "/api/v1/db/read", count).await;
    assert_eq!(r.json()["count"], json!(0), "{}", r.text());
    let get = json!({"op": "get", "table": "users", "key": "ghost"});
    let r = db.json("POST", "/api/v1/db/read", get).await;
    assert_eq!(r.json()["rows"], json!([]), "{}", r.text());
    let users = json!({"op": "count", "table": "users"});
    let r = db.json("POST", "/api/v1/db/read", users).await;
    assert_eq!(r.json()["count"], json!(1), "{}", r.text());
}

/// Users who are never deleted in the race below, and create its rides.
const KEEPERS: usize = 4;
/// Users deleted in the race below while others join rides with them.
const DOOMED: usize = 24;
/// Rides created before the race.
const RACE_RIDES: usize = 12;
/// Concurrent racers, and the steps each takes.
const RACERS: u64 = 6;
const RACE_STEPS: usize = 40;

/// Who and what the racers share.
struct Race<'a> {
    api: &'a Api,
    names: Vec<String>,
    /// The next of `names[KEEPERS..]` to delete.
    next_doomed: AtomicUsize,
    /// Every ride id that may exist: ids are never reused.
    max_ride: i64,
}

/// Joins rides as random users and creates rides as users being deleted,
/// while other racers (and this one) delete them: whatever the interleaving,
/// no ride may name a user who does not exist afterwards. Creating and
/// joining are conditional writes (`require` the user, then write), so a
/// user deleted after the service's lookup fails the write with 400.
async fn no_ride_names_a_user_deleted_while_joining_or_creating(urls: &Urls) {
    let api = Api::new(urls);
    let names: Vec<String> = (0..KEEPERS)
        .map(|i| format!("keeper{i}"))
        .chain((0..DOOMED).map(|i| format!("doomed{i}")))
        .collect();
    for name in &names {
        api.add_user(name).await;
    }
    for i in 0..RACE_RIDES {
        let by = &names[i % KEEPERS];
        let area = 1 + i as i64;
        api.add_ride(by, FUTURE, area, area + 1).await;
    }
    // At most one ride per step is created; more ids are simply missing.
    let creatable = RACERS as usize * RACE_STEPS;
    let race = Race {
        api: &api,
        names,
        next_doomed: AtomicUsize::new(KEEPERS),
        max_ride: (RACE_RIDES + creatable) as i64,
    };
    futures::future::join_all((0..RACERS).map(|seed| racer(&race, seed))).await;
    // Whoever the racers did not get to goes now.
    while delete_next_doomed(&race).await {}

    let users: BTreeSet<String> = api.user_list().await.into_iter().collect();
    let keepers: BTreeSet<String> = race.names[..KEEPERS].iter().cloned().collect();
    assert_eq!(users, keepers);
    let mut found = 0;
    for id in 1..=race.max_ride {
        let r = api.gw.get(&format!("/api/v1/rides/{id}")).await;
        if r.status == 204 {
            continue;
        }
        assert_eq!(r.status, 200, "ride {id}: {}", r.text());
        let ride = r.json();
        let named = std::iter::once(&ride["created_by"])
            .chain(ride["users"].as_array().into_iter().flatten());
        for name in named {
            let name = name.as_str().unwrap_or_default();
            assert!(users.contains(name), "ride {id} names {name:?}: {ride}");
        }
        found += 1;
    }
    assert!(
        found >= RACE_RIDES as u64,
        "the keepers' rides are all left"
    );
    assert_eq!(api.ride_count().await, found);
}

/// One racer: `RACE_STEPS` random steps, a deletion, a creation or a join,
/// each answered as the contract says whatever the others did meanwhile.
async fn racer(race: &Race<'_>, seed: u64) {
    let mut rng = fastrand::Rng::with_seed(seed);
    for _ in 0..RACE_STEPS {
        let name = &race.names[rng.usize(..race.names.len())];
        match rng.u8(..10) {
            0..=1 => {
                delete_next_doomed(race).await;
            }
            2..=3 => {
                let area = rng.i64(1..=197);
                let ride = json!({"created_by": name, "timestamp": FUTURE,
                                  "source": area, "destination": area + 1});
                let r = race.api.post_ride(ride).await;
                assert!(matches!(r.status, 201 | 400), "create: {}", r.text());
            }
            _ => {
                let id = rng.i64(1..=race.max_ride);
                let r = race.api.join(id, name).await;
                assert!(
                    matches!(r.status, 200 | 204 | 400),
                    "join {id} as {name}: {} {}",
                    r.status,
                    r.text()
                );
            }
        }
    }
}

/// Deletes the next doomed user, if any is left (each is deleted once, so
/// each deletion succeeds); answers whether there was one.
async fn delete_next_doomed(race: &Race<'_>) -> bool {
    let i = race.next_doomed.fetch_add(1, Ordering::Relaxed);
    let Some(name) = race.names.get(i) else {
        return false;
    };
    let r = race.api.gw.delete(&format!("/api/v1/users/{name}")).await;
    r.assert_json(200, json!({}));
    true
}

/// A system whose gateway points at ports where nothing listens.
#[tokio::test]
async fn gateway_answers_502_when_an_upstream_is_down() {
    let (listener, url) = common::inproc::listener();
    let (users, rides) = (closed_port_url(), closed_port_url());
    let _servers = Servers::start(move || async move {
        Ok(vec![dbaas::http::gateway::server(
            listener, &users, &rides, BODY_LIMIT,
        )?])
    });
    let gw = Http::new(&url);
    gw.get("/api/v1/users").await.assert_error(502);
    let body = json!({"username": "a", "password": PASSWORD});
    gw.json("PUT", "/api/v1/users", body)
        .await
        .assert_error(502);
    gw.get("/api/v1/rides/count").await.assert_error(502);
    gw.get("/api/v1/_count").await.assert_error(502);
    // The gateway itself is up.
    assert_eq!(gw.get("/healthz").await.status, 200);
}

/// Services whose DBaaS is down answer 503, and still 400 for bad input.
#[tokio::test]
async fn services_answer_503_when_the_dbaas_is_down() {
    let (lu, users_url) = common::inproc::listener();
    let (lr, rides_url) = common::inproc::listener();
    let db = closed_port_url();
    let _servers = Servers::start(move || async move {
        Ok(vec![
            dbaas::http::users::server(lu, &db, BODY_LIMIT)?,
            dbaas::http::rides::server(lr, &db, BODY_LIMIT)?,
        ])
    });
    let (users, rides) = (Http::new(&users_url), Http::new(&rides_url));
    let user = json!({"username": "a", "password": PASSWORD});
    users
        .json("PUT", "/api/v1/users", user)
        .await
        .assert_error(503);
    users.get("/api/v1/users").await.assert_error(503);
    users.delete("/api/v1/users/a").await.assert_error(503);
    users
        .send("POST", "/api/v1/db/clear", None)
        .await
        .assert_error(503);
    users
        .raw("PUT", "/api/v1/users", "{}")
        .await
        .assert_error(400);
    let ride = json!({"created_by": "a", "timestamp": FUTURE, "source": 1, "destination": 2});
    rides
        .json("POST", "/api/v1/rides", ride)
        .await
        .assert_error(503);
    rides.get("/api/v1/rides/1").await.assert_error(503);
    rides.get("/api/v1/rides/count").await.assert_error(503);
    rides
        .get("/api/v1/rides?source=1&destination=2")
        .await
        .assert_error(503);
    rides
        .get("/api/v1/rides?source=0&destination=2")
        .await
        .assert_error(400);
    // Counters need no DBaaS.
    assert_eq!(Api::count(&users).await, 4);
    assert_eq!(Api::count(&rides).await, 5);
}

/// Through the gateway, the rides service answers as it does directly:
/// same query result, its `Location` and `Content-Type` headers unchanged.
#[tokio::test]
async fn gateway_forwards_requests_and_answers_unchanged() {
    let stack = Stack::start(BODY_LIMIT);
    let gw = Http::new(&stack.urls.gateway);
    let body = json!({"username": "alice", "password": PASSWORD});
    gw.json("PUT", "/api/v1/users", body)
        .await
        .assert_json(201, json!({}));
    let ride = json!({"created_by": "alice", "timestamp": FUTURE, "source": 1, "destination": 2});
    let r = gw.json("POST", "/api/v1/rides", ride).await;
    assert_eq!(r.header("location"), Some("/api/v1/rides/1"));
    assert_eq!(r.header("content-type"), Some("application/json"));
    let direct: Json = Http::new(&stack.urls.rides)
        .get("/api/v1/rides?source=1&destination=2")
        .await
        .json();
    let through = gw.get("/api/v1/rides?source=1&destination=2").await.json();
    assert_eq!(direct, through);
}

/// What the echo upstream saw of a request, as JSON.
async fn echo(req: actix_web::HttpRequest, body: actix_web::web::Bytes) -> actix_web::HttpResponse {
    let header = |n: &str| req.headers().get(n).and_then(|v| v.to_str().ok());
    actix_web::HttpResponse::Ok()
        .insert_header(("x-upstream", "echo"))
        .json(json!({
            "method": req.method().as_str(),
            "uri": req.uri().to_string(),
            "trace": header("x-trace"),
            "hop": header("x-hop"),
            "body": String::from_utf8_lossy(&body),
        }))
}

/// A rides instance that carries a request out and then drops the
/// connection without answering (as one dying at the worst moment): the
/// gateway sends the request again to the next instance, under the same
/// key, and the ride is created once.
#[tokio::test]
async fn a_request_whose_answer_was_lost_is_carried_out_once() {
    let stack = Stack::start(BODY_LIMIT);
    let (dying, dying_url) = common::inproc::listener();
    let real = stack.urls.rides.clone();
    std::thread::spawn(move || serve_then_drop(dying, real));
    let rides = format!("{dying_url},{}", stack.urls.rides);
    let (_gateway, api) = gateway_in_front(&stack.urls, stack.urls.users.clone(), rides);
    api.add_user("lost").await;
    let id = api.add_ride("lost", FUTURE, 3, 4).await;
    assert_eq!(api.ride(id).await["created_by"], json!("lost"));
    assert_eq!(api.ride_count().await, 1, "carried out once");
}

/// Takes one HTTP request on `listener`, has the rides service at `real`
/// carry it out (headers and body as they came), and closes the
/// connection without a word.
fn serve_then_drop(listener: std::net::TcpListener, real: String) {
    use std::io::{BufRead, BufReader, Read};
    let (stream, _) = listener.accept().expect("the gateway connects");
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    let mut parts = line.split_whitespace();
    let (method, path) = (
        parts.next().unwrap().to_owned(),
        parts.next().unwrap().to_owned(),
    );
    let mut headers = Vec::new();
    let mut length = 0;
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).unwrap();
        let h = h.trim_end().to_owned();
        if h.is_empty() {
            break;
        }
        let (name, value) = h.split_once(':').unwrap();
        let (name, value) = (name.trim().to_owned(), value.trim().to_owned());
        if name.eq_ignore_ascii_case("content-length") {
            length = value.parse().unwrap();
        } else if !name.eq_ignore_ascii_case("host") {
            headers.push((name, value));
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut req = reqwest::Client::new()
            .request(method.parse().unwrap(), format!("{real}{path}"))
            .body(body);
        for (n, v) in &headers {
            req = req.header(n, v);
        }
        let carried = req.send().await.expect("the real instance answers");
        assert_eq!(carried.status(), 201, "the ride was created here first");
    });
    // Dropped unanswered.
}

/// The gateway hands the upstream the method, path, query, end-to-end
/// request headers and body as they came, and leaves out hop-by-hop ones.
#[tokio::test]
async fn gateway_forwards_request_headers_and_bodies_to_the_upstream() {
    let (upstream, users) = common::inproc::listener();
    let (listener, url) = common::inproc::listener();
    let rides = closed_port_url();
    let _servers = Servers::start(move || async move {
        let echo = actix_web::HttpServer::new(|| {
            actix_web::App::new().default_service(actix_web::web::to(echo))
        })
        .workers(1)
        .disable_signals()
        .listen(upstream)?
        .run();
        let gateway = dbaas::http::gateway::server(listener, &users, &rides, BODY_LIMIT)?;
        Ok(vec![echo, gateway])
    });
    let resp = reqwest::Client::new()
        .put(format!("{url}/api/v1/users/x?a=1&b=two"))
        .header("x-trace", "abc")
        .header("connection", "x-hop")
        .header("x-hop", "1")
        .body("hello")
        .send()
        .await
        .expect("the gateway answers");
    assert_eq!(resp.status(), 200);
    let from_upstream = resp.headers().get("x-upstream").cloned();
    assert_eq!(
        from_upstream.as_ref().and_then(|v| v.to_str().ok()),
        Some("echo")
    );
    let seen: Json = resp.json().await.expect("JSON");
    assert_eq!(
        seen,
        json!({
            "method": "PUT",
            "uri": "/api/v1/users/x?a=1&b=two",
            "trace": "abc",
            "hop": null,
            "body": "hello",
        })
    );
}

/// The cluster view, once `ok` holds for it (polled).
async fn cluster_once(db: &Http, what: &str, ok: impl Fn(&Json) -> bool) -> Json {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let r = db.get("/api/v1/cluster").await;
        assert_eq!(r.status, 200, "{}", r.text());
        let view = r.json();
        if ok(&view) {
            return view;
        }
        assert!(std::time::Instant::now() < deadline, "{what}: {view}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// `/metrics` on the orchestrator: the counters, the batches in flight,
/// and each worker of the cluster view with its applied seq and lag.
async fn metrics_show_every_worker_and_the_batches_in_flight(urls: &Urls) {
    let api = Api::new(urls);
    let db = Http::new(&urls.orchestrator);
    api.add_user("metered").await;
    let view = cluster_once(&db, "a master", |v| v["master"].is_u64()).await;
    let r = db.get("/metrics").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let text = r.text();
    let value = |line_start: &str| -> u64 {
        let line = text
            .lines()
            .find(|l| l.starts_with(line_start))
            .unwrap_or_else(|| panic!("no {line_start} in {text}"));
        let number = line.rsplit(' ').next().unwrap_or_default();
        number.parse().unwrap_or_else(|_| panic!("{line}"))
    };
    assert!(value("dbaas_writes_total ") >= 1);
    value("dbaas_batches_in_flight{kind=\"read\"}");
    value("dbaas_batches_in_flight{kind=\"write\"}");
    // The user's write went in a batch of its own or with others.
    let (batches, writes) = (
        value("dbaas_batches_sent_total{kind=\"write\"}"),
        value("dbaas_batched_requests_total{kind=\"write\"}"),
    );
    assert!(batches >= 1 && writes >= batches, "{text}");
    for w in view["workers"].as_array().expect("workers") {
        let labels = format!("{{id=\"{}\",pid=\"{}\",", w["id"], w["pid"]);
        value(&format!("dbaas_worker_applied_seq{labels}"));
        value(&format!("dbaas_worker_lag{labels}"));
    }
    // The queues, what the watcher and the Scaler did, the latencies.
    for q in ["readQ", "writeQ"] {
        value(&format!("dbaas_queue_depth{{queue=\"{q}\"}} "));
    }
    assert!(
        text.contains("dbaas_queue_depth{queue=\"responseQ."),
        "{text}"
    );
    assert!(value("dbaas_elections_total ") >= 1);
    value("dbaas_failovers_total ");
    value("dbaas_respawns_total ");
    value("dbaas_worker_deaths_total ");
    value("dbaas_scaling_decisions_total ");
    let p99 = text
        .lines()
        .find(|l| l.starts_with("dbaas_request_latency_ms{kind=\"write\",quantile=\"0.99\"}"))
        .unwrap_or_else(|| panic!("no write p99 in {text}"));
    let ms: f64 = p99
        .rsplit(' ')
        .next()
        .unwrap_or_default()
        .parse()
        .expect(p99);
    assert!(ms > 0.0, "{p99}");
    // The cluster view carries the same: the traffic, the queues, each
    // worker's reads served, the orchestrator's counters.
    let view = cluster_once(&db, "the traffic", |v| {
        v["traffic"]["writes"]["p99_ms"].is_f64()
    })
    .await;
    assert_eq!(view["traffic"]["window_s"], 60, "{view}");
    assert!(view["queues"]["readQ"].is_u64(), "{view}");
    assert!(view["orchestrator"]["writes"].as_u64() >= Some(1), "{view}");
    assert!(view["totals"]["election"].as_u64() >= Some(1), "{view}");
    assert!(
        view["workers"]
            .as_array()
            .is_some_and(|ws| ws.iter().any(|w| w["reads_served"].is_u64())),
        "{view}"
    );
}

/// Runs `dbaas status` with `args` against the orchestrator; its stdout.
async fn status(urls: &Urls, args: &[&str]) -> String {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_dbaas"))
        .arg("status")
        .args(["--orchestrator", &urls.orchestrator])
        .args(args)
        .env_remove("DBAAS_ORCHESTRATOR")
        .output()
        .await
        .expect("dbaas status runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "dbaas status {args:?}: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// `dbaas status` prints the master and every worker in a table, and
/// `--json` the cluster document; a wrong address fails clearly.
async fn status_prints_every_worker(urls: &Urls) {
    let db = Http::new(&urls.orchestrator);
    let settled =
        |v: &Json| v["master"].is_u64() && v["workers"].as_array().is_some_and(|w| w.len() >= 2);
    let view = cluster_once(&db, "a master and a slave", settled).await;
    let table = status(urls, &[]).await;
    let master = view["master"].as_u64().unwrap();
    assert!(table.contains(&format!("master pid {master}")), "{table}");
    for w in view["workers"].as_array().unwrap() {
        let pid = w["pid"].as_u64().unwrap().to_string();
        assert!(
            table
                .lines()
                .any(|l| l.split_whitespace().next() == Some(pid.as_str())),
            "worker {pid} in {table}"
        );
    }
    let doc: Json = serde_json::from_str(&status(urls, &["--json"]).await).expect("--json parses");
    assert!(
        doc["workers"].as_array().is_some_and(|w| w.len() >= 2),
        "{doc}"
    );
    assert_eq!(doc["cluster"], view["cluster"]);
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_dbaas"))
        .args(["status", "--orchestrator", "http://127.0.0.1:9"])
        .output()
        .await
        .expect("dbaas status runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("127.0.0.1:9"), "{err}");
}

/// The pids of a `worker/list` answer.
async fn worker_pids(db: &Http) -> Vec<u64> {
    let r = db.get("/api/v1/worker/list").await;
    assert_eq!(r.status, 200, "{}", r.text());
    serde_json::from_value(r.json()).expect("a list of pids")
}

/// The pid a crash call answers (`["<pid>"]`).
async fn crash(db: &Http, what: &str) -> u64 {
    let r = db.raw("POST", &format!("/api/v1/crash/{what}"), "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let pids: Vec<String> = serde_json::from_value(r.json()).expect(r#"["<pid>"]"#);
    assert_eq!(pids.len(), 1, "{pids:?}");
    pids[0].parse().expect("a pid")
}

async fn crash_apis_kill_and_the_cluster_elects_and_replaces(urls: &Urls) {
    let api = Api::new(urls);
    let db = Http::new(&urls.orchestrator);
    api.add_user("before").await;
    let settled = |view: &Json| {
        let workers = view["workers"].as_array().map_or(0, Vec::len);
        view["master"].is_u64() && workers == 2
    };
    let view = cluster_once(&db, "a master and a slave", settled).await;
    let (master, epoch) = (
        view["master"].as_u64().unwrap(),
        view["epoch"].as_u64().unwrap(),
    );
    for w in view["workers"].as_array().unwrap() {
        for field in ["pid", "id", "applied", "lag", "epoch"] {
            assert!(w[field].is_u64(), "{field} in {w}");
        }
        assert!(w["role"].is_string() && w["state"].is_string(), "{w}");
    }
    // The Scaler runs (by default) and shows its policy.
    let policy = &view["scaler"]["policy"];
    assert!(
        policy["window"].as_f64().is_some_and(|w| w > 0.0) && policy["reads_per_slave"] == 20,
        "{view}"
    );
    // crash/slave kills the slave with the highest pid; a replacement
    // takes its place in the list.
    let pids = worker_pids(&db).await;
    let slave = *pids.iter().filter(|&&p| p != master).max().unwrap();
    assert_eq!(crash(&db, "slave").await, slave);
    let replaced = |view: &Json| {
        let ws = view["workers"].as_array().cloned().unwrap_or_default();
        settled(view) && ws.iter().all(|w| w["pid"].as_u64() != Some(slave))
    };
    cluster_once(&db, "a replacement slave", replaced).await;
    let pids = worker_pids(&db).await;
    assert!(!pids.contains(&slave) && pids.contains(&master), "{pids:?}");
    // crash/master kills the master; a slave is elected under a new epoch.
    assert_eq!(crash(&db, "master").await, master);
    let elected = |view: &Json| {
        settled(view)
            && view["master"].as_u64().is_some_and(|m| m != master)
            && view["epoch"].as_u64().is_some_and(|e| e > epoch)
    };
    let failovers = view["totals"]["failover"].as_u64().unwrap_or(0);
    let view = cluster_once(&db, "a new master", elected).await;
    assert!(
        view["totals"]["failover"].as_u64() > Some(failovers),
        "the failover is counted: {view}"
    );
    assert!(
        view["events"]
            .as_array()
            .is_some_and(|es| es.iter().any(|e| e["kind"] == "election")),
        "{view}"
    );
    assert!(!worker_pids(&db).await.contains(&master));
    // Nothing acknowledged was lost, and writes go on.
    api.add_user("after").await;
    assert_eq!(api.user_list().await, ["after", "before"]);
    for (method, path) in [
        ("GET", "/api/v1/crash/master"),
        ("GET", "/api/v1/crash/slave"),
        ("POST", "/api/v1/cluster"),
    ] {
        db.raw(method, path, "").await.assert_json(405, json!({}));
    }
}

/// `dbaas up` over RabbitMQ and ZooKeeper with its workers in containers
/// of the test image (decisions of the Scaler only far apart, so that the
/// scripts see the two workers they start with).
async fn docker_system() -> Option<System> {
    let (_, image) = suite::docker_image().await?;
    let base = suite::amqp_url()?;
    let zk = suite::fresh_zk(suite::ZK_SESSION)?;
    let (_, url) = suite::fresh_vhost(&base);
    let system = System::start_with(&[
        "--amqp",
        &url,
        "--zk",
        &zk.hosts,
        "--zk-root",
        &zk.root,
        "--runtime",
        "docker",
        "--image",
        &image,
        "--scale-window",
        "100000",
    ]);
    Some(system)
}

/// `dbaas up` over RabbitMQ and ZooKeeper with its workers as services of
/// the swarm the engine manages (decisions of the Scaler only far apart).
async fn swarm_system() -> Option<System> {
    let (_, image) = suite::swarm_image().await?;
    let base = suite::amqp_url()?;
    let zk = suite::fresh_zk(suite::ZK_SESSION)?;
    let (_, url) = suite::fresh_vhost(&base);
    let system = System::start_with(&[
        "--amqp",
        &url,
        "--zk",
        &zk.hosts,
        "--zk-root",
        &zk.root,
        "--runtime",
        "swarm",
        "--image",
        &image,
        "--scale-window",
        "100000",
    ]);
    Some(system)
}

/// Stops `dbaas up --runtime swarm` with SIGTERM: it exits cleanly and
/// leaves no worker service, and soon no container, behind.
async fn stop_swarm_system(system: System) {
    let (docker, _) = suite::docker_image().await.expect("the engine");
    let id = std::fs::read_to_string(system.data_dir().join("cluster-id")).expect("its identity");
    let cluster = u64::from_str_radix(id.trim(), 16).expect("a cluster id");
    assert_eq!(suite::services_of(&docker, cluster).await.len(), 2);
    let status = system.stop(std::time::Duration::from_secs(60));
    assert!(status.success(), "dbaas up exited with {status}");
    assert!(suite::services_of(&docker, cluster).await.is_empty());
    suite::eventually(
        "no container left",
        std::time::Duration::from_secs(60),
        || {
            let docker = docker.clone();
            async move { suite::containers_of(&docker, cluster).await.is_empty() }
        },
    )
    .await;
}

/// Clears the data and the request counts, as a fresh system has them.
async fn fresh_state(urls: &Urls) {
    let db = Http::new(&urls.orchestrator);
    let r = db.raw("POST", "/api/v1/db/clear", "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    for base in [&urls.users, &urls.rides] {
        let r = Http::new(base).raw("DELETE", "/api/v1/_count", "").await;
        assert!(r.status < 300, "{}", r.text());
    }
}

/// Stops `dbaas up` with SIGTERM: it exits cleanly and leaves no worker
/// container behind.
async fn stop_docker_system(system: System) {
    let (docker, _) = suite::docker_image().await.expect("the engine");
    let id = std::fs::read_to_string(system.data_dir().join("cluster-id")).expect("its identity");
    let cluster = u64::from_str_radix(id.trim(), 16).expect("a cluster id");
    assert_eq!(suite::containers_of(&docker, cluster).await.len(), 2);
    let status = system.stop(std::time::Duration::from_secs(60));
    assert!(status.success(), "dbaas up exited with {status}");
    assert_eq!(
        suite::containers_of(&docker, cluster).await,
        Vec::<String>::new()
    );
}

/// With an admin token set, `crash/*` and `db/clear` (on the orchestrator,
/// the users and rides services, and through the gateway) answer 401
/// without it or with a wrong one, and change nothing; with it they work.
#[tokio::test]
async fn admin_endpoints_need_the_token_when_one_is_set() {
    let system = System::start_with(&["--admin-token", "s3cret"]);
    let u = &system.urls;
    let api = Api::new(u);
    api.add_user("keeper").await;
    let client = reqwest::Client::new();
    let post = |base: &str, path: &str, auth: Option<&str>| {
        let mut req = client.post(format!("{base}{path}"));
        if let Some(auth) = auth {
            req = req.header("authorization", auth);
        }
        req.send()
    };
    let guarded = [
        (&u.orchestrator, "/api/v1/crash/master"),
        (&u.orchestrator, "/api/v1/crash/slave"),
        (&u.orchestrator, "/api/v1/db/clear"),
        (&u.users, "/api/v1/db/clear"),
        (&u.rides, "/api/v1/db/clear"),
        (&u.gateway, "/api/v1/db/clear"),
    ];
    for (base, path) in guarded {
        for auth in [
            None,
            Some("Bearer wrong"),
            Some("s3cret"),
            Some("Bearer s3cret2"),
        ] {
            let r = post(base, path, auth).await.expect("the server answers");
            assert_eq!(r.status().as_u16(), 401, "{base}{path} with {auth:?}");
            assert_eq!(
                r.headers().get("www-authenticate").map(|v| v.as_bytes()),
                Some(&b"Bearer"[..])
            );
        }
    }
    // Nothing was cleared.
    assert_eq!(api.user_list().await, vec!["keeper".to_owned()]);
    // With the token: cleared through the gateway (the rides service
    // passes the token on to the orchestrator), and a slave crashed.
    let r = post(&u.gateway, "/api/v1/db/clear", Some("Bearer s3cret"))
        .await
        .expect("the server answers");
    assert_eq!(r.status().as_u16(), 200);
    assert!(api.user_list().await.is_empty());
    let r = post(
        &u.orchestrator,
        "/api/v1/crash/slave",
        Some("Bearer s3cret"),
    )
    .await
    .expect("the server answers");
    assert_eq!(r.status().as_u16(), 200);
}
