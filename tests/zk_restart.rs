//! ZooKeeper itself stopped and started again under load, with real worker
//! processes and RabbitMQ: reads go on, writes wait (the master's lease
//! runs out: no two masters) and then go on, nothing acknowledged is lost,
//! and nobody is elected needlessly. A test binary of its own: it stops
//! the ZooKeeper every other test uses.

mod suite;

use suite::{master_id, process_cluster, services_off, Load};

#[actix::test]
async fn zookeeper_restarted_under_load_loses_nothing_and_elects_no_one() {
    let dir = tempfile::tempdir().unwrap();
    let Some((c, _)) = process_cluster(dir.path(), 2).await else {
        return;
    };
    let (master, epoch) = (master_id(&c).await, c.epoch().await);
    let load = Load::start(&c, 4).with_readers(&c, 2);
    load.more(50).await;
    services_off(&["zk-stop"]).await;
    // Reads are served while ZooKeeper is away.
    load.more_reads(50).await;
    services_off(&["zk-start"]).await;
    load.more(100).await;
    let acked = load.stop().await;
    assert_eq!(master_id(&c).await, master, "no needless election");
    assert_eq!(c.epoch().await, epoch);
    suite::nothing_lost_and_alike(c, dir.path(), acked).await;
}
