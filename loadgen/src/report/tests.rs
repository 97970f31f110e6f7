//! The report: what many tasks saw, merged into one.

use super::*;

#[test]
fn tasks_merge_into_one_report() {
    let from = Instant::now();
    let mut a = TaskStats::new(2);
    let mut b = TaskStats::new(2);
    for i in 0..100u64 {
        a.record(0, Duration::from_micros(1000 + i), Ok(()));
        b.record(1, Duration::from_micros(3000), Ok(()));
    }
    b.record(1, Duration::from_millis(50), Err(Failure::Status(500)));
    a.record(0, Duration::from_millis(1), Err(Failure::Transport));
    b.record(0, Duration::from_millis(1), Err(Failure::Status(500)));
    a.record_warmup(Err(Failure::Transport));
    a.last_end = Some(from + Duration::from_secs(2));
    b.last_end = Some(from + Duration::from_secs(1));
    let r = Report::build(RunInfo {
        workload: Workload::Rideshare,
        target: "http://x".into(),
        concurrency: 2,
        threads: 1,
        op_names: &["a", "b"],
        measure_from: from,
        seeded: None,
        setup: None,
        tasks: vec![a, b],
        first_errors: vec!["boom".into()],
        cpu: None,
    });
    assert_eq!(r.requests, 203);
    assert_eq!(r.errors, 3);
    assert_eq!(r.duration_s, 2.0);
    assert_eq!(r.throughput_rps, 101.5);
    assert_eq!(r.ops.len(), 2);
    assert_eq!(r.ops[0].requests, 102);
    assert_eq!(r.ops[1].errors, 1);
    assert_eq!(r.errors_by_kind["status 500"], 2);
    assert_eq!(r.errors_by_kind["transport"], 1);
    assert_eq!((r.warmup_requests, r.warmup_errors), (1, 1));
    assert!(
        (r.latency_ms.max - 50.0).abs() < 0.05,
        "{}",
        r.latency_ms.max
    );
    assert!(r.latency_ms.p50 >= 1.0 && r.latency_ms.p50 < 3.01);
    let json: serde_json::Value = serde_json::from_str(&r.json()).unwrap();
    assert_eq!(json["requests"], 203);
    assert_eq!(json["latency_ms"]["max"], r.latency_ms.max);
    assert!(r.text().contains("throughput  101.5 req/s"));
}
