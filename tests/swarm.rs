//! Workers as Docker Swarm services (through bollard's service API) on a
//! single-node swarm (`scripts/test` makes the engine one), a real
//! RabbitMQ and ZooKeeper: the cluster up as services and down with none
//! left, a task's container killed under the runtime's feet (`docker
//! kill`) or paused while writes are in flight, the Scaler starting and
//! stopping services, and orchestrators that go and come adopting the
//! services they find (in this process, and as SIGKILLed `dbaas
//! orchestrator` processes under RideShare load), a worker killed
//! meanwhile included.
//! The image is the Docker tests' own, built `FROM scratch` from this
//! build's static `dbaas`.

mod suite;

use std::time::Duration;

use bollard::models::TaskSpecRestartPolicyConditionEnum;
use bollard::query_parameters::KillContainerOptionsBuilder;
use dbaas::actors::messages::Shutdown;
use dbaas::actors::watcher::{CrashMaster, GetCluster, Resign, SetHungAfter};
use dbaas::model::{Consistency, ReadResult};
use dbaas::system::Cluster;
use suite::{
    containers_of, count_users, eventually, running, services_of, stores, swarm_cluster,
    swarm_cluster_at, swarm_image, user, worker_container, Load,
};

const DEADLINE: Duration = Duration::from_secs(60);

/// `docker kill` of worker `id`'s task container, behind the runtime's
/// back (and Swarm's: it restarts none).
async fn docker_kill(docker: &bollard::Docker, cluster: u64, id: u64) {
    let container = worker_container(docker, cluster, id).await;
    let kill = KillContainerOptionsBuilder::default()
        .signal("SIGKILL")
        .build();
    docker.kill_container(&container, Some(kill)).await.unwrap();
}

/// Waits for a new master (another pid, a later epoch) and `n` workers
/// again, every one serving or leading, each in a service of its own.
async fn failed_over(c: &Cluster, docker: &bollard::Docker, old: u64, epoch: u64, n: usize) {
    eventually(
        "a new master and a full set of workers",
        DEADLINE,
        || async {
            let v = c.watcher.send(GetCluster).await.unwrap();
            v.master.is_some_and(|m| m != old)
                && v.epoch > epoch
                && v.workers.len() == n
                && c.runtime.list().len() == n
                && services_of(docker, c.cluster).await.len() == n
                && v.workers
                    .iter()
                    .all(|w| w.state == "serving" || w.state == "leading")
        },
    )
    .await;
}

/// Every acknowledged write there once, on every worker alike; then the
/// cluster stops and leaves no service, and no container, behind.
async fn check_and_stop(c: Cluster, dir: &tempfile::TempDir, acked: u64, docker: &bollard::Docker) {
    let count = c
        .orchestrator
        .read(count_users(), Consistency::Strong)
        .await
        .unwrap();
    assert_eq!(count.result, ReadResult::Count(acked));
    let seq = c.orchestrator.stats().await.unwrap().last_acked_seq;
    suite::all_applied(&c, seq, DEADLINE).await;
    let ids = running(&c);
    let cluster = c.cluster;
    c.stop().await;
    let all = stores(dir.path(), &ids);
    assert!(all.iter().all(|s| *s == all[0]), "workers differ: {all:?}");
    assert!(services_of(docker, cluster).await.is_empty());
    eventually("no container left", DEADLINE, || async {
        containers_of(docker, cluster).await.is_empty()
    })
    .await;
}

#[actix::test]
async fn worker_services_killed_by_docker_are_replaced_and_lose_no_write() {
    let dir = tempfile::tempdir().unwrap();
    let Some((c, _, _)) = swarm_cluster(dir.path(), 2).await else {
        return;
    };
    let (docker, _) = swarm_image().await.unwrap();
    // One service per worker, labelled, pinned to a node, never restarted
    // by Swarm; its pid is its label's.
    let services = services_of(&docker, c.cluster).await;
    assert_eq!(services.len(), 3, "{services:?}");
    let mut pids: Vec<u64> = c.runtime.list().iter().map(|w| w.pid).collect();
    pids.sort_unstable();
    let mut labelled: Vec<u64> = services
        .iter()
        .map(|s| {
            let spec = s.spec.clone().unwrap();
            let task = spec.task_template.unwrap();
            assert_eq!(
                task.restart_policy.unwrap().condition,
                Some(TaskSpecRestartPolicyConditionEnum::NONE)
            );
            let pinned = task.placement.unwrap().constraints.unwrap();
            assert!(pinned[0].starts_with("node.id=="), "{pinned:?}");
            spec.labels.unwrap()["dbaas.pid"].parse().unwrap()
        })
        .collect();
    labelled.sort_unstable();
    assert_eq!(labelled, pids);
    let load = Load::start(&c, 4);
    load.more(30).await;

    // `docker kill` of the master's container under writes: the engine
    // reports the death, the watcher elects at once and starts it again.
    let view = c.watcher.send(GetCluster).await.unwrap();
    let (old, epoch) = (view.master.unwrap(), view.epoch);
    let id = c.runtime.list().iter().find(|w| w.pid == old).unwrap().id;
    docker_kill(&docker, c.cluster, id).await;
    failed_over(&c, &docker, old, epoch, 3).await;
    load.more(30).await;

    // `docker kill` of a slave's container: replaced, and it catches up.
    let view = c.watcher.send(GetCluster).await.unwrap();
    let master = view.master.unwrap();
    let slave = c
        .runtime
        .list()
        .into_iter()
        .find(|w| w.pid != master)
        .unwrap();
    docker_kill(&docker, c.cluster, slave.id).await;
    eventually("the slave's replacement", DEADLINE, || async {
        let v = c.watcher.send(GetCluster).await.unwrap();
        v.workers.len() == 3
            && !v.workers.iter().any(|w| w.pid == slave.pid)
            && v.workers
                .iter()
                .all(|w| w.state == "serving" || w.state == "leading")
    })
    .await;
    load.more(30).await;

    // The crash API kills the master through the runtime.
    let epoch = c.epoch().await;
    assert_eq!(c.watcher.send(CrashMaster).await.unwrap().unwrap(), master);
    failed_over(&c, &docker, master, epoch, 3).await;
    load.more(30).await;
    let acked = load.stop().await;
    check_and_stop(c, &dir, acked, &docker).await;
}

/// The orchestrator goes and another starts: it adopts the running
/// services (same pids, no election). That one goes too, and the master's
/// container is killed while no orchestrator runs: the next adopts the
/// others and starts the killed worker again over its store; the old
/// master's session expiring later starts no extra worker.
#[actix::test]
async fn orchestrators_that_come_and_go_adopt_the_worker_services() {
    let dir = tempfile::tempdir().unwrap();
    let Some((c, url, zk)) = swarm_cluster(dir.path(), 2).await else {
        return;
    };
    let (docker, image) = swarm_image().await.unwrap();
    for i in 0..20 {
        c.orchestrator.write(user(&format!("a{i}"))).await.unwrap();
    }
    let before = c.watcher.send(GetCluster).await.unwrap();
    let mut pids: Vec<u64> = c.runtime.list().iter().map(|w| w.pid).collect();
    pids.sort_unstable();
    // The orchestrator goes (its watcher, its coordinator session and its
    // actors), the services stay.
    c.watcher.send(Resign).await.unwrap();
    c.orchestrator.addr().do_send(Shutdown);
    drop(c);
    let c = swarm_cluster_at(dir.path(), 2, docker.clone(), &image, &url, &zk).await;
    let mut again: Vec<u64> = c.runtime.list().iter().map(|w| w.pid).collect();
    again.sort_unstable();
    assert_eq!(again, pids, "the same services, none started");
    let after = c.watcher.send(GetCluster).await.unwrap();
    assert_eq!((after.master, after.epoch), (before.master, before.epoch));
    assert!(
        !after.events.iter().any(|e| e.kind == "election"),
        "{:?}",
        after.events
    );
    assert_eq!(services_of(&docker, c.cluster).await.len(), 3);
    c.orchestrator.write(user("between")).await.unwrap();

    // Gone again; the master's container is killed meanwhile.
    let m = after.master.unwrap();
    let victim = *c.runtime.list().iter().find(|w| w.pid == m).unwrap();
    let cluster = c.cluster;
    c.watcher.send(Resign).await.unwrap();
    c.orchestrator.addr().do_send(Shutdown);
    drop(c);
    docker_kill(&docker, cluster, victim.id).await;
    let c = swarm_cluster_at(dir.path(), 2, docker.clone(), &image, &url, &zk).await;
    eventually("the old master's node to go", DEADLINE, || async {
        let v = c.watcher.send(GetCluster).await.unwrap();
        v.workers.iter().all(|w| w.pid != victim.pid)
            && v.master.is_some_and(|m| m != victim.pid)
            && v.starting == 0
            && v.workers
                .iter()
                .all(|w| w.state == "serving" || w.state == "leading")
    })
    .await;
    let v = c.watcher.send(GetCluster).await.unwrap();
    assert_eq!(
        (v.workers.len(), c.runtime.list().len()),
        (3, 3),
        "{:?}",
        v.events
    );
    assert!(c.runtime.list().iter().any(|w| w.id == victim.id));
    assert_eq!(services_of(&docker, c.cluster).await.len(), 3);
    c.orchestrator.write(user("after")).await.unwrap();
    check_and_stop(c, &dir, 22, &docker).await;
}

/// The Scaler starts worker services as the reads grow and stops them as
/// they fall, no read failing; none is left.
#[actix::test]
async fn the_scaler_starts_and_stops_worker_services_with_the_reads() {
    let dir = tempfile::tempdir().unwrap();
    let Some((c, _, _)) = swarm_cluster(dir.path(), 1).await else {
        return;
    };
    let (docker, _) = swarm_image().await.unwrap();
    let cluster = c.cluster;
    suite::scaler::scales_every_window(c).await;
    assert!(services_of(&docker, cluster).await.is_empty());
    eventually("no container left", DEADLINE, || async {
        containers_of(&docker, cluster).await.is_empty()
    })
    .await;
}

/// `docker pause` of the master's task container under writes, for good:
/// another master is elected at its session's expiry; taken for hung, the
/// paused worker is thawed, killed and started again over its store (a
/// new service, Swarm restarting nothing); nothing is lost.
#[actix::test]
async fn a_paused_master_task_is_replaced_and_started_again() {
    let dir = tempfile::tempdir().unwrap();
    let Some((c, _, _)) = swarm_cluster(dir.path(), 2).await else {
        return;
    };
    let (docker, _) = swarm_image().await.unwrap();
    c.watcher
        .send(SetHungAfter(Duration::from_secs(1)))
        .await
        .unwrap();
    let load = Load::start(&c, 4);
    load.more(30).await;
    let view = c.watcher.send(GetCluster).await.unwrap();
    let (old, epoch) = (view.master.unwrap(), view.epoch);
    let id = c.runtime.list().iter().find(|w| w.pid == old).unwrap().id;
    let container = worker_container(&docker, c.cluster, id).await;
    docker.pause_container(&container).await.unwrap();
    eventually("the paused worker started again", DEADLINE, || async {
        let v = c.watcher.send(GetCluster).await.unwrap();
        v.epoch > epoch
            && c.runtime.list().iter().any(|w| w.id == id && w.pid != old)
            && v.events.iter().any(|e| e.kind == "hung")
            && v.workers.len() == 3
            && c.runtime.list().len() == 3
            && services_of(&docker, c.cluster).await.len() == 3
            && v.workers
                .iter()
                .all(|w| w.state == "serving" || w.state == "leading")
    })
    .await;
    load.more(30).await;
    let acked = load.stop().await;
    check_and_stop(c, &dir, acked, &docker).await;
}

/// Two starts of one worker at once: one starts it, the other is refused
/// (it would remove the first's service of the same name), and one
/// service runs for it.
#[actix::test]
async fn a_worker_is_not_started_twice_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let Some((c, _, _)) = swarm_cluster(dir.path(), 1).await else {
        return;
    };
    let (docker, _) = swarm_image().await.unwrap();
    let spec = dbaas::runtime::WorkerSpec {
        id: 50,
        cluster: c.cluster,
    };
    let (one, two) = tokio::join!(c.runtime.start(spec), c.runtime.start(spec));
    assert!(one.is_ok() != two.is_ok(), "{one:?} {two:?}");
    let refused = one.err().or(two.err()).unwrap().to_string();
    assert!(refused.contains("runs already"), "{refused}");
    assert_eq!(services_of(&docker, c.cluster).await.len(), 3);
    assert_eq!(c.runtime.list().len(), 3);
    c.runtime.retire(50).await.unwrap();
    let cluster = c.cluster;
    c.stop().await;
    assert!(services_of(&docker, cluster).await.is_empty());
}

/// Two `dbaas orchestrator --runtime swarm` processes under RideShare
/// writes and reads through the gateway. The leading one is SIGKILLed:
/// the other takes the lead and the very same services over. Then the
/// master's task container is killed (`docker kill`) under the same load:
/// an election, the worker started again. No request fails, nothing
/// acknowledged is lost, every replica agrees; the last orchestrator's
/// stop leaves no service.
#[actix::test]
async fn the_leaders_sigkill_then_a_masters_container_kill_under_rideshare_load_lose_nothing() {
    use suite::nodes::{
        cluster_view, count_users, http, leader_pid, leads_a_settled_cluster, workers_of,
        Cluster as Nodes, Load as Rides, DEADLINE,
    };
    let Some(c) = Nodes::new() else {
        return;
    };
    let Some((docker, image)) = swarm_image().await else {
        return;
    };
    let swarm = ["--runtime", "swarm", "--image", image.as_str()];
    let a = c.orchestrator_with(&swarm);
    let b = c.orchestrator_with(&swarm);
    let cluster = {
        let v = cluster_view(&a).await.expect("a view");
        u64::from_str_radix(v["cluster"].as_str().expect("an id"), 16).expect("hex")
    };
    let _cleanup = suite::Services(cluster);
    let front = c.front(&[&a, &b]);
    let gateway = &front[2];
    let load = Rides::start(&gateway.url, 4, 2);
    load.more(100).await;
    eventually("the first orchestrator to lead", DEADLINE, || async {
        leader_pid(&b).await == Some(u64::from(a.pid())) && leads_a_settled_cluster(&a, 3).await
    })
    .await;
    let (_, master, pids) = workers_of(&cluster_view(&a).await.expect("a view"));
    assert_eq!(pids.len(), 3);

    drop(a); // SIGKILL: its workers' services stay
    load.more(50).await;
    eventually("the other to lead the same workers", DEADLINE, || async {
        leads_a_settled_cluster(&b, 3).await
            && workers_of(&cluster_view(&b).await.unwrap_or_default()).2 == pids
    })
    .await;
    assert_eq!(services_of(&docker, cluster).await.len(), 3);

    // `docker kill` of the master's task container, under the load.
    let v = cluster_view(&b).await.expect("a view");
    let (epoch, master_now, _) = workers_of(&v);
    assert_eq!(master_now, master, "the master stayed: {v}");
    let id = v["workers"]
        .as_array()
        .expect("workers")
        .iter()
        .find(|w| w["pid"].as_u64() == Some(master))
        .and_then(|w| w["id"].as_u64())
        .expect("the master's id");
    docker_kill(&docker, cluster, id).await;
    eventually("a new master and the worker back", DEADLINE, || async {
        let v = cluster_view(&b).await.unwrap_or_default();
        let (e, m, p) = workers_of(&v);
        e > epoch
            && m != master
            && p.len() == 3
            && !p.contains(&master)
            && leads_a_settled_cluster(&b, 3).await
    })
    .await;
    load.more(100).await;
    let (acked, failed) = load.stop().await;
    assert_eq!(failed, 0, "requests failed; orchestrator log:\n{}", b.log());
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
    let workers: Vec<u64> = cluster_view(&b).await.expect("a view")["workers"]
        .as_array()
        .expect("workers")
        .iter()
        .filter_map(|w| w["id"].as_u64())
        .collect();
    drop(front);
    b.signal(libc::SIGTERM);
    let mut b = b;
    let status = b.child.wait().expect("its exit");
    assert!(status.success(), "{}", b.log());
    assert!(services_of(&docker, cluster).await.is_empty());
    let all = stores(&c.dir.path().join("data"), &workers);
    assert!(all.iter().all(|s| *s == all[0]), "workers differ: {all:?}");
}
