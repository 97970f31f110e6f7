//! Suites shared by the test files that run them against each broker.
#![allow(dead_code)]

pub mod actors;

use std::sync::Arc;

use dbaas::broker::amqp::AmqpBroker;
use dbaas::broker::Broker;

/// The RabbitMQ the tests use (`scripts/services env`), or None when it is
/// not configured; `DBAAS_REQUIRE_SERVICES=1` (set by `scripts/test`) makes
/// its absence a failure rather than a skip.
pub fn amqp_url() -> Option<String> {
    match std::env::var("DBAAS_TEST_AMQP_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(
                std::env::var("DBAAS_REQUIRE_SERVICES").is_err(),
                "DBAAS_TEST_AMQP_URL is not set but services are required"
            );
            eprintln!("skipped: DBAAS_TEST_AMQP_URL is not set (scripts/test sets it)");
            None
        }
    }
}

/// A virtual host of its own on the test RabbitMQ, so that tests running at
/// once do not share queues; its URL.
pub fn fresh_vhost(base_url: &str) -> String {
    let vhost = format!("t{}", fastrand::u64(..));
    let root = env!("CARGO_MANIFEST_DIR");
    for args in [
        vec!["add_vhost", vhost.as_str()],
        vec!["set_permissions", "-p", vhost.as_str(), "guest", ".*", ".*", ".*"],
    ] {
        let out = std::process::Command::new(format!("{root}/scripts/services"))
            .arg("ctl")
            .args(&args)
            .output()
            .expect("scripts/services runs");
        assert!(out.status.success(), "rabbitmqctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let base = base_url.rsplit_once('/').map_or(base_url, |(b, _)| b);
    format!("{base}/{vhost}")
}

/// A broker on a fresh virtual host of the test RabbitMQ.
pub async fn amqp_broker() -> Option<Arc<dyn Broker>> {
    let url = fresh_vhost(&amqp_url()?);
    Some(Arc::new(AmqpBroker::connect(&url).await.expect("RabbitMQ is reachable")))
}
