//! `dbaas status`: the cluster view of `GET /api/v1/cluster` as a table in
//! the terminal (`--watch` redraws it every second), or the document
//! itself (`--json`).

use std::fmt::Write as _;
use std::time::Duration;

use serde_json::Value;

use crate::error::{Error, Result};

use super::DEFAULT_ORCHESTRATOR;

#[derive(clap::Args, Debug)]
pub struct StatusArgs {
    /// The orchestrator's base URL.
    #[arg(long, env = "DBAAS_ORCHESTRATOR", default_value = DEFAULT_ORCHESTRATOR)]
    pub orchestrator: String,
    /// Redraw every second until interrupted.
    #[arg(long)]
    pub watch: bool,
    /// Print the cluster document as JSON instead of a table.
    #[arg(long, conflicts_with = "watch")]
    pub json: bool,
}

/// Fetches the cluster document.
pub async fn fetch(http: &reqwest::Client, base: &str) -> Result<Value> {
    let url = format!("{}/api/v1/cluster", base.trim_end_matches('/'));
    let unreachable = |e: reqwest::Error| Error::Unavailable(format!("{url}: {e}"));
    let res = http.get(&url).send().await.map_err(unreachable)?;
    let status = res.status();
    if !status.is_success() {
        let body = res.text().await.unwrap_or_default();
        return Err(Error::Unavailable(format!("{url}: HTTP {status}: {body}")));
    }
    res.json().await.map_err(unreachable)
}

pub async fn run(args: StatusArgs) -> Result<()> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .pool_idle_timeout(crate::model::HTTP_IDLE_TIMEOUT)
        .build()
        .map_err(|e| Error::Unavailable(format!("http client: {e}")))?;
    if args.json {
        let doc = fetch(&http, &args.orchestrator).await?;
        let text = serde_json::to_string_pretty(&doc)
            .map_err(|e| Error::Unavailable(format!("cluster document: {e}")))?;
        println!("{text}");
        return Ok(());
    }
    if !args.watch {
        print!("{}", render(&fetch(&http, &args.orchestrator).await?));
        return Ok(());
    }
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
        let page = match fetch(&http, &args.orchestrator).await {
            Ok(doc) => render(&doc),
            Err(e) => format!("{e}\n"),
        };
        // Home, the page, then clear what an older, longer page left.
        print!("\x1b[H{}\x1b[J", page.replace('\n', "\x1b[K\n"));
    }
}

fn num(v: &Value) -> String {
    match v.as_u64() {
        Some(n) => n.to_string(),
        None => v
            .as_f64()
            .map_or_else(|| "-".to_owned(), |f| format!("{f:.1}")),
    }
}

fn text(v: &Value) -> String {
    v.as_str().map_or_else(|| num(v), str::to_owned)
}

fn ms(v: &Value) -> String {
    v.as_f64()
        .map_or_else(|| "-".to_owned(), |f| format!("{f:.2} ms"))
}

/// Unix milliseconds as UTC hours, minutes and seconds.
fn clock(at: u64) -> String {
    let s = at / 1000 % 86_400;
    format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

/// Lays out rows under a header, each column as wide as its widest cell;
/// the columns in `right` align right.
fn table(header: &[&str], rows: &[Vec<String>], right: &[usize]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            let pad = w.saturating_sub(cell.chars().count());
            if i > 0 {
                out.push_str("  ");
            }
            if right.contains(&i) {
                out.push_str(&" ".repeat(pad));
                out.push_str(cell);
            } else {
                out.push_str(cell);
                out.push_str(&" ".repeat(pad));
            }
        }
        out.trim_end().to_owned() + "\n"
    };
    let mut out = line(header.iter().map(|h| h.to_string()).collect());
    for row in rows {
        out.push_str(&line(row.clone()));
    }
    out
}

/// The cluster document as the terminal shows it.
pub fn render(doc: &Value) -> String {
    let mut out = String::new();
    let master = doc["master"].as_u64();
    let _ = writeln!(
        out,
        "cluster {}  master {}  epoch {}  acked seq {}  workers {}",
        text(&doc["cluster"]),
        master.map_or_else(|| "none".to_owned(), |m| format!("pid {m}")),
        num(&doc["epoch"]),
        num(&doc["orchestrator"]["last_acked_seq"]),
        doc["workers"].as_array().map_or(0, Vec::len),
    );
    if let Some(orchs) = doc["orchestrators"].as_array().filter(|o| !o.is_empty()) {
        let listed: Vec<String> = orchs
            .iter()
            .map(|o| {
                let lead = if o["leading"] == Value::Bool(true) {
                    " (leading)"
                } else {
                    ""
                };
                format!("{} pid {}{lead}", text(&o["addr"]), num(&o["pid"]))
            })
            .collect();
        let _ = writeln!(out, "orchestrators: {}", listed.join(", "));
    }
    let t = &doc["traffic"];
    if t.is_object() {
        let _ = writeln!(
            out,
            "reads {}/s p99 {}  writes {}/s p99 {}  errors {}  in flight {}",
            num(&t["reads"]["rate"]),
            ms(&t["reads"]["p99_ms"]),
            num(&t["writes"]["rate"]),
            ms(&t["writes"]["p99_ms"]),
            t["reads"]["errors"].as_u64().unwrap_or(0)
                + t["writes"]["errors"].as_u64().unwrap_or(0),
            num(&doc["orchestrator"]["in_flight"]),
        );
    }
    if let Some(queues) = doc["queues"].as_object() {
        let shared: Vec<String> = queues
            .iter()
            .filter(|(q, _)| !q.starts_with("sync."))
            .map(|(q, n)| format!("{q} {}", num(n)))
            .collect();
        let _ = writeln!(out, "queues: {}", shared.join("  "));
    }
    let totals = &doc["totals"];
    let _ = writeln!(
        out,
        "since start: {} failovers, {} elections, {} deaths, {} respawns, {} scaling decisions",
        totals["failover"].as_u64().unwrap_or(0),
        totals["election"].as_u64().unwrap_or(0),
        totals["death"].as_u64().unwrap_or(0),
        totals["respawn"].as_u64().unwrap_or(0),
        totals["scale"].as_u64().unwrap_or(0),
    );
    out.push('\n');
    let mut workers: Vec<&Value> = doc["workers"].as_array().into_iter().flatten().collect();
    workers.sort_by_key(|w| (w["pid"].as_u64() != master, w["id"].as_u64()));
    let rows: Vec<Vec<String>> = workers
        .iter()
        .map(|w| {
            let role = if w["pid"].as_u64() == master && master.is_some() {
                "master".to_owned()
            } else {
                text(&w["role"])
            };
            let queue = w["id"]
                .as_u64()
                .map(|id| num(&doc["queues"][format!("sync.{id}")]))
                .unwrap_or_else(|| "-".to_owned());
            vec![
                num(&w["pid"]),
                num(&w["id"]),
                role,
                text(&w["state"]),
                num(&w["applied"]),
                num(&w["lag"]),
                num(&w["reads_served"]),
                queue,
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            "PID", "ID", "ROLE", "STATE", "APPLIED", "LAG", "READS", "SYNC Q",
        ],
        &rows,
        &[4, 5, 6, 7],
    ));
    // The watcher keeps them in the order they happened.
    let events: Vec<(u64, String, String)> = doc["events"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            (
                e["at"].as_u64().unwrap_or(0),
                text(&e["kind"]),
                text(&e["detail"]),
            )
        })
        .collect();
    if !events.is_empty() {
        out.push_str("\nRECENT EVENTS (UTC)\n");
        for (at, kind, detail) in events.iter().rev().take(10) {
            let _ = writeln!(out, "{}  {kind:<9} {detail}", clock(*at));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_worker_master_first_and_the_events_newest_first() {
        let doc = serde_json::json!({
            "cluster": "00000000000000ab", "master": 20, "epoch": 3,
            "workers": [
                {"pid": 21, "id": 2, "role": "slave", "state": "serving", "applied": 9, "lag": 1, "reads_served": 1234},
                {"pid": 20, "id": 1, "role": "master", "state": "leading", "applied": 10, "lag": 0},
                {"pid": 22, "id": 3, "role": "slave", "state": "catching up", "applied": 2, "lag": 8}
            ],
            "starting": 0,
            "events": [
                {"at": 3_600_000, "kind": "death", "detail": "worker pid 19 died"},
                {"at": 3_601_000, "kind": "election", "detail": "pid 20 leads epoch 3"}
            ],
            "totals": {"election": 3, "failover": 2, "death": 1},
            "orchestrator": {"last_acked_seq": 10, "in_flight": 0},
            "orchestrators": [
                {"pid": 7, "addr": "http://127.0.0.1:8090", "leading": true},
                {"pid": 8, "addr": "http://127.0.0.1:8091", "leading": false}
            ],
            "traffic": {"reads": {"rate": 12.5, "errors": 0, "p99_ms": 1.5}, "writes": {"rate": 2.0, "errors": 1, "p99_ms": null}},
            "queues": {"readQ": 0, "writeQ": 0, "responseQ.5f0c2a91d3b7e648": 0, "sync.2": 0, "sync.3": 7}
        });
        let out = render(&doc);
        assert!(
            out.contains(
                "orchestrators: http://127.0.0.1:8090 pid 7 (leading), http://127.0.0.1:8091 pid 8"
            ),
            "{out}"
        );
        assert!(
            out.contains("master pid 20  epoch 3  acked seq 10  workers 3"),
            "{out}"
        );
        assert!(
            out.contains("reads 12.5/s p99 1.50 ms  writes 2.0/s p99 -  errors 1"),
            "{out}"
        );
        assert!(out.contains("2 failovers, 3 elections, 1 deaths"), "{out}");
        let lines: Vec<&str> = out.lines().collect();
        let header = lines.iter().position(|l| l.starts_with("PID")).unwrap();
        assert!(lines[header + 1].starts_with("20") && lines[header + 1].contains("master"));
        assert!(lines[header + 2].contains("1234"));
        assert!(lines[header + 3].contains("catching up") && lines[header + 3].ends_with('7'));
        let election = out.find("election  pid 20").unwrap();
        let death = out.find("death     worker pid 19").unwrap();
        assert!(election < death, "newest first: {out}");
        assert!(out.contains("01:00:01"), "{out}");
    }

    #[test]
    fn a_document_missing_parts_still_renders() {
        for doc in [
            serde_json::json!({}),
            serde_json::json!({"workers": 3}),
            Value::Null,
        ] {
            let out = render(&doc);
            assert!(out.contains("master none"), "{out}");
        }
    }
}
