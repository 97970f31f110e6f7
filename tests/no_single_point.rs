//! No single point of failure, shown on one whole cluster: two
//! orchestrators over a ZooKeeper ensemble of three servers and a
//! RabbitMQ cluster of three nodes with quorum queues, workers as Docker
//! containers (they outlive the orchestrators), the users and rides
//! services over both orchestrators and a gateway over them. Under one
//! steady RideShare load through the gateway, each kind of part is
//! SIGKILLed in turn, and every kind twice: the leading orchestrator, the
//! leading ZooKeeper server, a following one, the RabbitMQ node holding
//! `writeQ`'s leader, the master and a slave. Each comes back (or is
//! replaced) before the next kill. No request fails, nothing
//! acknowledged is lost, the replicas agree, no process panics.
//!
//! A test binary of its own: it uses the ensemble's and the RabbitMQ
//! cluster's fixed ports (cargo runs one test binary at a time).

mod suite;

use std::time::Instant;

use dbaas::broker::WRITE_Q;
use serde_json::{json, Value as Json};
use suite::clusters::{rabbits, Containers, Ensemble};
use suite::eventually;
use suite::nodes::*;

/// What is killed.
#[derive(Clone, Copy, Debug)]
enum Part {
    LeadingOrchestrator,
    ZooKeeperLeader,
    ZooKeeperFollower,
    RabbitNodeOfTheQueueLeader,
    Master,
    Slave,
}

const PARTS: [Part; 6] = [
    Part::LeadingOrchestrator,
    Part::ZooKeeperLeader,
    Part::ZooKeeperFollower,
    Part::RabbitNodeOfTheQueueLeader,
    Part::Master,
    Part::Slave,
];

/// The pid of a worker in `state` ("leading" or "serving") in a view.
fn worker_in(view: &Json, state: &str) -> Option<u64> {
    let workers = view["workers"].as_array()?;
    let w = workers.iter().find(|w| w["state"] == json!(state))?;
    w["pid"].as_u64()
}

#[actix::test]
async fn every_kind_of_part_killed_in_turn_under_one_gateway_load_loses_nothing() {
    let Some(urls) = rabbits::urls() else { return };
    let Some((docker, image)) = suite::docker_image().await else {
        return;
    };
    rabbits::all_up().await;
    let (vhost, amqp) = rabbits::fresh_vhost(&urls);
    let (_ensemble, hosts) = Ensemble::start();
    let session = dbaas::config::default_session_timeout(&hosts);
    let c = Cluster::over(amqp, hosts, session);
    let args = ["--runtime", "docker", "--image", image.as_str()];
    let addrs = [free_addr(), free_addr()];
    let mut orchs: Vec<Option<Node>> = addrs
        .iter()
        .map(|a| Some(c.orchestrator_at(a, &args)))
        .collect();
    let first = orchs[0].as_ref().expect("started");
    let view = cluster_view(first).await.expect("a view");
    let cluster = u64::from_str_radix(view["cluster"].as_str().expect("an id"), 16).expect("hex");
    let _containers = Containers(cluster);
    let urls: Vec<String> = orchs.iter().flatten().map(|o| o.url.clone()).collect();
    let front = c.front_over(&urls);
    let gateway = &front[2];
    let load = Load::start(&gateway.url, 4, 2);
    load.more(50).await;
    // Several URLs: quorum queues, replicated on every node.
    let types = rabbits::queue_types(&vhost);
    assert_eq!(
        types.get(WRITE_Q).map(String::as_str),
        Some("quorum"),
        "writeQ is not a quorum queue: {types:?}"
    );
    let mut pauses = Vec::new();
    for round in 0..2 {
        for part in PARTS {
            let l = wait_settled(&orchs, 3).await;
            load.take_slowest();
            let t = Instant::now();
            let leader = orchs[l].as_ref().expect("it leads");
            let view = cluster_view(leader).await.expect("a view");
            let (epoch, master, _) = workers_of(&view);
            eprintln!(
                "round {round}: killing the {part:?} (acked {})",
                load.acked()
            );
            match part {
                Part::LeadingOrchestrator => {
                    orchs[l] = None; // SIGKILL
                    eventually("the other orchestrator to lead", DEADLINE, || {
                        leads_a_settled_cluster(orchs[1 - l].as_ref().expect("up"), 3)
                    })
                    .await;
                    orchs[l] = Some(c.orchestrator_at(&addrs[l], &args));
                }
                Part::ZooKeeperLeader | Part::ZooKeeperFollower => {
                    let leading = Ensemble::leader().await;
                    let victim = if matches!(part, Part::ZooKeeperLeader) {
                        leading
                    } else {
                        ["1", "2", "3"]
                            .into_iter()
                            .find(|n| *n != leading)
                            .expect("a follower")
                            .to_owned()
                    };
                    Ensemble::kill(&victim).await;
                    load.more(30).await;
                    Ensemble::launch(&victim).await;
                }
                Part::RabbitNodeOfTheQueueLeader => {
                    let victim = rabbits::leader(&vhost, WRITE_Q).await;
                    rabbits::kill(victim).await;
                    load.more(30).await;
                    rabbits::launch(victim).await;
                }
                Part::Master | Part::Slave => {
                    let state = if matches!(part, Part::Master) {
                        "leading"
                    } else {
                        "serving"
                    };
                    let pid = worker_in(&view, state).expect("such a worker");
                    suite::signal(pid, libc::SIGKILL);
                    let leader = orchs[l].as_ref().expect("it leads");
                    eventually("the worker replaced", DEADLINE, || async {
                        let v = cluster_view(leader).await.unwrap_or_default();
                        let (e, m, pids) = workers_of(&v);
                        let elected = !matches!(part, Part::Master) || (e > epoch && m != master);
                        elected && !pids.contains(&pid) && leads_a_settled_cluster(leader, 3).await
                    })
                    .await;
                }
            }
            load.more(30).await;
            wait_settled(&orchs, 3).await;
            let back = t.elapsed();
            let slowest = load.take_slowest();
            eprintln!(
                "round {round}: {part:?}: settled again after {back:?}; \
                 the longest request took {slowest} ms"
            );
            pauses.push((part, slowest));
        }
    }
    let (acked, failed) = load.stop().await;
    eprintln!("longest requests per kill: {pauses:?}");
    nothing_failed_or_lost(&c, orchs, front, &acked, failed).await;
    let left = suite::running_containers_of(&docker, cluster).await;
    assert!(left.is_empty(), "containers left running: {left:?}");
}
