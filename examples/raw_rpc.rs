//! The raw request/reply limit of a RabbitMQ between two processes, with
//! lapin as the project uses it: what `db/read` over RabbitMQ is held
//! against in `scripts/bench-compare`.
//!
//! ```sh
//! cargo run --release --example raw_rpc -- server amqp://guest:guest@127.0.0.1:5672/%2f rpc-q
//! cargo run --release --example raw_rpc -- client amqp://guest:guest@127.0.0.1:5672/%2f rpc-q 64 10 1
//! ```
//!
//! The server consumes the request queue (which it declares, transient and
//! removed with its consumer) with a prefetch of 256, publishes each body
//! back to the message's `reply_to` with its correlation id (a batch's
//! replies all at once), and acknowledges what it took in batches (one
//! `multiple` ack per batch). It
//! prints `ready` once it consumes and stops on SIGTERM or Ctrl-C.
//!
//! The client opens one connection, publishes transient requests carrying
//! a correlation id and `reply_to` (a queue of its own, consumed without
//! acks), and runs `concurrency` loops that each send a request and wait
//! for its reply. After `warmup` seconds it measures for `duration` seconds
//! and prints one JSON line: requests, errors, req/s and latency
//! percentiles in ms. No publisher confirms on either side: this is the
//! cheapest request/reply lapin and the broker allow, a ceiling rather than
//! what a durable service can do.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use tokio::sync::oneshot;

const SERVER_PREFETCH: u16 = 256;
const BATCH: usize = 256;
const BODY_BYTES: usize = 60;
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

type Fallible<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn usage() -> ! {
    eprintln!(
        "usage: raw_rpc server AMQP_URL QUEUE\n       \
         raw_rpc client AMQP_URL QUEUE CONCURRENCY DURATION_SECS WARMUP_SECS"
    );
    std::process::exit(2)
}

fn number<T: std::str::FromStr>(arg: Option<&String>, what: &str) -> T {
    match arg.map(|a| a.parse::<T>()) {
        Some(Ok(v)) => v,
        _ => {
            eprintln!("raw_rpc: {what} must be a number");
            usage()
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(mode), Some(url), Some(queue)) = (args.first(), args.get(1), args.get(2)) else {
        usage()
    };
    let result = match mode.as_str() {
        "server" => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(Into::into)
            .and_then(|rt| rt.block_on(server(url, queue))),
        "client" => {
            let concurrency: usize = number(args.get(3), "CONCURRENCY");
            let duration: f64 = number(args.get(4), "DURATION_SECS");
            let warmup: f64 = number(args.get(5), "WARMUP_SECS");
            if concurrency == 0
                || !(duration > 0.0 && duration < 1e6)
                || !(0.0..1e6).contains(&warmup)
            {
                eprintln!("raw_rpc: CONCURRENCY must be positive and the durations sensible");
                usage()
            }
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .map_err(Into::into)
                .and_then(|rt| {
                    rt.block_on(client(
                        url,
                        queue,
                        concurrency,
                        Duration::from_secs_f64(duration),
                        Duration::from_secs_f64(warmup),
                    ))
                })
        }
        _ => usage(),
    };
    if let Err(e) = result {
        eprintln!("raw_rpc {mode}: {e}");
        std::process::exit(1);
    }
}

async fn server(url: &str, queue: &str) -> Fallible<()> {
    let props = ConnectionProperties::default().with_connection_name("raw-rpc-server".into());
    let conn = Connection::connect(url, props).await?;
    let ch = conn.create_channel().await?;
    let opts = QueueDeclareOptions {
        auto_delete: true,
        ..QueueDeclareOptions::default()
    };
    ch.queue_declare(queue.into(), opts, FieldTable::default())
        .await?;
    ch.basic_qos(SERVER_PREFETCH, BasicQosOptions::default())
        .await?;
    let consumer = ch
        .basic_consume(
            queue.into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let out = conn.create_channel().await?;
    println!("ready");
    let serve = async {
        let mut batches = consumer.ready_chunks(BATCH);
        while let Some(batch) = batches.next().await {
            let batch = batch.into_iter().collect::<Result<Vec<_>, _>>()?;
            // Every reply of the batch at once: a publish resolves only
            // once lapin's I/O loop took it, so one at a time would wait
            // for that loop on every message.
            let replies = batch.iter().filter_map(|d| {
                let to = d.properties.reply_to().clone()?;
                let mut props = BasicProperties::default().with_delivery_mode(1);
                if let Some(id) = d.properties.correlation_id().clone() {
                    props = props.with_correlation_id(id);
                }
                Some(out.basic_publish(
                    "".into(),
                    to,
                    BasicPublishOptions::default(),
                    &d.data,
                    props,
                ))
            });
            for published in futures::future::join_all(replies).await {
                published?;
            }
            if let Some(d) = batch.last() {
                d.acker.ack(BasicAckOptions { multiple: true }).await?;
            }
        }
        Fallible::Ok(())
    };
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = serve => r?,
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    conn.close(200, "done".into()).await?;
    Ok(())
}

type Waiting = Arc<Mutex<HashMap<u64, oneshot::Sender<Vec<u8>>>>>;

async fn client(
    url: &str,
    queue: &str,
    concurrency: usize,
    duration: Duration,
    warmup: Duration,
) -> Fallible<()> {
    let props = ConnectionProperties::default().with_connection_name("raw-rpc-client".into());
    let conn = Connection::connect(url, props).await?;
    let ch = conn.create_channel().await?;
    let opts = QueueDeclareOptions {
        exclusive: true,
        auto_delete: true,
        ..QueueDeclareOptions::default()
    };
    let reply_q = ch
        .queue_declare("".into(), opts, FieldTable::default())
        .await?
        .name()
        .clone();
    let consumer = ch
        .basic_consume(
            reply_q.clone(),
            "".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    let waiting: Waiting = Arc::default();
    let dispatcher = {
        let waiting = waiting.clone();
        tokio::spawn(async move {
            let mut consumer = consumer;
            while let Some(Ok(d)) = consumer.next().await {
                let id = d
                    .properties
                    .correlation_id()
                    .as_ref()
                    .and_then(|c| c.as_str().parse::<u64>().ok());
                let tx = id.and_then(|id| waiting.lock().unwrap().remove(&id));
                if let Some(tx) = tx {
                    let _ = tx.send(d.data);
                }
            }
            waiting.lock().unwrap().clear();
        })
    };

    let publish = Arc::new(conn.create_channel().await?);
    let next_id = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let measure_from = start + warmup;
    let measure_to = measure_from + duration;
    let mut tasks = Vec::with_capacity(concurrency);
    for task in 0..concurrency {
        let (publish, waiting, next_id, errors, stop) = (
            publish.clone(),
            waiting.clone(),
            next_id.clone(),
            errors.clone(),
            stop.clone(),
        );
        let (queue, reply_q) = (queue.to_owned(), reply_q.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies_us: Vec<u32> = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let id = next_id.fetch_add(1, Ordering::Relaxed);
                let mut body = format!("rpc t{task} n{id} ").into_bytes();
                body.resize(BODY_BYTES.max(body.len()), b'.');
                let (tx, rx) = oneshot::channel();
                waiting.lock().unwrap().insert(id, tx);
                let props = BasicProperties::default()
                    .with_delivery_mode(1)
                    .with_correlation_id(id.to_string().into())
                    .with_reply_to(reply_q.clone());
                let sent = Instant::now();
                let published = publish
                    .basic_publish(
                        "".into(),
                        queue.as_str().into(),
                        BasicPublishOptions::default(),
                        &body,
                        props,
                    )
                    .await;
                let ok = match published {
                    Ok(_) => matches!(
                        tokio::time::timeout(REPLY_TIMEOUT, rx).await,
                        Ok(Ok(reply)) if reply == body
                    ),
                    Err(_) => false,
                };
                let done = Instant::now();
                if sent >= measure_from && done <= measure_to {
                    if ok {
                        latencies_us.push((done - sent).as_micros().min(u32::MAX as u128) as u32);
                    } else {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
                if !ok {
                    waiting.lock().unwrap().remove(&id);
                }
            }
            latencies_us
        }));
    }
    tokio::time::sleep_until((measure_to).into()).await;
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await?);
    }
    dispatcher.abort();
    conn.close(200, "done".into()).await?;

    latencies.sort_unstable();
    let pct = |p: f64| -> f64 {
        if latencies.is_empty() {
            return 0.0;
        }
        let i = ((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1;
        latencies[i] as f64 / 1000.0
    };
    let requests = latencies.len();
    println!(
        "{{\"workload\":\"raw-rpc\",\"concurrency\":{concurrency},\"requests\":{requests},\
         \"errors\":{},\"throughput_rps\":{:.1},\"latency_ms\":{{\"p50\":{:.3},\"p90\":{:.3},\
         \"p99\":{:.3},\"max\":{:.3}}}}}",
        errors.load(Ordering::Relaxed),
        requests as f64 / duration.as_secs_f64(),
        pct(0.50),
        pct(0.90),
        pct(0.99),
        pct(1.0),
    );
    Ok(())
}
