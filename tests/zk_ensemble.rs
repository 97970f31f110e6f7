//! ZooKeeper as an ensemble of three servers on this host (`scripts/services
//! ensemble-*`), with real worker processes and RabbitMQ: every client of
//! it (the workers, the election watcher) is given all three servers.
//! Under steady writes and reads, each server in turn is SIGKILLed and
//! started again (so every session's server dies once, and the leader
//! does), then the leader elected last: every write is acknowledged, every
//! read answered, nothing acknowledged is lost, the replicas agree, and
//! no one is elected: the sessions move to a live server and keep their
//! ephemeral nodes. A test binary of its own: it runs the ensemble, on
//! ports of its own, beside the ZooKeeper the other tests use.

mod suite;

use std::path::Path;

use dbaas::runtime::CoordTarget;
use suite::clusters::Ensemble;
use suite::{amqp_url, fresh_vhost, master_id, process_cluster_at, Load};

async fn ensemble_cluster(dir: &Path, hosts: String) -> Option<dbaas::system::Cluster> {
    let (_, url) = fresh_vhost(&amqp_url()?);
    // The default for an ensemble, as `dbaas up --zk a,b,c` takes.
    let session_timeout = dbaas::config::default_session_timeout(&hosts);
    let zk = CoordTarget {
        hosts,
        root: format!("/t{}", fastrand::u64(..)),
        session_timeout,
    };
    Some(process_cluster_at(dir, 2, &url, &zk, None).await)
}

#[actix::test]
async fn the_death_of_a_zookeeper_server_leader_or_follower_costs_nothing() {
    // Skipped (as every service test is) without RabbitMQ.
    if amqp_url().is_none() {
        return;
    }
    let (_ensemble, hosts) = Ensemble::start();
    let dir = tempfile::tempdir().unwrap();
    let Some(c) = ensemble_cluster(dir.path(), hosts).await else {
        return;
    };
    let (master, epoch) = (master_id(&c).await, c.epoch().await);
    let load = Load::start(&c, 4).with_readers(&c, 2);
    load.more(50).await;
    // Every server in turn, so that the server of every session (the
    // master's, each slave's, the watcher's) dies at least once, and so
    // does the leader (it changes only when it dies); then the leader
    // elected last.
    let mut leaders_killed = 0;
    for victim in ["1", "2", "3", "leader"] {
        let leader = Ensemble::leader().await;
        let victim = if victim == "leader" { &leader } else { victim };
        leaders_killed += usize::from(*victim == leader);
        Ensemble::kill(victim).await;
        // Two of three are a quorum: writes and reads go on.
        load.more(50).await;
        load.more_reads(50).await;
        Ensemble::launch(victim).await;
        load.more(50).await;
    }
    assert!(
        leaders_killed >= 2,
        "the leader died {leaders_killed} times"
    );
    let acked = load.stop().await;
    assert_eq!(master_id(&c).await, master, "no needless election");
    assert_eq!(c.epoch().await, epoch);
    suite::nothing_lost_and_alike(c, dir.path(), acked).await;
}
