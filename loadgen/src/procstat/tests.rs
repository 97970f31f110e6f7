//! Reading `/proc`: odd thread names, machine time, thread families, and
//! this very process on Linux.

use super::*;

#[test]
fn stat_lines_parse_even_with_odd_names() {
    let line = "1234 (actix-rt|sys (x)) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 9 0 100 1000 50";
    assert_eq!(parse_stat(line), Some(("actix-rt|sys (x)".into(), 300)));
    assert_eq!(parse_stat("garbage"), None);
}

#[test]
fn machine_time_is_busy_time() {
    let stat = "cpu  100 5 30 1000 7 1 2 3 50 0\ncpu0 1 2 3 4\n";
    assert_eq!(machine_busy(stat), Some(141));
    assert_eq!(machine_busy("intr 1 2"), None);
}

#[test]
fn threads_group_by_name_without_number() {
    assert_eq!(family("sled-io-12"), "sled-io-");
    assert_eq!(family("actix-rt|system"), "actix-rt|system");
    assert_eq!(family("2_scheduler"), "scheduler");
    assert_eq!(family("10_dirty_io_sched"), "dirty_io_sched");
    assert_eq!(family("1_"), "1_");
    assert_eq!(family("42"), "");
}

#[test]
fn named_pids_parse() {
    let p: NamedPid = "rabbitmq=123".parse().unwrap();
    assert_eq!((p.name.as_str(), p.pid), ("rabbitmq", 123));
    assert!("rabbitmq".parse::<NamedPid>().is_err());
    assert!("=12".parse::<NamedPid>().is_err());
    assert!("x=y".parse::<NamedPid>().is_err());
}

#[test]
fn own_process_is_readable_on_linux() {
    if cfg!(target_os = "linux") {
        let me = std::process::id();
        let others = [NamedPid {
            name: "me".into(),
            pid: me,
        }];
        let s = Sample::take(Some(me), &others);
        assert!(s.own.is_some());
        let server = s.server.as_ref().unwrap();
        assert!(!server.threads.is_empty());
        let u = usage(&s, &Sample::take(Some(me), &others), &others);
        assert!(u.server_cores.is_some());
        assert_eq!(u.processes.len(), 1);
        assert!(u.processes[0].cores.is_some());
        assert!(u.processes[0].threads.iter().all(|g| g.cores > 0.0));
    }
}
