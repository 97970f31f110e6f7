//! The echo servers of `amqp-echo`, each as a slave serving reads: a thread,
//! a runtime and a connection of its own, requests taken in batches from
//! the request queue, each body published back to its `reply_to` and
//! confirmed before the request is acknowledged.

use std::sync::Arc;

use futures::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use tokio::sync::oneshot;

use super::{unavailable, EchoConfig, Publisher, REQUEST_BATCH};
use crate::error::{Error, Result};

/// Sends one request's body back where it asked, then settles the request.
async fn echo_one(publisher: &Publisher, d: Delivery) {
    let Some(to) = d.properties.reply_to().clone() else {
        let _ = d.acker.ack(BasicAckOptions::default()).await;
        return;
    };
    let mut props = BasicProperties::default().with_delivery_mode(1);
    if let Some(id) = d.properties.correlation_id().clone() {
        props = props.with_correlation_id(id);
    }
    match publisher.send(to.as_str(), &d.data, props).await {
        Ok(()) => {
            let _ = d.acker.ack(BasicAckOptions::default()).await;
        }
        Err(_) => {
            let opts = BasicNackOptions {
                requeue: true,
                multiple: false,
            };
            let _ = d.acker.nack(opts).await;
        }
    }
}

/// One echo server: its own thread, runtime and connection.
pub(super) struct Server {
    pub(super) stop: Option<oneshot::Sender<()>>,
    pub(super) thread: Option<std::thread::JoinHandle<()>>,
}

pub(super) fn start_server(
    i: usize,
    cfg: &EchoConfig,
    request_q: &str,
) -> Result<(Server, oneshot::Receiver<Result<()>>)> {
    let (ready_tx, ready_rx) = oneshot::channel();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let (url, prefetch, queue) = (cfg.url.clone(), cfg.prefetch, request_q.to_owned());
    let thread = std::thread::Builder::new()
        .name(format!("echo-server-{i}"))
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(unavailable("echo server runtime", e)));
                    return;
                }
            };
            rt.block_on(serve(url, queue, prefetch, ready_tx, stop_rx));
        })
        .map_err(|e| Error::Internal(format!("cannot start an echo server thread: {e}")))?;
    Ok((
        Server {
            stop: Some(stop_tx),
            thread: Some(thread),
        },
        ready_rx,
    ))
}

async fn serve(
    url: String,
    queue: String,
    prefetch: u16,
    ready: oneshot::Sender<Result<()>>,
    stop: oneshot::Receiver<()>,
) {
    let setup = async {
        let props = ConnectionProperties::default()
            .with_connection_name("dbaas-loadgen-echo-server".into());
        let conn = Connection::connect(&url, props).await?;
        let publisher = Arc::new(Publisher::open(&conn).await?);
        let ch = conn.create_channel().await?;
        ch.basic_qos(prefetch.max(1), BasicQosOptions::default())
            .await?;
        let consumer = ch
            .basic_consume(
                queue.as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        lapin::Result::Ok((conn, publisher, consumer))
    };
    let (conn, publisher, consumer) = match setup.await {
        Ok(x) => x,
        Err(e) => {
            let _ = ready.send(Err(unavailable("echo server", e)));
            return;
        }
    };
    let _ = ready.send(Ok(()));
    let run = async {
        let mut batches = consumer.ready_chunks(REQUEST_BATCH);
        while let Some(batch) = batches.next().await {
            let publisher = publisher.clone();
            tokio::spawn(async move {
                let echoes = batch
                    .into_iter()
                    .filter_map(|d| d.ok())
                    .map(|d| echo_one(&publisher, d));
                futures::future::join_all(echoes).await;
            });
        }
    };
    tokio::select! {
        _ = run => {}
        _ = stop => {}
    }
    let _ = conn.close(200, "done".into()).await;
}
