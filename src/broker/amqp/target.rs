//! Where the broker is: one RabbitMQ node or the nodes of a cluster, and
//! the type of the queues declared there.
//!
//! `--amqp` takes `URL[,URL...]`: the AMQP URLs of the nodes of one
//! cluster (or of the one node; a comma in a URL, in a password say, is
//! written `%2C`). A client connects to one of them, and
//! when it loses that node moves on to the next in the list (lapin takes
//! one URL, and its own recovery would only try that one again).
//!
//! The list may also carry the queue type as one more element,
//! `queue-type=classic|quorum`: that is how an orchestrator hands its
//! workers both settings in one argument, whatever starts them
//! ([`AmqpTarget`]'s `Display` always writes it).

use std::fmt;
use std::str::FromStr;

use serde::Deserialize;

use crate::error::{Error, Result};

/// The type of the durable queues the system declares.
#[derive(clap::ValueEnum, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum QueueType {
    /// A queue on one node: the default with one URL. Cheap; gone with
    /// its node (until that node returns).
    Classic,
    /// A replicated queue (Raft) on every node of the cluster: the default
    /// with several URLs. Survives the loss of a minority of the nodes,
    /// for several times the broker's CPU per message.
    Quorum,
}

impl QueueType {
    /// The default for a list of `urls` URLs: quorum for a cluster.
    pub fn default_for(urls: usize) -> Self {
        if urls > 1 {
            QueueType::Quorum
        } else {
            QueueType::Classic
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            QueueType::Classic => "classic",
            QueueType::Quorum => "quorum",
        }
    }
}

impl FromStr for QueueType {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "classic" => Ok(QueueType::Classic),
            "quorum" => Ok(QueueType::Quorum),
            other => Err(Error::bad(format!(
                "queue type {other:?}: classic or quorum"
            ))),
        }
    }
}

impl fmt::Display for QueueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The element of a list that sets the queue type.
const QUEUE_TYPE_KEY: &str = "queue-type=";

/// The nodes of one RabbitMQ (cluster) and the queue type used there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AmqpTarget {
    /// At least one; tried in this order, from the first.
    pub urls: Vec<String>,
    pub queue_type: QueueType,
}

impl AmqpTarget {
    /// `list` (`URL[,URL...]`, perhaps with a `queue-type=` element), with
    /// `queue_type` if given (it must then agree with the list's);
    /// without either, the default for the number of URLs.
    pub fn parse(list: &str, queue_type: Option<QueueType>) -> Result<Self> {
        let mut urls = Vec::new();
        let mut listed = None;
        for element in list.split(',').map(str::trim) {
            if element.is_empty() {
                return Err(Error::bad(format!(
                    "--amqp {:?}: an empty element (URLs are separated by single commas)",
                    redact_list(list)
                )));
            }
            if let Some(t) = element.strip_prefix(QUEUE_TYPE_KEY) {
                let t: QueueType = t.parse()?;
                if listed.is_some_and(|l| l != t) {
                    return Err(Error::bad("--amqp: two different queue types"));
                }
                listed = Some(t);
                continue;
            }
            check_url(element)?;
            urls.push(element.to_owned());
        }
        if urls.is_empty() {
            return Err(Error::bad(
                "--amqp: no URL (amqp://user:pass@host:port/vhost)",
            ));
        }
        let queue_type = match (listed, queue_type) {
            (Some(l), Some(q)) if l != q => {
                return Err(Error::bad(format!(
                    "--queue-type {q} but --amqp says queue-type={l}"
                )))
            }
            (l, q) => q
                .or(l)
                .unwrap_or_else(|| QueueType::default_for(urls.len())),
        };
        Ok(AmqpTarget { urls, queue_type })
    }
}

impl FromStr for AmqpTarget {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        AmqpTarget::parse(s, None)
    }
}

/// The list with its queue type, as [`AmqpTarget::parse`] reads it back.
impl fmt::Display for AmqpTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for url in &self.urls {
            write!(f, "{url},")?;
        }
        write!(f, "{QUEUE_TYPE_KEY}{}", self.queue_type)
    }
}

/// An AMQP URL, as far as can be checked without connecting: its scheme
/// and a host. lapin parses the rest when it connects.
fn check_url(url: &str) -> Result<()> {
    let rest = url
        .strip_prefix("amqp://")
        .or_else(|| url.strip_prefix("amqps://"));
    let host = rest.map(|r| {
        let authority = r.split(['/', '?']).next().unwrap_or_default();
        authority.rsplit('@').next().unwrap_or_default()
    });
    match host {
        Some(h) if !h.is_empty() && !h.contains(char::is_whitespace) => match h.rsplit_once(':') {
            Some((_, port)) if !h.ends_with(']') && port.parse::<u16>().is_err() => Err(
                Error::bad(format!("--amqp: bad port in {:?}", super::redact(url))),
            ),
            _ => Ok(()),
        },
        _ => Err(Error::bad(format!(
            "--amqp: {:?} is not an AMQP URL (amqp://user:pass@host:port/vhost)",
            super::redact(url)
        ))),
    }
}

fn redact_list(list: &str) -> String {
    list.split(',')
        .map(super::redact)
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "amqp://u:p@127.0.0.1:5772/%2f";
    const B: &str = "amqp://u:p@127.0.0.1:5773/%2f";

    #[test]
    fn one_url_is_classic_several_are_quorum() {
        let one = AmqpTarget::parse(A, None).unwrap();
        assert_eq!((one.urls.len(), one.queue_type), (1, QueueType::Classic));
        let two = AmqpTarget::parse(&format!("{A}, {B}"), None).unwrap();
        assert_eq!(two.urls, vec![A, B]);
        assert_eq!(two.queue_type, QueueType::Quorum);
        let classic = AmqpTarget::parse(&format!("{A},{B}"), Some(QueueType::Classic)).unwrap();
        assert_eq!(classic.queue_type, QueueType::Classic);
    }

    #[test]
    fn the_queue_type_travels_with_the_list() {
        for t in [
            AmqpTarget::parse(A, Some(QueueType::Quorum)).unwrap(),
            AmqpTarget::parse(&format!("{A},{B}"), Some(QueueType::Classic)).unwrap(),
            AmqpTarget::parse(&format!("{A},{B}"), None).unwrap(),
        ] {
            assert_eq!(t.to_string().parse::<AmqpTarget>().unwrap(), t);
        }
        let t = AmqpTarget::parse(&format!("{A},queue-type=quorum"), None).unwrap();
        assert_eq!((t.urls.len(), t.queue_type), (1, QueueType::Quorum));
    }

    #[test]
    fn bad_lists_are_refused_with_a_reason() {
        for bad in [
            "",
            ",",
            &format!("{A},"),
            &format!("{A},,{B}"),
            "localhost:5672",
            "http://h:1/",
            "amqp://",
            "amqp://u:p@h:port/v",
            &format!("{A},queue-type=fast"),
            &format!("{A},queue-type=classic,queue-type=quorum"),
            "queue-type=quorum",
        ] {
            let e = AmqpTarget::parse(bad, None).unwrap_err().to_string();
            assert!(!e.contains(":p@"), "a password in {e}");
            assert!(!e.is_empty());
        }
        let clash = AmqpTarget::parse(&format!("{A},queue-type=classic"), Some(QueueType::Quorum));
        assert!(clash.is_err());
        assert!("foo".parse::<QueueType>().is_err());
    }
}
