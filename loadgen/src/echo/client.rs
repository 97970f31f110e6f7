//! The client side of `amqp-echo`, as the orchestrator's side of a read:
//! requests published on confirm-mode channels, replies consumed from one
//! queue in batches, each matched to its caller by correlation id.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use lapin::options::BasicAckOptions;
use lapin::BasicProperties;
use tokio::sync::oneshot;

use super::{Publisher, REPLY_BATCH};
use crate::drive::ErrorLog;
use crate::report::Failure;

pub(super) type Waiting = Arc<Mutex<HashMap<u64, oneshot::Sender<Vec<u8>>>>>;

/// The client side: what the virtual users share.
pub(crate) struct EchoClient {
    pub(super) publisher: Publisher,
    /// Delivery mode of the requests: 1 transient, 2 persistent.
    pub(super) mode: u8,
    pub(super) request_q: String,
    pub(super) reply_q: String,
    pub(super) waiting: Waiting,
    pub(super) next_id: AtomicU64,
    pub(super) timeout: Duration,
    pub(super) bytes: usize,
}

impl EchoClient {
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    fn forget(&self, id: u64) {
        self.waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
    }

    /// One request and its reply. As the orchestrator does, the wait ends
    /// with the reply even if the broker's confirm of the request has not
    /// come yet; a refused publish is an error.
    pub(crate) async fn call(&self, body: &[u8], log: &ErrorLog) -> Result<(), Failure> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let (tx, rx) = oneshot::channel();
        self.waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, tx);
        let props = BasicProperties::default()
            .with_delivery_mode(self.mode)
            .with_correlation_id(id.to_string().into())
            .with_reply_to(self.reply_q.as_str().into());
        let reply = tokio::time::timeout(self.timeout, rx);
        tokio::pin!(reply);
        tokio::select! {
            r = &mut reply => return self.check(id, r, body, log),
            published = self.publisher.send(&self.request_q, body, props) => {
                if let Err(e) = published {
                    self.forget(id);
                    log.note(|| format!("publish: {e}"));
                    return Err(Failure::Transport);
                }
            }
        }
        self.check(id, reply.await, body, log)
    }

    /// Whether the wait for request `id` ended with its own body.
    fn check(
        &self,
        id: u64,
        waited: std::result::Result<
            std::result::Result<Vec<u8>, oneshot::error::RecvError>,
            tokio::time::error::Elapsed,
        >,
        body: &[u8],
        log: &ErrorLog,
    ) -> Result<(), Failure> {
        match waited {
            Ok(Ok(reply)) if reply == body => Ok(()),
            Ok(Ok(reply)) => {
                log.note(|| {
                    format!(
                        "reply {:?} to request {:?}",
                        String::from_utf8_lossy(&reply),
                        String::from_utf8_lossy(body)
                    )
                });
                Err(Failure::Reply)
            }
            Ok(Err(_)) => {
                log.note(|| "the reply consumer ended (connection lost?)".to_owned());
                Err(Failure::Transport)
            }
            Err(_) => {
                self.forget(id);
                log.note(|| format!("no reply within {:?}", self.timeout));
                Err(Failure::Transport)
            }
        }
    }
}

/// Hands each reply to its caller; acknowledges each batch with one
/// `multiple` ack of its last reply, in order, from a task of its own, as the
/// orchestrator does.
pub(super) async fn dispatch(consumer: lapin::Consumer, waiting: Waiting) {
    let (acks, mut to_ack) = tokio::sync::mpsc::unbounded_channel::<lapin::Acker>();
    tokio::spawn(async move {
        while let Some(a) = to_ack.recv().await {
            let _ = a.ack(BasicAckOptions { multiple: true }).await;
        }
    });
    let mut batches = consumer.ready_chunks(REPLY_BATCH);
    while let Some(batch) = batches.next().await {
        let mut last = None;
        let mut ended = false;
        {
            let mut waiting = waiting.lock().unwrap_or_else(|p| p.into_inner());
            for d in batch {
                let Ok(d) = d else {
                    ended = true;
                    break;
                };
                let id = d
                    .properties
                    .correlation_id()
                    .as_ref()
                    .and_then(|c| c.as_str().parse::<u64>().ok());
                if let Some(tx) = id.and_then(|id| waiting.remove(&id)) {
                    let _ = tx.send(d.data);
                }
                last = Some(d.acker);
            }
        }
        if let Some(a) = last {
            let _ = acks.send(a);
        }
        if ended {
            break;
        }
    }
    // Whoever still waits learns at once that no reply will come.
    waiting.lock().unwrap_or_else(|p| p.into_inner()).clear();
}
