//! The replicated services of `scripts/services`: a ZooKeeper ensemble of
//! three servers and a RabbitMQ cluster of three nodes on this host, each
//! with kills and starts of one member; and a guard for the worker
//! containers of a cluster (they outlive its orchestrators).

use std::process::Command;

use super::{services, services_off};

/// The ensemble (`scripts/services ensemble-*`), stopped however the test
/// ends. A test binary that uses it runs alone (cargo runs one at a
/// time): it has fixed ports.
pub struct Ensemble;

impl Ensemble {
    /// Starts all three servers afresh; the guard and the connection
    /// string.
    pub fn start() -> (Ensemble, String) {
        services(&["ensemble-start"]);
        (Ensemble, services(&["ensemble-hosts"]))
    }

    /// The number ("1" to "3") of the server leading now.
    pub async fn leader() -> String {
        services_off(&["ensemble-leader"]).await
    }

    /// SIGKILLs server `n`.
    pub async fn kill(n: &str) {
        services_off(&["ensemble-kill", n]).await;
    }

    /// Starts server `n` again and waits for a quorum of all three.
    pub async fn launch(n: &str) {
        services_off(&["ensemble-launch", n]).await;
    }
}

impl Drop for Ensemble {
    fn drop(&mut self) {
        let _ = Command::new(format!("{}/scripts/services", env!("CARGO_MANIFEST_DIR")))
            .arg("ensemble-stop")
            .output();
    }
}

/// The RabbitMQ cluster (`scripts/services rabbit-cluster-*`, started by
/// `scripts/test`, which sets `DBAAS_TEST_AMQP_CLUSTER` to its URLs).
/// What takes a while runs off the test's runtime (see
/// [`super::services_off`]).
pub mod rabbits {
    use super::{services, services_off};

    /// The cluster's URLs (comma separated), or None when it is not
    /// configured (a failure under `DBAAS_REQUIRE_SERVICES=1`).
    pub fn urls() -> Option<String> {
        super::super::service_env("DBAAS_TEST_AMQP_CLUSTER")
    }

    /// `rabbitmqctl` on node `node` (1-3).
    pub fn ctl(node: usize, args: &[&str]) -> String {
        let n = node.to_string();
        services(&[&["rabbit-cluster-ctl", &n], args].concat())
    }

    /// Every node running in the cluster (an earlier test that failed may
    /// have left some down). Launched together: each launch waits until
    /// its node sees all three running, which one node down would stop
    /// if they went one at a time.
    pub async fn all_up() {
        futures::future::join_all((1..=3).map(launch)).await;
    }

    /// SIGKILLs node `node`.
    pub async fn kill(node: usize) {
        services_off(&["rabbit-cluster-kill", &node.to_string()]).await;
    }

    /// Starts node `node` again and waits until it runs in the cluster.
    pub async fn launch(node: usize) {
        services_off(&["rabbit-cluster-launch", &node.to_string()]).await;
    }

    /// The node (1-3) holding the leader of quorum queue `queue`.
    pub async fn leader(vhost: &str, queue: &str) -> usize {
        services_off(&["rabbit-cluster-leader", vhost, queue])
            .await
            .parse()
            .expect("a node number")
    }

    /// The type of each queue of a virtual host, by name.
    pub fn queue_types(vhost: &str) -> std::collections::BTreeMap<String, String> {
        let args = ["list_queues", "-p", vhost, "--no-table-headers", "-q"];
        ctl(1, &[&args[..], &["name", "type"]].concat())
            .lines()
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                Some((f.next()?.to_owned(), f.next()?.to_owned()))
            })
            .collect()
    }

    /// A virtual host of its own on the cluster; its name and the URL list
    /// pointing at it.
    pub fn fresh_vhost(urls: &str) -> (String, String) {
        let vhost = format!("t{}", fastrand::u64(..));
        ctl(1, &["add_vhost", &vhost]);
        ctl(
            1,
            &["set_permissions", "-p", &vhost, "guest", ".*", ".*", ".*"],
        );
        let list = urls
            .split(',')
            .map(|u| format!("{}/{vhost}", u.rsplit_once('/').map_or(u, |(b, _)| b)))
            .collect::<Vec<_>>()
            .join(",");
        (vhost, list)
    }
}

/// Removes the containers of a cluster however the test ends (a failed
/// one leaves them running otherwise: they outlive the orchestrators).
pub struct Containers(pub u64);

impl Drop for Containers {
    fn drop(&mut self) {
        let label = format!("label=dbaas.cluster={:016x}", self.0);
        let Ok(out) = Command::new("docker")
            .args(["ps", "-aq", "--filter", &label])
            .output()
        else {
            return;
        };
        let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        if !ids.is_empty() {
            let _ = Command::new("docker")
                .args(["rm", "-f"])
                .args(&ids)
                .output();
        }
    }
}
