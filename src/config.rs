//! Configuration in layers: defaults, then a TOML file (`--config`), then
//! `DBAAS_*` environment variables, then flags. See `dbaas.example.toml`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::broker::amqp::{AmqpTarget, QueueType};
use crate::core::scaler::{Limit, ScalePolicy};
use crate::error::{Error, Result};
use crate::http::common::DEFAULT_BODY_LIMIT;

mod scale;
pub use scale::{ScaleArgs, ScaleFile};

/// Flags (and their environment variables) of `dbaas up`.
#[derive(clap::Args, Debug, Default, Clone)]
pub struct UpArgs {
    /// A TOML file with any of the settings below.
    #[arg(long, env = "DBAAS_CONFIG")]
    pub config: Option<PathBuf>,
    /// Where the gateway (the system's front door) listens.
    #[arg(long, env = "DBAAS_GATEWAY_ADDR")]
    pub gateway_addr: Option<SocketAddr>,
    /// Where the users service listens.
    #[arg(long, env = "DBAAS_USERS_ADDR")]
    pub users_addr: Option<SocketAddr>,
    /// Where the rides service listens.
    #[arg(long, env = "DBAAS_RIDES_ADDR")]
    pub rides_addr: Option<SocketAddr>,
    /// Where the orchestrator's DB API listens.
    #[arg(long, env = "DBAAS_ORCHESTRATOR_ADDR")]
    pub orchestrator_addr: Option<SocketAddr>,
    /// Where the workers keep their databases.
    #[arg(long, env = "DBAAS_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// How many slave workers to run.
    #[arg(long, env = "DBAAS_SLAVES")]
    pub slaves: Option<usize>,
    /// The largest request body accepted, in bytes.
    #[arg(long, env = "DBAAS_BODY_LIMIT")]
    pub body_limit: Option<usize>,
    /// Run over this RabbitMQ (`amqp://...`), with the workers as child
    /// processes, instead of the in-process broker. Several nodes of one
    /// cluster: `URL,URL,...` (a client moves to the next when it loses
    /// its node).
    #[arg(long, env = "DBAAS_AMQP_URL")]
    pub amqp: Option<String>,
    /// The type of the durable queues: `classic` (the default with one
    /// `--amqp` URL) or `quorum` (replicated over the cluster's nodes; the
    /// default with several).
    #[arg(long, env = "DBAAS_QUEUE_TYPE")]
    pub queue_type: Option<QueueType>,
    /// Most messages a slave's sync queue keeps while the slave is away
    /// (the oldest go first; the slave then catches up by snapshot).
    #[arg(long, env = "DBAAS_SYNC_QUEUE_CAP")]
    pub sync_queue_cap: Option<u32>,
    /// ZooKeeper (`host:port[,host:port...]`) to coordinate worker
    /// processes with; needed with `--amqp`.
    #[arg(long, env = "DBAAS_ZK")]
    pub zk: Option<String>,
    /// The cluster's root path in ZooKeeper (several clusters can share one).
    #[arg(long, env = "DBAAS_ZK_ROOT")]
    pub zk_root: Option<String>,
    /// ZooKeeper session timeout in milliseconds: a worker nobody sees die
    /// (hung, paused, cut off) is replaced about this long after it stopped
    /// answering. Shorter fails over sooner, but a worker stalled that long
    /// (a long GC-like pause, an overloaded machine) is failed over too.
    /// Default 600 with one ZooKeeper server, 1500 with several (room for
    /// the ensemble to elect a new leader without a failover of ours).
    #[arg(long, env = "DBAAS_SESSION_TIMEOUT_MS")]
    pub session_timeout_ms: Option<u64>,
    /// How long a request is retried (no master during a failover, no
    /// worker answering) before it is answered 503, in milliseconds.
    #[arg(long, env = "DBAAS_REQUEST_DEADLINE_MS")]
    pub request_deadline_ms: Option<u64>,
    /// How long a worker whose session ended while its process runs on
    /// (paused, hung, cut off) may take to come back before it is killed
    /// and started again over its own store, in milliseconds.
    #[arg(long, env = "DBAAS_HUNG_AFTER_MS")]
    pub hung_after_ms: Option<u64>,
    /// What runs the workers over RabbitMQ: `process` (child processes,
    /// the default), `docker` (containers through the Docker engine) or
    /// `swarm` (services of the Docker Swarm the engine manages).
    #[arg(long, env = "DBAAS_RUNTIME")]
    pub runtime: Option<RuntimeKind>,
    /// The worker image with `--runtime docker` or `swarm` (built from
    /// this binary, or by docker/build, when missing or stale).
    #[arg(long, env = "DBAAS_IMAGE")]
    pub image: Option<String>,
    #[command(flatten)]
    pub scale: ScaleArgs,
}

/// What runs the workers when they are not in this process.
#[derive(clap::ValueEnum, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RuntimeKind {
    /// Child processes of the orchestrator.
    #[default]
    Process,
    /// Docker containers.
    Docker,
    /// Docker Swarm services, across the nodes of a swarm.
    Swarm,
}

/// The default worker image.
pub const IMAGE: &str = "dbaas:latest";

/// The same settings, as a file holds them.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    gateway_addr: Option<SocketAddr>,
    users_addr: Option<SocketAddr>,
    rides_addr: Option<SocketAddr>,
    orchestrator_addr: Option<SocketAddr>,
    data_dir: Option<PathBuf>,
    slaves: Option<usize>,
    body_limit: Option<usize>,
    amqp: Option<String>,
    queue_type: Option<QueueType>,
    sync_queue_cap: Option<u32>,
    zk: Option<String>,
    zk_root: Option<String>,
    session_timeout_ms: Option<u64>,
    request_deadline_ms: Option<u64>,
    hung_after_ms: Option<u64>,
    runtime: Option<RuntimeKind>,
    image: Option<String>,
    scale_window: Option<f64>,
    reads_per_slave: Option<u64>,
    min_slaves: Option<usize>,
    max_slaves: Option<Limit>,
    max_step: Option<Limit>,
    no_scaler: Option<bool>,
}

/// The settings of `dbaas up`, resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpConfig {
    pub gateway_addr: SocketAddr,
    pub users_addr: SocketAddr,
    pub rides_addr: SocketAddr,
    pub orchestrator_addr: SocketAddr,
    pub data_dir: PathBuf,
    pub slaves: usize,
    pub body_limit: usize,
    /// The broker's nodes and queue type, as [`AmqpTarget`] writes them
    /// (`URL,...,queue-type=T`): the one string every worker is given.
    pub amqp: Option<String>,
    pub sync_queue_cap: u32,
    pub zk: Option<String>,
    pub zk_root: String,
    pub session_timeout: Duration,
    pub request_deadline: Duration,
    pub hung_after: Duration,
    /// The Scaler's policy (`None`: the number of slaves stays).
    pub scale: Option<ScalePolicy>,
    pub runtime: RuntimeKind,
    pub image: String,
}

/// The default root of a cluster's nodes in ZooKeeper.
pub const ZK_ROOT: &str = "/dbaas/default";
/// The default ZooKeeper session timeout with one ZooKeeper server (see
/// `--session-timeout-ms`).
pub const SESSION_TIMEOUT: Duration = Duration::from_millis(600);
/// The default with an ensemble (several servers). When the ensemble's
/// leader dies, the other servers drop their clients too until a new
/// leader is elected (about half a second here), and a client gives its
/// session up 1.4 timeouts after it last heard from a server: 600 ms cut
/// it too fine (a needless database failover in about one leader's death
/// of twenty, `scripts/bench-zk-ensemble`), and so did a second under load
/// (CI: the new leader came 1.23 s after the old one died, and the
/// master's session was lost); 1.5 s leaves room for that.
pub const ENSEMBLE_SESSION_TIMEOUT: Duration = Duration::from_millis(1500);

/// The default session timeout for ZooKeeper at `hosts`
/// (`host:port[,host:port...]`): [`ENSEMBLE_SESSION_TIMEOUT`] for several
/// servers, else [`SESSION_TIMEOUT`].
pub fn default_session_timeout(hosts: &str) -> Duration {
    let servers = hosts
        .split('/')
        .next()
        .unwrap_or_default()
        .split(',')
        .filter(|h| !h.trim().is_empty())
        .count();
    if servers > 1 {
        ENSEMBLE_SESSION_TIMEOUT
    } else {
        SESSION_TIMEOUT
    }
}

impl UpConfig {
    /// Where worker processes find ZooKeeper, if it is configured.
    pub fn zk_target(&self) -> Option<crate::runtime::CoordTarget> {
        self.zk.as_ref().map(|hosts| crate::runtime::CoordTarget {
            hosts: hosts.clone(),
            root: self.zk_root.clone(),
            session_timeout: self.session_timeout,
        })
    }
}

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("a valid default address")
}

impl UpArgs {
    /// Resolves flags and environment over the file over the defaults.
    pub fn resolve(&self) -> Result<UpConfig> {
        let file = match &self.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let zk = self.zk.clone().or(file.zk);
        let default_session = default_session_timeout(zk.as_deref().unwrap_or_default());
        let cfg = UpConfig {
            gateway_addr: self
                .gateway_addr
                .or(file.gateway_addr)
                .unwrap_or_else(|| addr("127.0.0.1:8080")),
            users_addr: self
                .users_addr
                .or(file.users_addr)
                .unwrap_or_else(|| addr("127.0.0.1:8081")),
            rides_addr: self
                .rides_addr
                .or(file.rides_addr)
                .unwrap_or_else(|| addr("127.0.0.1:8082")),
            orchestrator_addr: self
                .orchestrator_addr
                .or(file.orchestrator_addr)
                .unwrap_or_else(|| addr("127.0.0.1:8090")),
            data_dir: self
                .data_dir
                .clone()
                .or(file.data_dir)
                .unwrap_or_else(|| "data".into()),
            slaves: self.slaves.or(file.slaves).unwrap_or(1),
            body_limit: self
                .body_limit
                .or(file.body_limit)
                .unwrap_or(DEFAULT_BODY_LIMIT),
            amqp: amqp_target(
                self.amqp.clone().or(file.amqp),
                self.queue_type.or(file.queue_type),
            )?,
            sync_queue_cap: self
                .sync_queue_cap
                .or(file.sync_queue_cap)
                .unwrap_or(crate::actors::SYNC_QUEUE_CAP),
            zk,
            zk_root: self
                .zk_root
                .clone()
                .or(file.zk_root)
                .unwrap_or_else(|| ZK_ROOT.to_owned()),
            session_timeout: self
                .session_timeout_ms
                .or(file.session_timeout_ms)
                .map_or(default_session, Duration::from_millis),
            request_deadline: self
                .request_deadline_ms
                .or(file.request_deadline_ms)
                .map_or(crate::actors::REQUEST_DEADLINE, Duration::from_millis),
            hung_after: self
                .hung_after_ms
                .or(file.hung_after_ms)
                .map_or(crate::actors::watcher::HUNG_AFTER, Duration::from_millis),
            runtime: self.runtime.or(file.runtime).unwrap_or_default(),
            image: self
                .image
                .clone()
                .or(file.image)
                .unwrap_or_else(|| IMAGE.to_owned()),
            scale: self.scale.resolve(&ScaleFile {
                scale_window: file.scale_window,
                reads_per_slave: file.reads_per_slave,
                min_slaves: file.min_slaves,
                max_slaves: file.max_slaves,
                max_step: file.max_step,
                no_scaler: file.no_scaler,
            })?,
        };
        if cfg.slaves == 0 {
            return Err(Error::bad("at least one slave is needed to serve reads"));
        }
        if cfg.sync_queue_cap == 0 {
            return Err(Error::bad("a sync queue must hold at least one message"));
        }
        check_root(&cfg.zk_root)?;
        for (kind, name) in [
            (RuntimeKind::Docker, "docker"),
            (RuntimeKind::Swarm, "swarm"),
        ] {
            if cfg.runtime == kind && cfg.amqp.is_none() {
                return Err(Error::bad(format!(
                    "worker containers need RabbitMQ and ZooKeeper: give --amqp and --zk with --runtime {name}"
                )));
            }
        }
        Ok(cfg)
    }
}

/// The broker setting, checked and with its queue type: `--amqp` and
/// `--queue-type` (which needs `--amqp`).
pub fn amqp_target(amqp: Option<String>, queue_type: Option<QueueType>) -> Result<Option<String>> {
    match (amqp, queue_type) {
        (None, None) => Ok(None),
        (None, Some(_)) => Err(Error::bad(
            "--queue-type is a RabbitMQ setting: give --amqp with it",
        )),
        (Some(list), t) => Ok(Some(AmqpTarget::parse(&list, t)?.to_string())),
    }
}

/// A ZooKeeper root: an absolute path of plain names.
pub fn check_root(root: &str) -> Result<()> {
    let parts: Vec<&str> = root.split('/').collect();
    let ok = root.starts_with('/')
        && parts.len() > 1
        && parts[1..].iter().all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        });
    if ok {
        Ok(())
    } else {
        Err(Error::bad(format!(
            "ZooKeeper root {root:?}: an absolute path like /dbaas/main"
        )))
    }
}

fn read_file(path: &Path) -> Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::bad(format!("cannot read {}: {e}", path.display())))?;
    toml::from_str(&text).map_err(|e| Error::bad(format!("{}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_over_file_over_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "slaves = 3\ndata_dir = \"/from/file\"\n").unwrap();
        let args = UpArgs {
            config: Some(path),
            data_dir: Some("/from/flag".into()),
            ..UpArgs::default()
        };
        let cfg = args.resolve().unwrap();
        assert_eq!(cfg.slaves, 3);
        assert_eq!(cfg.data_dir, PathBuf::from("/from/flag"));
        assert_eq!(cfg.gateway_addr, addr("127.0.0.1:8080"));
    }

    #[test]
    fn an_ensemble_gets_sessions_long_enough_to_elect_its_leader() {
        let resolve = |zk: Option<&str>, ms: Option<u64>| {
            UpArgs {
                zk: zk.map(str::to_owned),
                session_timeout_ms: ms,
                ..UpArgs::default()
            }
            .resolve()
            .unwrap()
            .session_timeout
        };
        assert_eq!(resolve(None, None), SESSION_TIMEOUT);
        assert_eq!(resolve(Some("127.0.0.1:2181"), None), SESSION_TIMEOUT);
        assert_eq!(resolve(Some("a:1/chroot,x"), None), SESSION_TIMEOUT);
        let ensemble = Some("127.0.0.1:2281,127.0.0.1:2282,127.0.0.1:2283");
        assert_eq!(resolve(ensemble, None), ENSEMBLE_SESSION_TIMEOUT);
        assert_eq!(resolve(ensemble, Some(700)), Duration::from_millis(700));
        assert_eq!(
            resolve(Some("a:1,b:2/root"), None),
            ENSEMBLE_SESSION_TIMEOUT
        );
    }

    #[test]
    fn example_config_parses() {
        let text = include_str!("../dbaas.example.toml");
        toml::from_str::<FileConfig>(text).unwrap();
    }

    #[test]
    fn the_scaler_is_configured_in_layers_and_bad_policies_are_refused() {
        let cfg = UpArgs::default().resolve().unwrap();
        assert_eq!(cfg.scale, Some(ScalePolicy::default()));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        let text =
            "scale_window = 10\nreads_per_slave = 5\nmax_slaves = \"unbounded\"\nmax_step = 2\n";
        std::fs::write(&path, text).unwrap();
        let mut args = UpArgs {
            config: Some(path.clone()),
            ..UpArgs::default()
        };
        args.scale.reads_per_slave = Some(7);
        let p = args.resolve().unwrap().scale.unwrap();
        assert_eq!((p.window, p.reads_per_slave), (Duration::from_secs(10), 7));
        assert_eq!((p.max_slaves, p.max_step), (None, Some(2)));
        args.scale.no_scaler = true;
        assert_eq!(args.resolve().unwrap().scale, None);
        for bad in [
            "max_step = 0\n",
            "max_slaves = -3\n",
            "max_slaves = \"lots\"\n",
        ] {
            std::fs::write(&path, bad).unwrap();
            let args = UpArgs {
                config: Some(path.clone()),
                ..UpArgs::default()
            };
            assert!(args.resolve().is_err(), "{bad}");
        }
    }

    #[test]
    fn the_broker_list_and_queue_type_are_checked_and_travel_together() {
        let resolve = |amqp: Option<&str>, t: Option<QueueType>| {
            UpArgs {
                amqp: amqp.map(str::to_owned),
                queue_type: t,
                ..UpArgs::default()
            }
            .resolve()
            .map(|c| c.amqp)
        };
        let (a, b) = ("amqp://h:5772/%2f", "amqp://h:5773/%2f");
        assert_eq!(resolve(None, None).unwrap(), None);
        assert_eq!(
            resolve(Some(a), None).unwrap().unwrap(),
            format!("{a},queue-type=classic")
        );
        assert_eq!(
            resolve(Some(&format!("{a},{b}")), None).unwrap().unwrap(),
            format!("{a},{b},queue-type=quorum")
        );
        assert_eq!(
            resolve(Some(&format!("{a},{b}")), Some(QueueType::Classic))
                .unwrap()
                .unwrap(),
            format!("{a},{b},queue-type=classic")
        );
        assert!(resolve(None, Some(QueueType::Quorum)).is_err());
        assert!(resolve(Some("h:5672"), None).is_err());
        assert!(resolve(Some(&format!("{a},")), None).is_err());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, format!("amqp = \"{a}\"\nqueue_type = \"quorum\"\n")).unwrap();
        let cfg = UpArgs {
            config: Some(path.clone()),
            ..UpArgs::default()
        }
        .resolve()
        .unwrap();
        assert_eq!(cfg.amqp.unwrap(), format!("{a},queue-type=quorum"));
        std::fs::write(&path, "queue_type = \"fast\"\n").unwrap();
        let bad = UpArgs {
            config: Some(path),
            ..UpArgs::default()
        };
        assert!(bad.resolve().is_err());
    }

    #[test]
    fn container_runtimes_without_rabbitmq_are_refused_by_name() {
        for (kind, name) in [
            (RuntimeKind::Docker, "docker"),
            (RuntimeKind::Swarm, "swarm"),
        ] {
            let args = UpArgs {
                runtime: Some(kind),
                ..UpArgs::default()
            };
            let e = args.resolve().unwrap_err().to_string();
            assert!(e.contains(&format!("--runtime {name}")), "{e}");
        }
        let text = "runtime = \"swarm\"\namqp = \"amqp://h\"\nzk = \"h:2181\"\n";
        assert_eq!(
            toml::from_str::<FileConfig>(text).unwrap().runtime,
            Some(RuntimeKind::Swarm)
        );
    }

    #[test]
    fn unknown_keys_and_zero_slaves_are_refused() {
        assert!(toml::from_str::<FileConfig>("colour = 1").is_err());
        let args = UpArgs {
            slaves: Some(0),
            ..UpArgs::default()
        };
        assert!(args.resolve().is_err());
    }
}
