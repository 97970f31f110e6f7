//! Workers as Docker containers (through bollard) on a real RabbitMQ and
//! ZooKeeper: the cluster up in containers and down with none left, a
//! container killed under the runtime's feet (`docker kill`) and through
//! the crash APIs, the Scaler starting and stopping containers, and an
//! orchestrator started again adopting the containers it finds. The image
//! is built `FROM scratch` from this build's own static `dbaas`.

mod suite;

use std::time::Duration;

use bollard::query_parameters::KillContainerOptionsBuilder;
use dbaas::actors::messages::Shutdown;
use dbaas::actors::watcher::{CrashMaster, CrashSlave, GetCluster, Resign, SetHungAfter};
use dbaas::model::{Consistency, ReadResult};
use dbaas::runtime::DockerRuntime;
use dbaas::system::Cluster;
use suite::{
    containers_of, count_users, docker_cluster, docker_cluster_at, docker_image, eventually,
    running, stores, user, Load,
};

const DEADLINE: Duration = Duration::from_secs(60);

/// `docker kill` of worker `id`'s container, behind the runtime's back.
async fn docker_kill(docker: &bollard::Docker, cluster: u64, id: u64) {
    let name = DockerRuntime::container_name(cluster, id);
    let kill = KillContainerOptionsBuilder::default()
        .signal("SIGKILL")
        .build();
    docker.kill_container(&name, Some(kill)).await.unwrap();
}

/// Waits for a new master (another pid, a later epoch) and `n` workers
/// again, every one serving or leading.
async fn failed_over(c: &Cluster, old: u64, epoch: u64, n: usize) {
    eventually(
        "a new master and a full set of workers",
        DEADLINE,
        || async {
            let v = c.watcher.send(GetCluster).await.unwrap();
            v.master.is_some_and(|m| m != old)
                && v.epoch > epoch
                && v.workers.len() == n
                && c.runtime.list().len() == n
                && v.workers
                    .iter()
                    .all(|w| w.state == "serving" || w.state == "leading")
        },
    )
    .await;
}

/// Every acknowledged write there once, on every worker alike; then the
/// cluster stops and leaves no container behind.
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
    c.stop().await;
    let all = stores(dir.path(), &ids);
    assert!(all.iter().all(|s| *s == all[0]), "workers differ: {all:?}");
    eventually("no container left", DEADLINE, || async {
        containers_of(docker, c.cluster).await.is_empty()
    })
    .await;
}

#[actix::test]
async fn containers_killed_in_every_way_are_replaced_and_lose_no_write() {
    let dir = tempfile::tempdir().unwrap();
    let Some((c, _, _)) = docker_cluster(dir.path(), 2).await else {
        return;
    };
    let (docker, _) = docker_image().await.unwrap();
    // A worker's pid is its container's, and every container is labelled.
    let names = containers_of(&docker, c.cluster).await;
    assert_eq!(names.len(), 3, "{names:?}");
    let load = Load::start(&c, 4);
    load.more(30).await;

    // `docker kill` of the master's container, behind the runtime's back:
    // the engine reports the death, the watcher elects at once.
    let view = c.watcher.send(GetCluster).await.unwrap();
    let (old, epoch) = (view.master.unwrap(), view.epoch);
    let id = c.runtime.list().iter().find(|w| w.pid == old).unwrap().id;
    docker_kill(&docker, c.cluster, id).await;
    failed_over(&c, old, epoch, 3).await;
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

    // The crash APIs: the highest-pid slave, then the master.
    let view = c.watcher.send(GetCluster).await.unwrap();
    let master = view.master.unwrap();
    let highest = c
        .runtime
        .list()
        .iter()
        .map(|w| w.pid)
        .filter(|&p| p != master)
        .max()
        .unwrap();
    assert_eq!(c.watcher.send(CrashSlave).await.unwrap().unwrap(), highest);
    eventually("a replacement for the crashed slave", DEADLINE, || async {
        let v = c.watcher.send(GetCluster).await.unwrap();
        v.workers.len() == 3 && !v.workers.iter().any(|w| w.pid == highest)
    })
    .await;
    let epoch = c.epoch().await;
    assert_eq!(c.watcher.send(CrashMaster).await.unwrap().unwrap(), master);
    failed_over(&c, master, epoch, 3).await;
    load.more(30).await;
    let acked = load.stop().await;
    check_and_stop(c, &dir, acked, &docker).await;
}

#[actix::test]
async fn an_orchestrator_started_again_adopts_the_running_containers() {
    let dir = tempfile::tempdir().unwrap();
    let Some((c, url, zk)) = docker_cluster(dir.path(), 2).await else {
        return;
    };
    let (docker, image) = docker_image().await.unwrap();
    for i in 0..20 {
        c.orchestrator.write(user(&format!("a{i}"))).await.unwrap();
    }
    let before = c.watcher.send(GetCluster).await.unwrap();
    let mut pids: Vec<u64> = c.runtime.list().iter().map(|w| w.pid).collect();
    pids.sort_unstable();
    // The orchestrator goes (its watcher, its coordinator session and
    // its actors), the containers stay.
    c.watcher.send(Resign).await.unwrap();
    c.orchestrator.addr().do_send(Shutdown);
    drop(c);
    let c = docker_cluster_at(dir.path(), 2, docker.clone(), &image, &url, &zk).await;
    let mut again: Vec<u64> = c.runtime.list().iter().map(|w| w.pid).collect();
    again.sort_unstable();
    assert_eq!(again, pids, "the same containers, none started");
    let after = c.watcher.send(GetCluster).await.unwrap();
    assert_eq!((after.master, after.epoch), (before.master, before.epoch));
    assert!(
        !after.events.iter().any(|e| e.kind == "election"),
        "{:?}",
        after.events
    );
    assert_eq!(containers_of(&docker, c.cluster).await.len(), 3);
    c.orchestrator.write(user("after")).await.unwrap();
    check_and_stop(c, &dir, 21, &docker).await;
}

#[actix::test]
async fn the_scaler_starts_and_stops_worker_containers_with_the_reads() {
    let dir = tempfile::tempdir().unwrap();
    let Some((c, _, _)) = docker_cluster(dir.path(), 1).await else {
        return;
    };
    let (docker, _) = docker_image().await.unwrap();
    let cluster = c.cluster;
    suite::scaler::scales_every_window(c).await;
    eventually("no container left", DEADLINE, || async {
        containers_of(&docker, cluster).await.is_empty()
    })
    .await;
}

#[actix::test]
async fn a_master_elected_during_a_scale_down_of_containers_is_not_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let Some((c, _, _)) = docker_cluster(dir.path(), 3).await else {
        return;
    };
    let (docker, _) = docker_image().await.unwrap();
    let cluster = c.cluster;
    suite::scaler::scale_down_racing_a_failover(c).await;
    assert_eq!(containers_of(&docker, cluster).await, Vec::<String>::new());
}

#[actix::test]
async fn a_stop_right_after_a_crash_leaves_no_container() {
    let dir = tempfile::tempdir().unwrap();
    let Some((c, _, _)) = docker_cluster(dir.path(), 2).await else {
        return;
    };
    let (docker, _) = docker_image().await.unwrap();
    let cluster = c.cluster;
    suite::scaler::stop_right_after_a_crash(c).await;
    assert_eq!(containers_of(&docker, cluster).await, Vec::<String>::new());
}

/// The orchestrator goes, the master's container is killed while none
/// runs, an orchestrator starts again: it adopts the others and starts
/// the killed worker again over its store; the old master's session
/// expiring later starts no extra worker.
#[actix::test]
async fn an_orchestrator_started_again_after_a_kill_meanwhile_starts_no_extra_worker() {
    let dir = tempfile::tempdir().unwrap();
    let Some((c, url, zk)) = docker_cluster(dir.path(), 2).await else {
        return;
    };
    let (docker, image) = docker_image().await.unwrap();
    for i in 0..20 {
        c.orchestrator.write(user(&format!("a{i}"))).await.unwrap();
    }
    let v = c.watcher.send(GetCluster).await.unwrap();
    let m = v.master.unwrap();
    let victim = *c.runtime.list().iter().find(|w| w.pid == m).unwrap();
    let cluster = c.cluster;
    c.watcher.send(Resign).await.unwrap();
    c.orchestrator.addr().do_send(Shutdown);
    drop(c);
    docker_kill(&docker, cluster, victim.id).await;
    let c = docker_cluster_at(dir.path(), 2, docker.clone(), &image, &url, &zk).await;
    // The killed master's node goes once its session expires: a death,
    // an election, but no replacement (its worker runs again already).
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
    c.orchestrator.write(user("after")).await.unwrap();
    check_and_stop(c, &dir, 21, &docker).await;
}

/// `docker pause` of the master under writes, for good: another master is
/// elected at its session's expiry; taken for hung, the paused container
/// is thawed, killed and started again over its store; nothing is lost.
#[actix::test]
async fn a_paused_master_container_is_replaced_and_started_again() {
    let dir = tempfile::tempdir().unwrap();
    let Some((c, _, _)) = docker_cluster(dir.path(), 2).await else {
        return;
    };
    let (docker, _) = docker_image().await.unwrap();
    c.watcher
        .send(SetHungAfter(Duration::from_secs(1)))
        .await
        .unwrap();
    let load = Load::start(&c, 4);
    load.more(30).await;
    let view = c.watcher.send(GetCluster).await.unwrap();
    let (old, epoch) = (view.master.unwrap(), view.epoch);
    let id = c.runtime.list().iter().find(|w| w.pid == old).unwrap().id;
    let name = DockerRuntime::container_name(c.cluster, id);
    docker.pause_container(&name).await.unwrap();
    eventually("the paused worker started again", DEADLINE, || async {
        let v = c.watcher.send(GetCluster).await.unwrap();
        v.epoch > epoch
            && c.runtime.list().iter().any(|w| w.id == id && w.pid != old)
            && v.events.iter().any(|e| e.kind == "hung")
            && v.workers.len() == 3
            && c.runtime.list().len() == 3
            && v.workers
                .iter()
                .all(|w| w.state == "serving" || w.state == "leading")
    })
    .await;
    load.more(30).await;
    let acked = load.stop().await;
    check_and_stop(c, &dir, acked, &docker).await;
}

/// Two starts of one worker container at once: the second is refused
/// while the first is under way (it once removed the first's container
/// by its name, to make room for its own), and one container runs.
#[actix::test]
async fn a_worker_container_is_not_started_twice_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let Some((c, _, _)) = docker_cluster(dir.path(), 1).await else {
        return;
    };
    let spec = dbaas::runtime::WorkerSpec {
        id: 50,
        cluster: c.cluster,
    };
    let (one, two) = tokio::join!(c.runtime.start(spec), c.runtime.start(spec));
    assert!(one.is_ok() != two.is_ok(), "{one:?} {two:?}");
    let refused = one.err().or(two.err()).unwrap().to_string();
    assert!(refused.contains("runs already"), "{refused}");
    assert_eq!(c.runtime.list().len(), 3);
    c.runtime.retire(50).await.unwrap();
    c.stop().await;
}
