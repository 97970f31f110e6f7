//! Several orchestrators serving one cluster, each a `dbaas orchestrator`
//! process of its own over the real RabbitMQ and ZooKeeper, with the
//! users and rides services given all of them and a gateway in front.
//! Exactly one leads (its watcher and Scaler act); any of them serves
//! reads and writes; a strong read through one sees what another
//! acknowledged; the leading one's SIGKILL under load loses nothing and
//! fails no request: the services move on, the other orchestrator takes
//! the lead and brings the workers back (with the process runtime they
//! die with the orchestrator that started them).

mod suite;

use std::time::Instant;

use serde_json::json;
use suite::clusters::Containers;
use suite::eventually;
use suite::nodes::*;

#[actix::test]
async fn two_orchestrators_one_leads_and_both_serve_and_a_strong_read_sees_the_others_writes() {
    let Some(c) = Cluster::new() else {
        return;
    };
    let a = c.orchestrator();
    let b = c.orchestrator();
    // One leads, and both list both.
    for o in [&a, &b] {
        eventually("both orchestrators listed", DEADLINE, || async {
            let view = cluster_view(o).await.unwrap_or_default();
            view["orchestrators"]
                .as_array()
                .is_some_and(|l| l.len() == 2)
        })
        .await;
        let view = cluster_view(o).await.expect("a cluster view");
        let listed = view["orchestrators"].as_array().expect("a list").clone();
        assert_eq!(listed.len(), 2, "{view}");
        assert_eq!(
            listed
                .iter()
                .filter(|o| o["leading"] == json!(true))
                .count(),
            1,
            "{view}"
        );
        let mut addrs: Vec<&str> = listed.iter().filter_map(|o| o["addr"].as_str()).collect();
        addrs.sort_unstable();
        let mut want = [a.url.as_str(), b.url.as_str()];
        want.sort_unstable();
        assert_eq!(addrs, want, "{view}");
    }
    assert_eq!(leader_pid(&a).await, Some(u64::from(a.pid())));
    // Every write acknowledged through one is seen by the next strong
    // read through the other, each way.
    for i in 0..100u64 {
        let (w, r) = if i % 2 == 0 { (&a, &b) } else { (&b, &a) };
        let user = json!({"op": "insert", "table": "users",
                          "row": {"username": format!("u{i}"), "password": PASSWORD}});
        db_write(w, user).await;
        assert_eq!(count_users(r).await, i + 1, "write {i}");
    }
    // The follower does not crash workers; the leader says where it is.
    let r = http()
        .post(format!("{}/api/v1/crash/slave", b.url))
        .send()
        .await
        .expect("an answer");
    assert_eq!(r.status(), 503);
    let text = r.text().await.unwrap_or_default();
    assert!(text.contains(&a.url), "{text}");
}

#[actix::test]
async fn the_leading_orchestrators_death_under_load_loses_nothing_and_fails_no_request() {
    let Some(c) = Cluster::new() else {
        return;
    };
    let a = c.orchestrator();
    let b = c.orchestrator();
    let front = c.front(&[&a, &b]);
    let gateway = &front[2];
    let load = Load::start(&gateway.url, 4, 2);
    load.more(100).await;
    eventually("the first orchestrator to lead", DEADLINE, || async {
        leader_pid(&b).await == Some(u64::from(a.pid()))
    })
    .await;
    drop(a); // SIGKILL: its workers go with it
    load.more(50).await;
    eventually(
        "the other orchestrator to lead a settled cluster",
        DEADLINE,
        || leads_a_settled_cluster(&b, 3),
    )
    .await;
    assert_eq!(leader_pid(&b).await, Some(u64::from(b.pid())));
    let events = cluster_view(&b).await.unwrap_or_default()["events"].clone();
    eprintln!("after the leader's death: {events}");
    load.more(100).await;
    let (acked, failed) = load.stop().await;
    assert_eq!(failed, 0, "requests failed; orchestrator log:\n{}", b.log());
    // Every acknowledged user is there, once; every replica agrees.
    let r = http()
        .get(format!("{}/api/v1/users", gateway.url))
        .send()
        .await
        .expect("the list");
    let listed: Vec<String> = r.json().await.expect("a list of names");
    let listed: std::collections::BTreeSet<String> = listed.into_iter().collect();
    let missing: Vec<&String> = acked.iter().filter(|n| !listed.contains(*n)).collect();
    assert!(missing.is_empty(), "acknowledged but lost: {missing:?}");
    assert_eq!(count_users(&b).await, listed.len() as u64);
    eventually("every worker to apply everything", DEADLINE, || async {
        let v = cluster_view(&b).await.unwrap_or_default();
        let lags: Vec<u64> = v["workers"]
            .as_array()
            .map(|w| w.iter().filter_map(|w| w["lag"].as_u64()).collect())
            .unwrap_or_default();
        lags.len() == 3 && lags.iter().all(|&l| l == 0)
    })
    .await;
    // The last orchestrator stops its workers cleanly; their stores agree.
    let workers: Vec<u64> = {
        let v = cluster_view(&b).await.expect("a view");
        v["workers"]
            .as_array()
            .expect("workers")
            .iter()
            .filter_map(|w| w["id"].as_u64())
            .collect()
    };
    drop(front);
    b.signal(libc::SIGTERM);
    let mut b = b;
    let status = b.child.wait().expect("its exit");
    assert!(status.success(), "{}", b.log());
    let all = suite::stores(&c.dir.path().join("data"), &workers);
    assert!(all.iter().all(|s| *s == all[0]), "workers differ: {all:?}");
}

/// With the Docker runtime the workers outlive the orchestrator that
/// started them. The leading orchestrator is paused (SIGSTOP) past its
/// session: the other takes the lead and the containers over, and acts
/// (a master it kills is replaced by an election and a new container).
/// The paused one, resumed, finds its lease run out and its session
/// ended: it lets go and changes nothing (no election, no worker started
/// or killed, the containers left running), and both serve on.
#[actix::test]
async fn a_paused_leading_orchestrator_resumed_late_changes_nothing() {
    let Some(c) = Cluster::new() else {
        return;
    };
    let Some((docker, image)) = suite::docker_image().await else {
        return;
    };
    let docker_args = ["--runtime", "docker", "--image", image.as_str()];
    let t0 = Instant::now();
    let phase = |what: &str| eprintln!("{:>6} ms  {what}", t0.elapsed().as_millis());
    let a = c.orchestrator_with(&docker_args);
    let b = c.orchestrator_with(&docker_args);
    let cluster = {
        let v = cluster_view(&a).await.expect("a view");
        u64::from_str_radix(v["cluster"].as_str().expect("an id"), 16).expect("hex")
    };
    let _cleanup = Containers(cluster);
    eventually(
        "the first orchestrator to lead, listed by both",
        DEADLINE,
        || async {
            leader_pid(&b).await == Some(u64::from(a.pid()))
                && leader_pid(&a).await == Some(u64::from(a.pid()))
        },
    )
    .await;
    let (epoch, master, pids) = workers_of(&cluster_view(&b).await.expect("a view"));
    assert_eq!(pids.len(), 3);
    phase("both up; pausing the leader");
    a.signal(libc::SIGSTOP);
    // The other takes the lead and the very same containers.
    eventually("the other orchestrator to lead", DEADLINE, || {
        leads_a_settled_cluster(&b, 3)
    })
    .await;
    phase("the other leads");
    let v = cluster_view(&b).await.expect("a view");
    assert_eq!(workers_of(&v), (epoch, master, pids.clone()), "{v}");
    // It acts: the master it kills is replaced.
    let r = http()
        .post(format!("{}/api/v1/crash/master", b.url))
        .send()
        .await
        .expect("an answer");
    assert_eq!(r.status(), 200);
    eventually("a new master and a replacement", DEADLINE, || async {
        let v = cluster_view(&b).await.unwrap_or_default();
        let (e, m, p) = workers_of(&v);
        e > epoch && m != master && p.len() == 3 && leads_a_settled_cluster(&b, 3).await
    })
    .await;
    let settled = workers_of(&cluster_view(&b).await.expect("a view"));
    phase("failed over; resuming the paused one");
    a.signal(libc::SIGCONT);
    eventually("the resumed orchestrator to let go", DEADLINE, || async {
        let v = cluster_view(&a).await.unwrap_or_default();
        v["leading"] == json!(false) && kinds(&v).iter().any(|k| k == "resigned")
    })
    .await;
    eventually("the resumed orchestrator to follow", DEADLINE, || async {
        leader_pid(&a).await == Some(u64::from(b.pid()))
    })
    .await;
    phase("the resumed one follows");
    // Nothing changed: the same master, epoch and workers, and nothing
    // started, elected or killed by the resumed one.
    let after = cluster_view(&a).await.expect("a view");
    let resumed: Vec<String> = kinds(&after)
        .into_iter()
        .skip_while(|k| k != "resigned")
        .collect();
    assert!(
        resumed.iter().all(|k| k == "resigned"),
        "the resumed orchestrator acted: {after}"
    );
    let v = cluster_view(&b).await.expect("a view");
    assert_eq!(workers_of(&v), settled, "{v}");
    assert!(leads_a_settled_cluster(&b, 3).await, "{v}");
    // Both serve.
    for (i, o) in [&a, &b].into_iter().enumerate() {
        let user = json!({"op": "insert", "table": "users",
                          "row": {"username": format!("after{i}"), "password": PASSWORD}});
        db_write(o, user).await;
    }
    phase("both wrote");
    assert_eq!(count_users(&a).await, 2);
    phase("read");
    // The follower leaves the containers to the leader; the last one
    // stops them.
    for o in [a, b] {
        o.signal(libc::SIGTERM);
        let mut o = o;
        let status = o.child.wait().expect("its exit");
        assert!(status.success(), "{}", o.log());
        phase("one stopped");
    }
    let left = suite::running_containers_of(&docker, cluster).await;
    for name in &left {
        let _ = docker
            .remove_container(
                name.trim_start_matches('/'),
                Some(
                    bollard::query_parameters::RemoveContainerOptionsBuilder::default()
                        .force(true)
                        .build(),
                ),
            )
            .await;
    }
    assert!(left.is_empty(), "containers left running: {left:?}");
}
