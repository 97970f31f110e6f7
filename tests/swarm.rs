//! Workers as Docker Swarm services (through bollard's service API) on a
//! single-node swarm (`scripts/test` makes the engine one), a real
//! RabbitMQ and ZooKeeper: the cluster up as services and down with none
//! left, a task's container killed under the runtime's feet (`docker
//! kill`) while writes are in flight, and orchestrators that go and come
//! adopting the services they find, a worker killed meanwhile included.
//! The image is the Docker tests' own, built `FROM scratch` from this
//! build's static `dbaas`.

mod suite;

use std::time::Duration;

use bollard::models::TaskSpecRestartPolicyConditionEnum;
use bollard::query_parameters::KillContainerOptionsBuilder;
use dbaas::actors::messages::Shutdown;
use dbaas::actors::watcher::{CrashMaster, GetCluster, Resign};
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
