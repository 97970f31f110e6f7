//! What the RideShare services' side of a read costs per request, timed in
//! a loop on one thread: encoding the `db/read` body, decoding the
//! orchestrator's answer (a ride's row), and a log call the filter leaves
//! out, as every hop through the gateway pays them; and what the
//! orchestrator adds to each request: recording it in the last minute's
//! traffic (one mutex and a histogram add; alone, and with a second
//! thread recording too), and weighing a write for its batch (its encoded
//! size, walked without allocating); and what a slave adds, weighing each
//! read's answer to split a large reply.
//!
//! ```sh
//! cargo run --release --example hop_cost [ITERATIONS]
//! ```
//!
//! Prints nanoseconds per operation for each variant.

use std::hint::black_box;
use std::time::Instant;

use dbaas::model::{ReadOp, ReadReply, ReadResult, Row, Value};

/// `ReadReply` without `#[serde(flatten)]`: what the services' client
/// decodes answers into.
#[derive(serde::Deserialize)]
struct PlainReply {
    seq: u64,
    #[serde(default)]
    rows: Option<Vec<Row>>,
    #[serde(default)]
    count: Option<u64>,
}

fn time<T>(name: &str, n: u32, mut f: impl FnMut() -> T) {
    for _ in 0..n / 10 {
        black_box(f());
    }
    let t = Instant::now();
    for _ in 0..n {
        black_box(f());
    }
    let ns = t.elapsed().as_nanos() as f64 / n as f64;
    println!("{name:<58} {ns:>9.0} ns/op");
}

fn main() {
    let n: u32 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200_000);
    dbaas::init_logs();

    let op = ReadOp::Get {
        table: "rides".into(),
        key: Value::Int(4711),
        columns: None,
    };
    let row: Row = [
        ("ride_id", Value::Int(4711)),
        ("created_by", Value::Text("user-123".into())),
        ("timestamp", Value::Int(1_767_225_600)),
        ("source", Value::Int(12)),
        ("destination", Value::Int(144)),
        (
            "users",
            Value::List(vec![
                Value::Text("user-7".into()),
                Value::Text("user-99".into()),
            ]),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let reply = ReadReply {
        seq: 123_456,
        result: ReadResult::Rows(vec![row]),
    };
    let reply_json = serde_json::to_vec(&reply).expect("a reply encodes");
    println!(
        "request {} bytes, reply {} bytes",
        serde_json::to_vec(&op).unwrap().len(),
        reply_json.len()
    );

    time("encode the db/read body (serde_json::to_vec)", n, || {
        serde_json::to_vec(&op).unwrap()
    });
    time(
        "decode the answer as ReadReply (flattened result)",
        n,
        || serde_json::from_slice::<ReadReply>(&reply_json).unwrap(),
    );
    time("decode the answer as a plain struct", n, || {
        let p: PlainReply = serde_json::from_slice(&reply_json).unwrap();
        (p.seq, p.rows, p.count)
    });
    time("tracing::debug! filtered out at info", n, || {
        tracing::debug!(seq = 1u64, "a read answered");
    });
    time("format! of an upstream URL (the gateway's)", n, || {
        format!("{}{}", "http://127.0.0.1:8082", "/api/v1/rides/4711")
    });

    let traffic = dbaas::actors::traffic::Traffic::default();
    time("traffic: record a request (one thread)", n, || {
        traffic.record(dbaas::actors::traffic::Kind::Read, 850, true)
    });
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let other = {
        let (traffic, stop) = (traffic.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                traffic.record(dbaas::actors::traffic::Kind::Write, 2_000, true);
            }
        })
    };
    time(
        "traffic: record a request (another thread recording)",
        n,
        || traffic.record(dbaas::actors::traffic::Kind::Read, 850, true),
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = other.join();

    let write = dbaas::model::wire::WriteRequest {
        request_id: 7,
        epoch: 3,
        op: dbaas::model::WriteOp::Insert {
            table: "rides".into(),
            row: reply.result.clone().into_rows().remove(0),
        },
        sent_ms: 1_767_225_600_000,
    };
    println!(
        "a ride's write: {} bytes encoded",
        dbaas::model::wire::encoded_len(&write)
    );
    time("weigh a write for its batch (wire::encoded_len)", n, || {
        dbaas::model::wire::encoded_len(&write)
    });
    let answer: (u64, dbaas::error::Result<ReadReply>) = (7, Ok(reply.clone()));
    println!(
        "a ride's read answer: {} bytes encoded",
        dbaas::model::wire::encoded_len(&answer)
    );
    time(
        "weigh a read's answer for its reply (the slave's split)",
        n,
        || dbaas::model::wire::encoded_len(&answer),
    );
}
